{{/*
Pod specs shared by the CronJobs, the registration Job and the restore/list Job templates, so all
of them run the same images with the same env, secrets and security settings.
*/}}

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
Who a job pod is to the API server (dict: root, orchestrate): an orchestrated run talks to it as
the chart's least-privilege ServiceAccount; every other pod gets no token at all.
*/}}
{{- define "sts-backup.podIdentity" -}}
{{- if .orchestrate -}}
serviceAccountName: {{ include "sts-backup.orchestrate.serviceAccountName" .root }}
automountServiceAccountToken: true
{{- else -}}
automountServiceAccountToken: false
{{- end }}
{{- end }}

{{/*
Pod template (metadata + spec) of a job running the jobs image.
dict: root, component, name (container), binary, args (list), env (YAML list string), es (bool: mount the ES Secrets),
orchestrate (bool: run as the orchestration ServiceAccount), and the keys of "sts-backup.podFiles"
*/}}
{{- define "sts-backup.jobsPodTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $files := include "sts-backup.podFiles" . | fromYaml -}}
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
  {{- include "sts-backup.podIdentity" . | nindent 2 }}
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
        {{- with $files.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.backup.jobResources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.backup.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- $files.mounts | trim | nindent 8 }}
        {{- if .es }}
        {{- with include "sts-backup.es.volumeMounts" $root | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- end }}
  volumes:
    {{- $files.volumes | trim | nindent 4 }}
    {{- if .es }}
    {{- with include "sts-backup.es.volumes" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- end }}
{{- end }}

{{/*
Pod template of a job running a store's image (StackGraph's graph server, the sts CLI, etcd,
PostgreSQL...): an init container from the jobs image copies the static stackgraph-backup binary
into an emptyDir; the main container runs it with the store's export/import tool next to it.
dict: root, s (the store), component, name (container), args (list), env (YAML list string),
command (the export/import command list), orchestrate (bool)
*/}}
{{- define "sts-backup.storePodTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $sv := .s.v }}
{{- $usesFile := include "sts-backup.usesFile" .command }}
{{- $files := include "sts-backup.podFiles" . | fromYaml -}}
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
  {{- include "sts-backup.podIdentity" . | nindent 2 }}
  enableServiceLinks: false
  {{- if $sv.securityContext.enabled }}
  securityContext:
    {{- omit $sv.securityContext "enabled" | toYaml | nindent 4 }}
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
      image: {{ include "sts-backup.image" (list $sv.image "") | quote }}
      imagePullPolicy: {{ $sv.image.pullPolicy }}
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
        {{- with $files.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- if $usesFile }}
        - name: BACKUP_SCRATCH_DIR
          value: /scratch
        {{- end }}
        {{- with $sv.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $sv.resources }}
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
        {{- $files.mounts | trim | nindent 8 }}
        {{- if $usesFile }}
        - name: scratch
          mountPath: /scratch
        {{- end }}
        {{- with $sv.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: sts-backup-bin
      emptyDir: {{ include "sts-backup.emptyDir" "256Mi" }}
    {{- $files.volumes | trim | nindent 4 }}
    {{- if $usesFile }}
    {{- include "sts-backup.store.scratchVolume" (dict "root" $root "scratch" $sv.scratch) | nindent 4 }}
    {{- end }}
    {{- with $sv.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Files and their env of a job pod, as YAML {env: [EnvVar], volumes: "YAML", mounts: "YAML"}:
the storage credentials (the primary's, or with .replica the copy's, mounted at the same path),
/tmp, the keys of its kind ("sts-backup.security"), and .extraVolumes / .extraMounts (YAML).
dict: root, kind (backup, restore, list, prune, replicate; empty for none), replica, extraVolumes, extraMounts
*/}}
{{- define "sts-backup.podFiles" -}}
{{- $root := .root }}
{{- $sec := include "sts-backup.security" (dict "root" $root "kind" (.kind | default "")) | fromYaml }}
{{- $volumes := "" }}
{{- $mounts := "" }}
{{- if .replica }}
{{- $volumes = include "sts-backup.replicate.credentialsVolume" (dict "r" .replica "name" "s3-credentials") }}
{{- $mounts = include "sts-backup.replicate.credentialsMounts" (dict "r" .replica "name" "s3-credentials" "dir" (include "sts-backup.credentialsDir" $root)) }}
{{- $volumes = printf "%s\n- name: tmp\n  emptyDir: %s" $volumes (include "sts-backup.emptyDir" $root.Values.backup.tmpSizeLimit) }}
{{- $mounts = printf "%s\n- name: tmp\n  mountPath: /tmp" $mounts }}
{{- else }}
{{- $volumes = include "sts-backup.commonVolumes" $root }}
{{- $mounts = include "sts-backup.commonVolumeMounts" $root }}
{{- end }}
{{- with $sec.volumes }}{{ $volumes = printf "%s\n%s" $volumes (toYaml .) }}{{ end }}
{{- with $sec.mounts }}{{ $mounts = printf "%s\n%s" $mounts (toYaml .) }}{{ end }}
{{- with .extraVolumes }}{{ $volumes = printf "%s\n%s" $volumes (trim .) }}{{ end }}
{{- with .extraMounts }}{{ $mounts = printf "%s\n%s" $mounts (trim .) }}{{ end }}
{{- toYaml (dict "env" $sec.env "volumes" (trim $volumes) "mounts" (trim $mounts)) }}
{{- end }}
