{{/*
Off-site copies: per store, the destination (backup.replicate defaults, the store's `replicate`
keys over them), the replicate CronJob (`stackgraph-backup replicate --to ...` through its
REPLICA_* env twins) and the env that points a list/restore Job at the copy instead of the
primary (the `-replica` Job templates of the restore scripts).
*/}}

{{/* Keys of backup.replicate a store may override. */}}
{{- define "sts-backup.replicate.keys" -}}
{{- toJson (list "endpoint" "region" "addressing" "existingSecret" "accessKeyKey" "secretKeyKey" "caSecret" "caKey" "sse" "objectLock" "retention" "schedule" "activeDeadlineSeconds") }}
{{- end }}

{{/* The store's destination as JSON (dict: root, s): enabled, bucketName, s3Prefix and every key of backup.replicate. */}}
{{- define "sts-backup.replicate.resolve" -}}
{{- $g := .root.Values.backup.replicate }}
{{- $r := .s.v.replicate }}
{{- $out := dict "enabled" $r.enabled "bucketName" $r.bucketName "s3Prefix" $r.s3Prefix }}
{{- range $k := include "sts-backup.replicate.keys" . | fromJsonArray }}
{{- $mine := index $r $k }}
{{- if or (kindIs "invalid" $mine) (eq (toString $mine) "") }}
{{- $_ := set $out $k (index $g $k) }}
{{- else }}
{{- $_ := set $out $k $mine }}
{{- end }}
{{- end }}
{{- if not $out.retention }}
{{- $_ := set $out "retention" (.s.v.scheduled.backupRetentionTimeDelta | default "") }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "sts-backup.replicate.credentialsDir" -}}/etc/sts-backup/replica-s3{{- end }}
{{- define "sts-backup.replicate.caDir" -}}/etc/sts-backup/replica-ca{{- end }}

{{/* s3://<bucket>[/<prefix>] of a destination. */}}
{{- define "sts-backup.replicate.url" -}}
{{- if .s3Prefix }}{{ printf "s3://%s/%s" .bucketName .s3Prefix }}{{ else }}{{ printf "s3://%s" .bucketName }}{{ end }}
{{- end }}

{{/*
The destination's credentials volume (dict: r, name): only the two keys, renamed to the file
names the binary reads; nothing when the pod's own identity is used.
*/}}
{{- define "sts-backup.replicate.credentialsVolume" -}}
{{- if .r.existingSecret }}
- name: {{ .name }}
  secret:
    secretName: {{ .r.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .r.accessKeyKey }}
        path: accesskey
      - key: {{ .r.secretKeyKey }}
        path: secretkey
{{- end }}
{{- if .r.caSecret }}
- name: replica-ca
  secret:
    secretName: {{ .r.caSecret }}
    defaultMode: 0444
    items:
      - key: {{ .r.caKey }}
        path: {{ .r.caKey }}
{{- end }}
{{- end }}

{{/* Mounts of the destination's credentials (dict: r, name, dir). */}}
{{- define "sts-backup.replicate.credentialsMounts" -}}
{{- if .r.existingSecret }}
- name: {{ .name }}
  mountPath: {{ .dir }}
  readOnly: true
{{- end }}
{{- if .r.caSecret }}
- name: replica-ca
  mountPath: {{ include "sts-backup.replicate.caDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Storage env of a list/restore Job reading the copy (dict: root, r): the same variables as
"sts-backup.store.env", pointing at the destination; its credentials are mounted where the
primary's would be (volume s3-credentials), so the pod holds only the destination's keys.
*/}}
{{- define "sts-backup.replicate.readerEnv" -}}
{{- $r := .r -}}
- name: BACKUP_STORAGE
  value: {{ include "sts-backup.replicate.url" $r | quote }}
{{- with $r.endpoint }}
- name: S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: S3_REGION
  value: {{ $r.region | quote }}
- name: S3_ADDRESSING
  value: {{ $r.addressing | quote }}
{{- if $r.existingSecret }}
- name: S3_CREDENTIALS_DIR
  value: {{ include "sts-backup.credentialsDir" .root | quote }}
{{- end }}
{{- if $r.caSecret }}
- name: S3_CA_BUNDLE
  value: {{ printf "%s/%s" (include "sts-backup.replicate.caDir" .) $r.caKey | quote }}
{{- end }}
- name: LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
{{- end }}

{{/* Env of the replicate container (dict: root, s, r): the store's storage as source, REPLICA_* as destination. */}}
{{- define "sts-backup.replicate.env" -}}
{{- $r := .r }}
{{ include "sts-backup.store.env" (dict "root" .root "s" .s) | trim }}
- name: REPLICA_STORAGE
  value: {{ include "sts-backup.replicate.url" $r | quote }}
{{- with $r.endpoint }}
- name: REPLICA_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: REPLICA_S3_REGION
  value: {{ $r.region | quote }}
- name: REPLICA_S3_ADDRESSING
  value: {{ $r.addressing | quote }}
{{- if $r.existingSecret }}
- name: REPLICA_S3_CREDENTIALS_DIR
  value: {{ include "sts-backup.replicate.credentialsDir" . | quote }}
{{- end }}
{{- if $r.caSecret }}
- name: REPLICA_S3_CA_BUNDLE
  value: {{ printf "%s/%s" (include "sts-backup.replicate.caDir" .) $r.caKey | quote }}
{{- end }}
- name: REPLICA_S3_SSE
  value: {{ $r.sse | quote }}
{{- with $r.objectLock }}
- name: REPLICA_OBJECT_LOCK
  value: {{ . | quote }}
- name: REPLICA_RETENTION_TIME_DELTA
  value: {{ $r.retention | quote }}
{{- end }}
{{- end }}

{{/* The replicate CronJob of a store (dict: root, s). */}}
{{- define "sts-backup.replicate.cronJob" -}}
{{- $root := .root }}
{{- $s := .s.v.scheduled }}
{{- $r := include "sts-backup.replicate.resolve" . | fromJson }}
{{- $component := include "sts-backup.store.component" (list .s "replicate") }}
{{- $extraVolumes := include "sts-backup.replicate.credentialsVolume" (dict "r" $r "name" "replica-credentials") }}
{{- $extraMounts := include "sts-backup.replicate.credentialsMounts" (dict "r" $r "name" "replica-credentials" "dir" (include "sts-backup.replicate.credentialsDir" .)) }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "sts-backup.cronJobName" (list $root $component) }}
  labels:
    {{- include "sts-backup.componentLabels" (list $root $component) | nindent 4 }}
    sts-backup.io/store: {{ .s.name }}
spec:
  schedule: {{ $r.schedule | quote }}
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
      activeDeadlineSeconds: {{ include "sts-backup.store.deadline" (list .s $r.activeDeadlineSeconds) }}
      template:
        {{- include "sts-backup.jobsPodTemplate" (dict "root" $root "component" $component "name" "replicate" "binary" "stackgraph-backup" "args" (list "replicate") "env" (include "sts-backup.replicate.env" (dict "root" $root "s" .s "r" $r)) "kind" "replicate" "extraVolumes" $extraVolumes "extraMounts" $extraMounts) | nindent 8 }}
{{- end }}

{{/* Why a store's copy cannot work (messages, one per line). dict: root, s */}}
{{- define "sts-backup.replicate.problems" -}}
{{- $r := include "sts-backup.replicate.resolve" . | fromJson }}
{{- $p := .s.path }}
{{- if $r.enabled }}
{{- if not $r.bucketName }}
{{- printf "%s.replicate.bucketName: required: the bucket at the destination that holds the copies of this store's backups.\n" $p }}
{{- end }}
{{- if and $r.objectLock (not $r.retention) }}
{{- printf "%s.replicate.retention: the copies are locked (replicate.objectLock=%s) for as long as the destination keeps them, so they need a retention; set backup.replicate.retention or %s.replicate.retention (e.g. \"days = 30\"), or keep %s.scheduled.backupRetentionTimeDelta, the default.\n" $p $r.objectLock $p $p }}
{{- end }}
{{- with include "sts-backup.validate.kubeCron" (list (printf "%s.replicate.schedule" $p) $r.schedule) }}
{{- printf "%s\n" . }}
{{- end }}
{{- if and (eq (include "sts-backup.replicate.url" $r) (include "sts-backup.store.storageUrl" .s)) (or (not $r.endpoint) (eq $r.endpoint (include "sts-backup.storage.endpoint" .root))) }}
{{- printf "%s.replicate: the destination is the store's own bucket on the same storage; an off-site copy needs another endpoint or bucket (backup.replicate.endpoint, %s.replicate.bucketName).\n" $p $p }}
{{- end }}
{{- end }}
{{- end }}
