{{/*
Validation of the values. Every check appends one message naming the key and the fix; all of them
are reported together by a single `fail`. values.schema.json checks types and formats first;
these checks cover what a schema cannot express (combinations, modes) and repeat the cron checks,
because a wrong cron dialect silently runs backups at the wrong time.
*/}}

{{/* Kubernetes CronJob schedule: 5 fields (minute hour day-of-month month day-of-week) or a macro. */}}
{{- define "sts-backup.validate.kubeCron" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString | trim }}
{{- if not (regexMatch "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$" $value) }}
{{- printf "%s: %q is not a Kubernetes cron schedule: it needs 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\". The Elasticsearch form with seconds (\"0 0 3 * * ?\") belongs in backup.elasticsearch.scheduled.schedule." $key $value }}
{{- end }}
{{- end }}

{{/* Elasticsearch (Quartz) schedule: 6 or 7 fields starting with seconds, `?` in exactly one of day-of-month / day-of-week. */}}
{{- define "sts-backup.validate.quartzCron" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString | trim }}
{{- $fields := regexSplit " +" $value -1 }}
{{- $ok := regexMatch "^[0-9A-Za-z*/,?#-]+( +[0-9A-Za-z*/,?#-]+){5,6}$" $value }}
{{- if $ok }}
{{- $ok = ne (eq (index $fields 3) "?") (eq (index $fields 5) "?") }}
{{- end }}
{{- if not $ok }}
{{- printf "%s: %q is not an Elasticsearch cron schedule: it needs 6 or 7 fields starting with seconds (second minute hour day-of-month month day-of-week [year]) and \"?\" in exactly one of day-of-month and day-of-week, e.g. \"0 0 3 * * ?\". The Kubernetes 5-field form belongs in backup.stackGraph.scheduled.schedule." $key $value }}
{{- end }}
{{- end }}

{{- define "sts-backup.validateValues" -}}
{{- $messages := list }}
{{- $v := .Values }}
{{- $mode := include "sts-backup.storage.mode" . }}

{{/* Storage modes */}}
{{- if and $v.minio.s3gateway.enabled $v.minio.azuregateway.enabled }}
{{- $messages = append $messages "minio: s3gateway.enabled and azuregateway.enabled are both true; enable at most one gateway (--set minio.azuregateway.enabled=false)." }}
{{- end }}
{{- if and (eq $mode "local") (not $v.minio.persistence.enabled) (not $v.minio.persistence.allowEphemeral) }}
{{- $messages = append $messages "minio.persistence.enabled: local mode (no gateway) without persistence keeps the backups in an emptyDir and LOSES THEM when the pod restarts. Enable persistence (--set minio.persistence.enabled=true), use a gateway, or accept the loss explicitly with --set minio.persistence.allowEphemeral=true." }}
{{- end }}

{{/* Storage engine */}}
{{- $engine := include "sts-backup.storage.engine" . }}
{{- $claim := include "sts-backup.storage.claimName" . }}
{{- if eq $engine "unknown" }}
{{- $messages = append $messages (printf "minio.engine: auto found the existing volume %s but cannot tell which server wrote it (its PVC has no sts-backup.io/storage-engine label and no storage Deployment uses it). Choose explicitly: --set minio.engine=minio if MinIO wrote it (the StackState chart and earlier sts-backup releases run MinIO), or --set minio.engine=rclone if it holds plain objects; to move MinIO backups to rclone see \"Switching engines\" in the chart README." $claim) }}
{{- end }}
{{- if and (eq $engine "minio") (ne $mode "local") (or (not $v.minio.acknowledgeUnmaintainedGateway) (include "sts-backup.storage.minioTagLacksGateway" .)) }}
{{- $messages = append $messages (printf "minio.engine: minio cannot serve %s mode with minio.image.tag=%s unless both are set knowingly: MinIO removed the gateways (Azure in RELEASE.2022-04-30, S3 in RELEASE.2022-10-24) and the project is archived. Use the maintained engine instead (--set minio.engine=rclone, or leave minio.engine at auto), or pin a gateway-capable release in minio.image.tag (e.g. RELEASE.2022-04-29T01-27-09Z) AND set minio.acknowledgeUnmaintainedGateway=true to accept an image without security fixes." $mode (toString $v.minio.image.tag)) }}
{{- end }}
{{- if and (eq $mode "local") (ne $v.minio.engine "auto") }}
{{- $existing := include "sts-backup.storage.existingEngine" . }}
{{- if and $existing (ne $existing "unknown") (ne $existing $engine) }}
{{- $messages = append $messages (printf "minio.engine: %s cannot read the volume %s, which %s wrote: the backups on it would vanish from view. Keep --set minio.engine=%s (or auto), or first copy the backups to a new volume served by %s (\"Switching engines\" in the chart README) and point minio.persistence.existingClaim at it." $engine $claim $existing $existing $engine) }}
{{- end }}
{{- end }}

{{/* Credentials */}}
{{- if not $v.minio.existingSecret }}
{{- if eq $mode "azuregateway" }}
{{- if or (not $v.minio.accessKey) (not $v.minio.secretKey) }}
{{- $messages = append $messages "minio.accessKey/minio.secretKey: Azure gateway mode needs the storage account name in minio.accessKey and the account key in minio.secretKey (or minio.existingSecret)." }}
{{- end }}
{{- else }}
{{- if or (eq (toString $v.minio.accessKey) "setme") (eq (toString $v.minio.secretKey) "setme") }}
{{- $messages = append $messages "minio.accessKey/minio.secretKey: \"setme\" is the StackState placeholder; set real keys or leave both empty to generate them." }}
{{- end }}
{{- if and $v.minio.accessKey (not (regexMatch "^[A-Za-z0-9]{5,20}$" (toString $v.minio.accessKey))) }}
{{- $messages = append $messages "minio.accessKey: must be 5 to 20 letters or digits (or empty to generate one)." }}
{{- end }}
{{- if and $v.minio.secretKey (not (regexMatch "^[A-Za-z0-9]{8,40}$" (toString $v.minio.secretKey))) }}
{{- $messages = append $messages "minio.secretKey: must be 8 to 40 letters or digits (or empty to generate one)." }}
{{- end }}
{{- end }}
{{- if ne (empty $v.minio.s3gateway.accessKey) (empty $v.minio.s3gateway.secretKey) }}
{{- $messages = append $messages "minio.s3gateway.accessKey/secretKey: set both (an IAM user) or neither (the pod's IAM role)." }}
{{- end }}
{{- end }}

{{/* Stores (StackGraph, configuration, backup.stores.*) */}}
{{- $stores := dict }}
{{- include "sts-backup.stores" (dict "root" . "out" $stores) }}
{{- range $name := include "sts-backup.store.order" $stores | fromJsonArray }}
{{- range include "sts-backup.store.problems" (merge (dict "root" $) (index $stores $name)) | trim | splitList "\n" }}
{{- if . }}
{{- $messages = append $messages . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Signing, encryption, Object Lock */}}
{{- range include "sts-backup.security.problems" . | trim | splitList "\n" }}
{{- if . }}
{{- $messages = append $messages . }}
{{- end }}
{{- end }}

{{/* Elasticsearch */}}
{{- $es := $v.backup.elasticsearch }}
{{- if $es.scheduled.enabled }}
{{- with include "sts-backup.validate.quartzCron" (list "backup.elasticsearch.scheduled.schedule" $es.scheduled.schedule) }}
{{- $messages = append $messages . }}
{{- end }}
{{- end }}
{{- if and $es.auth.username (not $es.auth.existingSecret) }}
{{- $messages = append $messages "backup.elasticsearch.auth.username: the password comes from a Secret; set backup.elasticsearch.auth.existingSecret too." }}
{{- end }}

{{- if $messages }}
{{- printf "\n\nVALUES VALIDATION:\n  - %s\n" (join "\n  - " $messages) | fail }}
{{- end }}
{{- end }}
