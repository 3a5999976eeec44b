{{/* Pod templates of the registration Job and the Job templates the restore scripts launch. */}}

{{/* Pod template of the registration Job and its suspended CronJob twin. */}}
{{- define "sts-backup.es.registerPodTemplate" -}}
{{- $env := include "sts-backup.es.registerEnv" . | trim }}
{{- include "sts-backup.jobsPodTemplate" (dict "root" . "component" "es-register" "name" "register" "binary" "es-snapshot-register" "args" (list "register") "env" $env "es" true) }}
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
  {{- with .deadline }}
  activeDeadlineSeconds: {{ . }}
  {{- end }}
  template:
    {{- if .store }}
    {{- include "sts-backup.storePodTemplate" . | nindent 4 }}
    {{- else }}
    {{- include "sts-backup.jobsPodTemplate" . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "sts-backup.jobTemplate.elasticsearchList" -}}
{{- $env := include "sts-backup.es.listEnv" . }}
{{- include "sts-backup.jobTemplate" (dict "root" . "component" "es-list" "name" "list" "binary" "es-snapshot-register" "args" (list "list") "env" $env "es" true) }}
{{- end }}

{{- define "sts-backup.jobTemplate.elasticsearchRestore" -}}
{{- $env := include "sts-backup.es.restoreEnv" . }}
{{- $r := .Values.backup.elasticsearch.restore }}
{{- if $r.orchestrate }}
{{- $env = printf "%s\n%s" ($env | trim) (include "sts-backup.stackGraph.orchestrateEnv" (dict "root" . "selector" $r.scaleDownSelector "store" "elasticsearch")) }}
{{- end }}
{{- include "sts-backup.jobTemplate" (dict "root" . "component" "es-restore" "name" "restore" "binary" "es-snapshot-register" "args" (list "restore") "env" $env "es" true "orchestrate" $r.orchestrate) }}
{{- end }}

{{/* YAML text to pretty JSON; refuses to render a template that is not valid YAML. */}}
{{- define "sts-backup.yamlToJson" -}}
{{- $obj := fromYaml . }}
{{- if hasKey $obj "Error" }}
{{- fail (printf "internal error: a job template is not valid YAML: %s" $obj.Error) }}
{{- end }}
{{- toPrettyJson $obj }}
{{- end }}
