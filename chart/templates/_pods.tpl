{{/*
Pod specs shared by the CronJobs, the registration Job and the restore/list Job templates, so all
of them run the same images with the same env, secrets and security settings.
*/}}

{{/* Where the storage Secret's `accesskey`/`secretkey` are mounted (env S3_CREDENTIALS_DIR). */}}
{{- define "sts-backup.credentialsDir" -}}/etc/sts-backup/s3{{- end }}

{{/* Env of every job binary: the storage service and logging. */}}
{{- define "sts-backup.storageEnv" -}}
- name: S3_ENDPOINT
  value: {{ include "sts-backup.minio.endpoint" . | quote }}
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

{{/* Retention env, read by `stackgraph-backup backup` (prunes after an upload) and `retention-pruner`. */}}
{{- define "sts-backup.stackGraph.retentionEnv" -}}
{{- $s := .Values.backup.stackGraph.scheduled }}
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

{{/* Env of every StackGraph job: the storage location of the backups. */}}
{{- define "sts-backup.stackGraph.env" -}}
- name: BACKUP_STORAGE
  value: {{ include "sts-backup.stackGraph.storageUrl" . | quote }}
{{ include "sts-backup.storageEnv" . | trim }}
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

{{/* Volumes of the Elasticsearch pods beyond the common ones (auth and CA Secrets). */}}
{{- define "sts-backup.es.volumes" -}}
{{- $es := .Values.backup.elasticsearch }}
{{- if $es.auth.existingSecret }}
- name: es-auth
  secret:
    secretName: {{ $es.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if $es.tls.caSecret }}
- name: es-ca
  secret:
    secretName: {{ $es.tls.caSecret }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "sts-backup.es.volumeMounts" -}}
{{- $es := .Values.backup.elasticsearch }}
{{- if $es.auth.existingSecret }}
- name: es-auth
  mountPath: /etc/sts-backup/es-auth
  readOnly: true
{{- end }}
{{- if $es.tls.caSecret }}
- name: es-ca
  mountPath: /etc/sts-backup/es-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes every job pod has: the storage credentials (only accesskey/secretkey) and /tmp. */}}
{{- define "sts-backup.commonVolumes" -}}
- name: s3-credentials
  secret:
    secretName: {{ include "sts-backup.secretName" . }}
    defaultMode: 0440
    items:
      - key: accesskey
        path: accesskey
      - key: secretkey
        path: secretkey
- name: tmp
  emptyDir: {{ include "sts-backup.emptyDir" .Values.backup.tmpSizeLimit }}
{{- end }}

{{- define "sts-backup.commonVolumeMounts" -}}
- name: s3-credentials
  mountPath: {{ include "sts-backup.credentialsDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Scheduling and pull secrets shared by every job pod. */}}
{{- define "sts-backup.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.backup.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.backup.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.backup.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod template (metadata + spec) of a job running the jobs image.
dict: root, component, name (container), binary, args (list), env (YAML list string), es (bool: mount the ES Secrets)
*/}}
{{- define "sts-backup.jobsPodTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "sts-backup.componentLabels" (list $root .component) | nindent 4 }}
    {{- with $v.backup.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.backup.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $v.backup.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "sts-backup.podScheduling" $root | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  containers:
    - name: {{ .name }}
      image: {{ include "sts-backup.jobsImage" $root | quote }}
      imagePullPolicy: {{ $v.jobsImage.pullPolicy }}
      command:
        - {{ printf "/usr/local/bin/%s" .binary | quote }}
      {{- with .args }}
      args:
        {{- range . }}
        - {{ . | quote }}
        {{- end }}
      {{- end }}
      env:
        {{- .env | trim | nindent 8 }}
      {{- with $v.backup.jobResources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.backup.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "sts-backup.commonVolumeMounts" $root | nindent 8 }}
        {{- if .es }}
        {{- with include "sts-backup.es.volumeMounts" $root | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- end }}
  volumes:
    {{- include "sts-backup.commonVolumes" $root | nindent 4 }}
    {{- if .es }}
    {{- with include "sts-backup.es.volumes" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- end }}
{{- end }}

{{/*
Pod template of a job running the graph server image: an init container from the jobs image
copies the static stackgraph-backup binary into an emptyDir; the main container runs it with the
server's export/import tool next to it.
dict: root, component, name (container), args (list), env (YAML list string), command (the export/import command list)
*/}}
{{- define "sts-backup.graphPodTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $sg := $v.backup.stackGraph }}
{{- $usesFile := include "sts-backup.usesFile" .command -}}
metadata:
  labels:
    {{- include "sts-backup.componentLabels" (list $root .component) | nindent 4 }}
    {{- with $v.backup.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.backup.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- if $sg.securityContext.enabled }}
  securityContext:
    {{- omit $sg.securityContext "enabled" | toYaml | nindent 4 }}
  {{- end }}
  {{- with include "sts-backup.podScheduling" $root | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  initContainers:
    - name: copy-binary
      image: {{ include "sts-backup.jobsImage" $root | quote }}
      imagePullPolicy: {{ $v.jobsImage.pullPolicy }}
      command:
        - /usr/local/bin/stackgraph-backup
      args:
        - copy-to
        - /sts-backup/bin
      {{- with $v.backup.jobResources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.backup.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: sts-backup-bin
          mountPath: /sts-backup/bin
  containers:
    - name: {{ .name }}
      image: {{ include "sts-backup.graphImage" $root | quote }}
      imagePullPolicy: {{ $sg.image.pullPolicy }}
      command:
        - /sts-backup/bin/stackgraph-backup
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: HOME
          value: /tmp
        {{- .env | trim | nindent 8 }}
        {{- if $usesFile }}
        - name: BACKUP_SCRATCH_DIR
          value: /scratch
        {{- end }}
        {{- with $sg.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $sg.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.backup.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: sts-backup-bin
          mountPath: /sts-backup/bin
          readOnly: true
        {{- include "sts-backup.commonVolumeMounts" $root | nindent 8 }}
        {{- if $usesFile }}
        - name: scratch
          mountPath: /scratch
        {{- end }}
        {{- with $sg.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: sts-backup-bin
      emptyDir: {{ include "sts-backup.emptyDir" "256Mi" }}
    {{- include "sts-backup.commonVolumes" $root | nindent 4 }}
    {{- if $usesFile }}
    {{- include "sts-backup.stackGraph.scratchVolume" $root | nindent 4 }}
    {{- end }}
    {{- with $sg.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Scratch volume for the {file} of the export/import: an emptyDir, or a generic ephemeral PVC. */}}
{{- define "sts-backup.stackGraph.scratchVolume" -}}
{{- $scratch := .Values.backup.stackGraph.scratch -}}
- name: scratch
{{- if $scratch.ephemeralVolume.size }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "sts-backup.componentLabels" (list . "scratch") | nindent 10 }}
      spec:
        accessModes:
          - ReadWriteOnce
        {{- with $scratch.ephemeralVolume.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $scratch.ephemeralVolume.size }}
{{- else }}
  emptyDir: {{ include "sts-backup.emptyDir" $scratch.sizeLimit }}
{{- end }}
{{- end }}

{{/* An emptyDir source as flow YAML, with a sizeLimit when one is given: include "sts-backup.emptyDir" $sizeLimit */}}
{{- define "sts-backup.emptyDir" -}}
{{- if . }}{{ dict "sizeLimit" (toString .) | toJson }}{{ else }}{}{{ end }}
{{- end }}
