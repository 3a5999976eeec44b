{{/*
Stores: every system backed up by `stackgraph-backup` through its own export and import command.
StackGraph (backup.stackGraph), the configuration (backup.configuration) and every entry of
backup.stores are collected into one shape here, and ONE set of helpers renders each store's
backup CronJob, retention CronJob, list/restore/finalize Job templates, lock name and monitor
entry from it. A store is a dict: name (lock, object and job-template names), path (the values
key, for messages) and v (its values with the defaults of "sts-backup.store.defaults" filled in).
*/}}

{{/* Values every store has unless it sets them (the shape of backup.stackGraph). */}}
{{- define "sts-backup.store.defaults" -}}
bucketName: ""
s3Prefix: ""
image:
  registry: ""
  repository: ""
  tag: ""
  digest: ""
  pullPolicy: IfNotPresent
exportCommand: []
importCommand: []
mustContain: ""
expectedSize: 10Gi
deadlineThroughputMiBps: 10
compress: ""
extraEnv: []
extraVolumes: []
extraVolumeMounts: []
resources:
  requests:
    cpu: 100m
    memory: 256Mi
  limits:
    memory: 1Gi
securityContext:
  enabled: true
  runAsNonRoot: true
  runAsUser: 65534
  runAsGroup: 65534
  fsGroup: 65534
  seccompProfile:
    type: RuntimeDefault
scratch:
  sizeLimit: null
  ephemeralVolume:
    size: ""
    storageClassName: ""
objectLock:
  mode: ""
replicate:
  enabled: false
  bucketName: ""
  s3Prefix: ""
orchestrate:
  enabled: true
restore:
  enabled: true
  scaleDownSelector: ""
  forceArg: ""
  emptyCheck: ""
  activeDeadlineSeconds: null
scheduled:
  enabled: true
  schedule: "0 3 * * *"
  timeZone: ""
  backupNameTemplate: "sts-backup-%Y%m%d-%H%M"
  backupNameParseRegexp: "sts-backup-([0-9]*-[0-9]*)"
  backupDatetimeParseFormat: "%Y%m%d-%H%M"
  backupRetentionTimeDelta: "days = 30"
  backupRetentionMinKeep: 1
  backupRetentionKeep:
    last: null
    daily: null
    weekly: null
    monthly: null
  abortUploadsOlderThan: 24h
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  backoffLimit: 1
  activeDeadlineSeconds: null
  startingDeadlineSeconds: null
  retentionJob:
    enabled: true
    schedule: "30 4 * * *"
    dryRun: false
    activeDeadlineSeconds: 1800
{{- end }}

{{/*
Fills the keys of .d missing from .v (in place, nested maps key by key). Unlike sprig's merge it
keeps a `false` or `0` the user set.
*/}}
{{- define "sts-backup.store.fillDefaults" -}}
{{- $v := .v }}
{{- range $k, $d := .d }}
{{- if not (hasKey $v $k) }}
{{- if or (kindIs "map" $d) (kindIs "slice" $d) }}
{{- $_ := set $v $k (deepCopy $d) }}
{{- else }}
{{- $_ := set $v $k $d }}
{{- end }}
{{- else if and (kindIs "map" $d) (kindIs "map" (index $v $k)) }}
{{- include "sts-backup.store.fillDefaults" (dict "v" (index $v $k) "d" $d) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One store: include "sts-backup.store.make" (dict "out" $stores "name" NAME "path" KEY "values" VALUES) */}}
{{- define "sts-backup.store.make" -}}
{{- $v := deepCopy (.values | default dict) }}
{{- include "sts-backup.store.fillDefaults" (dict "v" $v "d" (include "sts-backup.store.defaults" . | fromYaml)) }}
{{- $_ := set .out .name (dict "name" .name "path" .path "v" $v) }}
{{- end }}

{{/*
Every store of the release into .out (a dict, name -> store), when backup.enabled:
include "sts-backup.stores" (dict "root" . "out" $stores)
*/}}
{{- define "sts-backup.stores" -}}
{{- $b := .root.Values.backup }}
{{- if $b.enabled }}
{{- include "sts-backup.store.make" (dict "out" .out "name" "stackgraph" "path" "backup.stackGraph" "values" $b.stackGraph) }}
{{- $c := deepCopy $b.configuration }}
{{- /* The sts CLI reads the router URL and the API token from its env: never in argv or values. */}}
{{- $cliEnv := list (dict "name" "STS_URL" "value" $c.url) }}
{{- with $c.apiToken.existingSecret }}
{{- $cliEnv = append $cliEnv (dict "name" "STS_API_TOKEN" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $c.apiToken.key))) }}
{{- end }}
{{- $_ := set $c "extraEnv" (concat $cliEnv ($c.extraEnv | default list)) }}
{{- $_ = unset $c "url" }}
{{- $_ = unset $c "apiToken" }}
{{- include "sts-backup.store.make" (dict "out" .out "name" "configuration" "path" "backup.configuration" "values" $c) }}
{{- range $name, $values := $b.stores }}
{{- include "sts-backup.store.make" (dict "out" $.out "name" $name "path" (printf "backup.stores.%s" $name) "values" $values) }}
{{- end }}
{{- end }}
{{- end }}

{{/* BACKUP_STORAGE of a store's jobs: s3://<bucket>[/<prefix>]. */}}
{{- define "sts-backup.store.storageUrl" -}}
{{- $v := .v }}
{{- if $v.s3Prefix }}
{{- printf "s3://%s/%s" $v.bucketName $v.s3Prefix }}
{{- else }}
{{- printf "s3://%s" $v.bucketName }}
{{- end }}
{{- end }}

{{/* True (non-empty) when a part of the store that runs its image is rendered. */}}
{{- define "sts-backup.store.imageUsed" -}}
{{- if or .v.scheduled.enabled .v.restore.enabled }}true{{ end }}
{{- end }}

{{/*
activeDeadlineSeconds of a store's backup or restore Job: the explicit value, else
1800 s + expectedSize / deadlineThroughputMiBps.
Usage: include "sts-backup.store.deadline" (list $store $explicit)
*/}}
{{- define "sts-backup.store.deadline" -}}
{{- $v := (index . 0).v }}
{{- $explicit := index . 1 }}
{{- if not (kindIs "invalid" $explicit) }}
{{- $explicit }}
{{- else }}
{{- $size := toString $v.expectedSize }}
{{- $number := regexFind "^[0-9]+" $size | atoi }}
{{- $unitMiB := get (dict "Mi" 1 "Gi" 1024 "Ti" 1048576) (trimPrefix (toString $number) $size) }}
{{- add 1800 (div (mul $number $unitMiB) (int $v.deadlineThroughputMiBps)) }}
{{- end }}
{{- end }}

{{/* Component (and object-name suffix) of one of the store's objects: include "sts-backup.store.component" (list $store "backup") */}}
{{- define "sts-backup.store.component" -}}
{{- printf "%s-%s" (index . 0).name (index . 1) }}
{{- end }}

{{/*
Env of every job of a store (dict: root, s, replica): the storage location and the storage
service; with .replica (a resolved destination) the store's off-site copy instead.
*/}}
{{- define "sts-backup.store.env" -}}
{{- if .replica }}
{{- include "sts-backup.replicate.readerEnv" (dict "root" .root "r" .replica) }}
{{- else -}}
- name: BACKUP_STORAGE
  value: {{ include "sts-backup.store.storageUrl" .s | quote }}
{{ include "sts-backup.storageEnv" .root | trim }}
{{- end }}
{{- end }}

{{/* Retention env, read by `stackgraph-backup backup` (prunes after an upload) and `retention-pruner`. */}}
{{- define "sts-backup.store.retentionEnv" -}}
{{- $s := .s.v.scheduled }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_PARSE_REGEXP
  value: {{ $s.backupNameParseRegexp | quote }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_DATETIME_PARSE_FORMAT
  value: {{ $s.backupDatetimeParseFormat | quote }}
{{- with $s.backupRetentionTimeDelta }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA
  value: {{ . | quote }}
{{- end }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP
  value: {{ $s.backupRetentionMinKeep | toString | quote }}
{{- range $rule := list "last" "daily" "weekly" "monthly" }}
{{- $n := index $s.backupRetentionKeep $rule }}
{{- if not (kindIs "invalid" $n) }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_{{ upper $rule }}
  value: {{ $n | toString | quote }}
{{- end }}
{{- end }}
- name: BACKUP_ABORT_UPLOADS_OLDER_THAN
  value: {{ $s.abortUploadsOlderThan | quote }}
{{- end }}

{{/* Env of a store's backup container. */}}
{{- define "sts-backup.store.backupEnv" -}}
{{- $v := .s.v }}
{{ include "sts-backup.store.env" . | trim }}
- name: BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE
  value: {{ include "sts-backup.backupNameTemplate" $v.scheduled.backupNameTemplate | quote }}
{{- /* Scheduled backups create their bucket when missing, as the reference's init job did. */}}
- name: BACKUP_CREATE_BUCKET
  value: "true"
{{- with $v.compress }}
- name: BACKUP_COMPRESS
  value: {{ . | quote }}
{{- end }}
{{- with include "sts-backup.store.objectLock" . }}
- name: S3_OBJECT_LOCK
  value: {{ . | quote }}
{{- end }}
{{- with $v.mustContain }}
- name: BACKUP_MUST_CONTAIN
  value: {{ . | quote }}
{{- end }}
{{ include "sts-backup.store.retentionEnv" . | trim }}
{{- if $v.orchestrate.enabled }}
{{ include "sts-backup.stackGraph.orchestrateEnv" (dict "root" .root "store" .s.name) }}
{{- end }}
{{- end }}

{{/* Env of a store's retention CronJob. */}}
{{- define "sts-backup.store.retentionJobEnv" -}}
{{ include "sts-backup.store.env" . | trim }}
{{ include "sts-backup.store.retentionEnv" . | trim }}
- name: BACKUP_PRUNE_DRY_RUN
  value: {{ .s.v.scheduled.retentionJob.dryRun | toString | quote }}
{{- end }}

{{/* Env of a store's restore Job template; the placeholders are filled by the restore script. */}}
{{- define "sts-backup.store.restoreEnv" -}}
{{- $r := .s.v.restore }}
{{ include "sts-backup.store.env" . | trim }}
- name: BACKUP_NAME
  value: "__BACKUP_NAME__"
- name: RESTORE_LATEST
  value: "__LATEST__"
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
{{- if include "sts-backup.store.restoreOrchestrated" .s }}
{{ include "sts-backup.stackGraph.orchestrateEnv" (dict "root" .root "selector" $r.scaleDownSelector "store" .s.name) }}
{{- if not $r.scaleDownSelector }}
- name: STS_NO_SCALE_DOWN
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when a store's restore runs --orchestrate (orchestration on). A store without a
scale-down selector (the configuration: its writer is the server the sts CLI talks to) is still
locked for the restore, with STS_NO_SCALE_DOWN: nothing is scaled.
*/}}
{{- define "sts-backup.store.restoreOrchestrated" -}}
{{- if .v.orchestrate.enabled }}true{{ end }}
{{- end }}

{{/* Env of a store's list Job template; the restore script fills in the output format. */}}
{{- define "sts-backup.store.listEnv" -}}
{{ include "sts-backup.store.env" . | trim }}
- name: OUTPUT_FORMAT
  value: "__OUTPUT_FORMAT__"
{{- end }}

{{/* The backup CronJob of a store (dict: root, s). */}}
{{- define "sts-backup.store.cronJob" -}}
{{- $root := .root }}
{{- $v := .s.v }}
{{- $s := $v.scheduled }}
{{- $component := include "sts-backup.store.component" (list .s "backup") }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "sts-backup.cronJobName" (list $root $component) }}
  labels:
    {{- include "sts-backup.componentLabels" (list $root $component) | nindent 4 }}
    sts-backup.io/store: {{ .s.name }}
spec:
  schedule: {{ $s.schedule | quote }}
  {{- with $s.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: {{ $s.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $s.failedJobsHistoryLimit }}
  {{- with $s.startingDeadlineSeconds }}
  startingDeadlineSeconds: {{ . }}
  {{- end }}
  jobTemplate:
    metadata:
      labels:
        {{- include "sts-backup.componentLabels" (list $root $component) | nindent 8 }}
    spec:
      backoffLimit: {{ $s.backoffLimit }}
      activeDeadlineSeconds: {{ include "sts-backup.store.deadline" (list .s $s.activeDeadlineSeconds) }}
      template:
        {{- include "sts-backup.storePodTemplate" (dict "root" $root "s" .s "component" $component "name" "backup" "args" (concat (list "backup" "--") $v.exportCommand) "env" (include "sts-backup.store.backupEnv" .) "command" $v.exportCommand "orchestrate" $v.orchestrate.enabled "kind" "backup") | nindent 8 }}
{{- end }}

{{/* The retention CronJob of a store (dict: root, s). */}}
{{- define "sts-backup.store.retentionCronJob" -}}
{{- $root := .root }}
{{- $s := .s.v.scheduled }}
{{- $component := include "sts-backup.store.component" (list .s "retention") }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "sts-backup.cronJobName" (list $root $component) }}
  labels:
    {{- include "sts-backup.componentLabels" (list $root $component) | nindent 4 }}
    sts-backup.io/store: {{ .s.name }}
spec:
  schedule: {{ $s.retentionJob.schedule | quote }}
  {{- with $s.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: {{ $s.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $s.failedJobsHistoryLimit }}
  {{- with $s.startingDeadlineSeconds }}
  startingDeadlineSeconds: {{ . }}
  {{- end }}
  jobTemplate:
    metadata:
      labels:
        {{- include "sts-backup.componentLabels" (list $root $component) | nindent 8 }}
    spec:
      backoffLimit: {{ $s.backoffLimit }}
      activeDeadlineSeconds: {{ $s.retentionJob.activeDeadlineSeconds }}
      template:
        {{- include "sts-backup.jobsPodTemplate" (dict "root" $root "component" $component "name" "prune" "binary" "retention-pruner" "args" list "env" (include "sts-backup.store.retentionJobEnv" .) "kind" "prune") | nindent 8 }}
{{- end }}

{{/* The job-template ConfigMap entries of a store (dict: root, s): list, restore, finalize. */}}
{{- define "sts-backup.store.jobTemplates" -}}
{{- $root := .root }}
{{- $v := .s.v }}
{{- $n := .s.name }}
{{- $r := include "sts-backup.replicate.resolve" . | fromJson -}}
{{ $n }}-scale-down-selector: {{ $v.restore.scaleDownSelector | quote }}
{{- range $where := ternary (list "" "-replica") (list "") $r.enabled }}
{{- $ctx := dict "root" $root "s" $.s "replica" (ternary $r nil (eq $where "-replica")) }}
{{- $list := include "sts-backup.jobTemplate" (dict "root" $root "component" (include "sts-backup.store.component" (list $.s (printf "list%s" $where))) "name" "list" "binary" "stackgraph-backup" "args" (list "list") "env" (include "sts-backup.store.listEnv" $ctx) "kind" "list" "replica" $ctx.replica) }}
{{- $deadline := include "sts-backup.store.deadline" (list $.s $v.restore.activeDeadlineSeconds) }}
{{- $restore := include "sts-backup.jobTemplate" (dict "root" $root "s" $.s "store" true "component" (include "sts-backup.store.component" (list $.s (printf "restore%s" $where))) "name" "restore" "args" (concat (list "restore" "--") $v.importCommand) "env" (include "sts-backup.store.restoreEnv" $ctx) "command" $v.importCommand "deadline" $deadline "orchestrate" (include "sts-backup.store.restoreOrchestrated" $.s) "kind" "restore" "replica" $ctx.replica) }}
job-{{ $n }}-list{{ $where }}.json: |
  {{- include "sts-backup.yamlToJson" $list | nindent 2 }}
job-{{ $n }}-restore{{ $where }}.json: |
  {{- include "sts-backup.yamlToJson" $restore | nindent 2 }}
{{- end }}
{{- if $v.orchestrate.enabled }}
{{- $env := include "sts-backup.stackGraph.orchestrateEnv" (dict "root" $root "selector" "" "store" $n) }}
{{- $finalize := include "sts-backup.jobTemplate" (dict "root" $root "component" (include "sts-backup.store.component" (list .s "finalize")) "name" "finalize" "binary" "stackgraph-backup" "args" (list "finalize") "env" $env "orchestrate" true) }}
job-{{ $n }}-finalize.json: |
  {{- include "sts-backup.yamlToJson" $finalize | nindent 2 }}
{{- end }}
{{- end }}

{{/* Why the store's values cannot render (a list of messages, one per line; empty when fine). */}}
{{- define "sts-backup.store.problems" -}}
{{- $v := .v }}
{{- $p := .path }}
{{- $used := include "sts-backup.store.imageUsed" . }}
{{- $custom := hasPrefix "backup.stores." $p }}
{{- if and $custom (not (regexMatch "^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$" .name)) }}
{{- printf "%s: the store name %q must be 1-20 lower-case letters, digits or '-', starting with a letter (it names the CronJobs, the Job templates and the lock).\n" $p .name }}
{{- end }}
{{- if and $custom (has .name (list "elasticsearch" "stackgraph" "configuration" "es")) }}
{{- printf "%s: the store name %q is taken by a built-in store; choose another name.\n" $p .name }}
{{- end }}
{{- if $used }}
{{- if and (eq .name "stackgraph") (not $v.image.tag) (not $v.image.digest) }}
{{- printf "%s.image.tag: required. Set it to the exact version of the running graph server (a backup only restores into the version that made it), e.g. --set %s.image.tag=<server tag>.\n" $p $p }}
{{- end }}
{{- if not $v.image.repository }}
{{- printf "%s.image.repository: required: the image holding the store's export and import commands.\n" $p }}
{{- end }}
{{- if not $v.bucketName }}
{{- printf "%s.bucketName: required: the bucket holding this store's backups (one bucket per store).\n" $p }}
{{- end }}
{{- end }}
{{- with include "sts-backup.replicate.problems" (dict "root" .root "s" .) }}
{{- . }}
{{- end }}
{{- if and $v.scheduled.enabled (empty $v.exportCommand) }}
{{- printf "%s.exportCommand: required: the command writing the backup to stdout or to {file}, e.g. [\"pg_dump\", \"-Fc\"] (or set %s.scheduled.enabled=false).\n" $p $p }}
{{- end }}
{{- if and $v.restore.enabled (empty $v.importCommand) }}
{{- printf "%s.importCommand: required: the command reading the backup from stdin or {file} (or set %s.restore.enabled=false).\n" $p $p }}
{{- end }}
{{- if $v.scheduled.enabled }}
{{- with include "sts-backup.validate.kubeCron" (list (printf "%s.scheduled.schedule" $p) $v.scheduled.schedule) }}
{{- printf "%s\n" . }}
{{- end }}
{{- if $v.scheduled.retentionJob.enabled }}
{{- with include "sts-backup.validate.kubeCron" (list (printf "%s.scheduled.retentionJob.schedule" $p) $v.scheduled.retentionJob.schedule) }}
{{- printf "%s\n" . }}
{{- end }}
{{- end }}
{{- with include "sts-backup.nameTemplateProblem" (include "sts-backup.backupNameTemplate" $v.scheduled.backupNameTemplate) }}
{{- printf "%s.scheduled.backupNameTemplate: %q %s; write a strftime template such as sts-backup-%%Y%%m%%d-%%H%%M.graph.\n" $p $v.scheduled.backupNameTemplate . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Store names in render order as a JSON list: stackgraph, configuration, then backup.stores by name. */}}
{{- define "sts-backup.store.order" -}}
{{- $names := list }}
{{- range $name := list "stackgraph" "configuration" }}
{{- if hasKey $ $name }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- range $name, $_ := $ }}
{{- if not (has $name (list "stackgraph" "configuration")) }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- toJson $names }}
{{- end }}
