{{/*
Env of the job containers, one helper per job kind, all built from the storage and logging env
every job binary reads (docs/interfaces.md lists the variables).
*/}}

{{/* Env of every job binary: the storage service and logging. */}}
{{- define "sts-backup.storageEnv" -}}
- name: S3_ENDPOINT
  value: {{ include "sts-backup.storage.endpoint" . | quote }}
- name: S3_REGION
  value: {{ .Values.backup.s3Region | quote }}
- name: S3_ADDRESSING
  value: "path"
- name: S3_CREDENTIALS_DIR
  value: {{ include "sts-backup.credentialsDir" . | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Env of every Elasticsearch job. */}}
{{- define "sts-backup.es.env" -}}
{{- $es := .Values.backup.elasticsearch }}
{{ include "sts-backup.storageEnv" . | trim }}
- name: ELASTICSEARCH_ENDPOINT
  value: {{ $es.endpoint | quote }}
- name: BACKUP_ELASTICSEARCH_SNAPSHOT_REPOSITORY_NAME
  value: {{ $es.snapshotRepositoryName | quote }}
- name: BACKUP_ELASTICSEARCH_BUCKET_NAME
  value: {{ $es.bucketName | quote }}
{{- with $es.s3Prefix }}
- name: BACKUP_ELASTICSEARCH_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: ES_S3_CREDENTIALS
  value: {{ $es.s3Credentials | quote }}
- name: ES_S3_CLIENT
  value: {{ $es.s3Client | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_INDICES
  value: {{ $es.scheduled.indices | quote }}
{{- if $es.auth.existingSecret }}
{{- if $es.auth.username }}
- name: ES_USERNAME
  value: {{ $es.auth.username | quote }}
- name: ES_PASSWORD_FILE
  value: {{ printf "/etc/sts-backup/es-auth/%s" $es.auth.passwordKey | quote }}
{{- else }}
- name: ES_API_KEY_FILE
  value: {{ printf "/etc/sts-backup/es-auth/%s" $es.auth.apiKeyKey | quote }}
{{- end }}
{{- end }}
{{- if $es.tls.caSecret }}
- name: ES_CA_BUNDLE
  value: {{ printf "/etc/sts-backup/es-ca/%s" $es.tls.caKey | quote }}
{{- end }}
{{- end }}

{{- define "sts-backup.es.registerEnv" -}}
{{- $es := .Values.backup.elasticsearch }}
{{- $s := $es.scheduled }}
{{ include "sts-backup.es.env" . | trim }}
{{- if $s.enabled }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_POLICY_NAME
  value: {{ $s.snapshotPolicyName | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SCHEDULE
  value: {{ $s.schedule | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_NAME_TEMPLATE
  value: {{ $s.snapshotNameTemplate | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_EXPIRE_AFTER
  value: {{ $s.snapshotRetentionExpireAfter | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MIN_COUNT
  value: {{ $s.snapshotRetentionMinCount | toString | quote }}
- name: BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MAX_COUNT
  value: {{ $s.snapshotRetentionMaxCount | toString | quote }}
{{- end }}
- name: ES_CREATE_BUCKET
  value: {{ $s.enabled | toString | quote }}
- name: ES_NO_POLICY
  value: {{ not $s.enabled | toString | quote }}
- name: ES_EXECUTE_NOW
  value: {{ and $s.enabled $es.register.executeNow | toString | quote }}
- name: ES_READONLY
  value: {{ $es.register.readonly | toString | quote }}
{{- end }}

{{/* Env of the `elasticsearch list` Job template. */}}
{{- define "sts-backup.es.listEnv" -}}
{{ include "sts-backup.es.env" . | trim }}
- name: OUTPUT_FORMAT
  value: "__OUTPUT_FORMAT__"
{{- end }}

{{/* Env of the `elasticsearch restore` Job template; the placeholders are filled by the restore script. */}}
{{- define "sts-backup.es.restoreEnv" -}}
{{ include "sts-backup.es.env" . | trim }}
- name: SNAPSHOT_NAME
  value: "__SNAPSHOT_NAME__"
- name: INDICES_TO_RESTORE
  value: "__INDICES__"
- name: RESTORE_FORCE
  value: "__FORCE__"
- name: RESTORE_LATEST
  value: "__LATEST__"
- name: RESTORE_ALLOW_PARTIAL
  value: "__ALLOW_PARTIAL__"
- name: RESTORE_RENAME_TO
  value: "__RENAME_TO__"
{{- end }}

{{/*
Env of an orchestrated run (dict: root, selector - empty for none, store - default stackgraph):
the flags' env twins and who the pod is, from the downward API (the Job controller labels its
pods job-name). scaleWait and leaseDuration are backup.stackGraph.orchestrate's for every store.
*/}}
{{- define "sts-backup.stackGraph.orchestrateEnv" -}}
{{- $o := .root.Values.backup.stackGraph.orchestrate -}}
- name: STS_ORCHESTRATE
  value: "true"
- name: STS_STORE
  value: {{ .store | default "stackgraph" }}
{{- with .selector }}
- name: STS_SCALE_DOWN_SELECTOR
  value: {{ . | quote }}
{{- end }}
- name: STS_SCALE_WAIT
  value: {{ $o.scaleWait | quote }}
- name: STS_LEASE_DURATION
  value: {{ $o.leaseDuration | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: JOB_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['job-name']
{{- end }}
