{{/* Env and pod templates of the individual jobs. */}}

{{/* Env of the StackGraph backup container. */}}
{{- define "sts-backup.stackGraph.backupEnv" -}}
{{- $sg := .Values.backup.stackGraph }}
{{ include "sts-backup.stackGraph.env" . | trim }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE
  value: {{ include "sts-backup.backupNameTemplate" . | quote }}
{{- /* Scheduled backups create their bucket when missing, as the reference's init job did. */}}
- name: BACKUP_CREATE_BUCKET
  value: "true"
{{- with $sg.compress }}
- name: BACKUP_COMPRESS
  value: {{ . | quote }}
{{- end }}
{{ include "sts-backup.stackGraph.retentionEnv" . | trim }}
{{- end }}

{{/* Env of the retention CronJob. */}}
{{- define "sts-backup.stackGraph.retentionJobEnv" -}}
{{ include "sts-backup.stackGraph.env" . | trim }}
{{ include "sts-backup.stackGraph.retentionEnv" . | trim }}
- name: BACKUP_PRUNE_DRY_RUN
  value: {{ .Values.backup.stackGraph.scheduled.retentionJob.dryRun | toString | quote }}
{{- end }}

{{/* Pod template of the registration Job and its suspended CronJob twin. */}}
{{- define "sts-backup.es.registerPodTemplate" -}}
{{- $es := .Values.backup.elasticsearch }}
{{- $s := $es.scheduled }}
{{- $env := include "sts-backup.es.registerEnv" . | trim }}
{{- include "sts-backup.jobsPodTemplate" (dict "root" . "component" "es-register" "name" "register" "binary" "es-snapshot-register" "args" (list "register") "env" $env "es" true) }}
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

{{/*
The Job manifests the restore scripts launch (docs/interfaces.md, "the job-template ConfigMap").
Each is built as YAML, then stored as JSON; placeholders are whole JSON strings.
*/}}
{{- define "sts-backup.jobTemplate" -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: "__JOB_NAME__"
  labels:
    {{- include "sts-backup.componentLabels" (list .root .component) | nindent 4 }}
spec:
  backoffLimit: 0
  template:
    {{- if .graph }}
    {{- include "sts-backup.graphPodTemplate" . | nindent 4 }}
    {{- else }}
    {{- include "sts-backup.jobsPodTemplate" . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "sts-backup.jobTemplate.stackgraphList" -}}
{{- $env := printf "%s\n- name: OUTPUT_FORMAT\n  value: \"__OUTPUT_FORMAT__\"" (include "sts-backup.stackGraph.env" . | trim) }}
{{- include "sts-backup.jobTemplate" (dict "root" . "component" "stackgraph-list" "name" "list" "binary" "stackgraph-backup" "args" (list "list") "env" $env) }}
{{- end }}

{{- define "sts-backup.jobTemplate.stackgraphRestore" -}}
{{- $r := .Values.backup.stackGraph.restore }}
{{- $env := include "sts-backup.stackGraph.restoreEnv" . }}
{{- $cmd := .Values.backup.stackGraph.importCommand }}
{{- include "sts-backup.jobTemplate" (dict "root" . "graph" true "component" "stackgraph-restore" "name" "restore" "args" (concat (list "restore" "--") $cmd) "env" $env "command" $cmd) }}
{{- end }}

{{- define "sts-backup.stackGraph.restoreEnv" -}}
{{- $r := .Values.backup.stackGraph.restore }}
{{ include "sts-backup.stackGraph.env" . | trim }}
- name: BACKUP_NAME
  value: "__BACKUP_NAME__"
- name: RESTORE_FORCE
  value: "__FORCE__"
{{- with $r.forceArg }}
- name: RESTORE_FORCE_ARG
  value: {{ . | quote }}
{{- end }}
{{- with $r.emptyCheck }}
- name: RESTORE_EMPTY_CHECK
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "sts-backup.jobTemplate.elasticsearchList" -}}
{{- $env := printf "%s\n- name: OUTPUT_FORMAT\n  value: \"__OUTPUT_FORMAT__\"" (include "sts-backup.es.env" . | trim) }}
{{- include "sts-backup.jobTemplate" (dict "root" . "component" "es-list" "name" "list" "binary" "es-snapshot-register" "args" (list "list") "env" $env "es" true) }}
{{- end }}

{{- define "sts-backup.jobTemplate.elasticsearchRestore" -}}
{{- $env := printf "%s\n- name: SNAPSHOT_NAME\n  value: \"__SNAPSHOT_NAME__\"\n- name: INDICES_TO_RESTORE\n  value: \"__INDICES__\"\n- name: RESTORE_FORCE\n  value: \"__FORCE__\"" (include "sts-backup.es.env" . | trim) }}
{{- include "sts-backup.jobTemplate" (dict "root" . "component" "es-restore" "name" "restore" "binary" "es-snapshot-register" "args" (list "restore") "env" $env "es" true) }}
{{- end }}

{{/* YAML text to pretty JSON; refuses to render a template that is not valid YAML. */}}
{{- define "sts-backup.yamlToJson" -}}
{{- $obj := fromYaml . }}
{{- if hasKey $obj "Error" }}
{{- fail (printf "internal error: a job template is not valid YAML: %s" $obj.Error) }}
{{- end }}
{{- toPrettyJson $obj }}
{{- end }}
