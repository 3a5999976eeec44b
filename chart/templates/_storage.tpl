{{/*
The storage service: its name, mode and engine. The Service keeps the StackState name
<release>-minio and the `minio.*` values keep their meaning whichever server runs behind it.
*/}}

{{/* Name of the storage service (Service, Deployment, PVC, generated Secret): <release>-minio. */}}
{{- define "sts-backup.storage.fullname" -}}
{{- if .Values.minio.fullnameOverride }}
{{- .Values.minio.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-minio" (.Release.Name | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/* Secret holding the storage credentials: minio.existingSecret or the generated one. */}}
{{- define "sts-backup.secretName" -}}
{{- default (include "sts-backup.storage.fullname" .) .Values.minio.existingSecret }}
{{- end }}

{{/* S3 endpoint of the storage service, as the jobs and Elasticsearch reach it. */}}
{{- define "sts-backup.storage.endpoint" -}}
{{- printf "http://%s:9000" (include "sts-backup.storage.fullname" .) }}
{{- end }}

{{/* Storage mode, by the reference precedence: s3gateway > azuregateway > local. */}}
{{- define "sts-backup.storage.mode" -}}
{{- if .Values.minio.s3gateway.enabled }}s3gateway
{{- else if .Values.minio.azuregateway.enabled }}azuregateway
{{- else }}local
{{- end }}
{{- end }}

{{/*
The server that runs behind the Service: `rclone` or `minio`.
minio.engine `auto` keeps what an existing release runs in local mode (the volume is in that
server's format: a MinIO volume is not a tree of plain objects rclone could serve) and picks
rclone otherwise: it is maintained and serves all three modes. Gateway modes store plain
objects in the backend, so any engine reads them. `unknown` (refused by the validation) means an
existing volume was found whose writer cannot be told.
*/}}
{{- define "sts-backup.storage.engine" -}}
{{- $engine := .Values.minio.engine }}
{{- if ne $engine "auto" }}
{{- $engine }}
{{- else if ne (include "sts-backup.storage.mode" .) "local" }}
{{- "rclone" }}
{{- else }}
{{- $running := include "sts-backup.storage.existingEngine" . }}
{{- default "rclone" $running }}
{{- end }}
{{- end }}

{{/*
The engine that wrote the local-mode volume of an existing release, from the cluster (Helm
`lookup`; empty under `helm template`): the running storage Deployment when it serves a volume,
else the PVC that would be mounted. `minio`, `rclone`, `unknown`, or empty when nothing exists.
*/}}
{{- define "sts-backup.storage.existingEngine" -}}
{{- $name := include "sts-backup.storage.fullname" . }}
{{- $deployment := lookup "apps/v1" "Deployment" .Release.Namespace $name }}
{{- $claim := include "sts-backup.storage.claimName" . }}
{{- $pvc := dict }}
{{- if $claim }}
{{- $pvc = lookup "v1" "PersistentVolumeClaim" .Release.Namespace $claim }}
{{- end }}
{{- $fromDeployment := include "sts-backup.storage.engineOf" $deployment }}
{{- /* a running gateway, or a server on another volume, says nothing about this volume */}}
{{- if and $deployment (ne (dig "metadata" "labels" "sts-backup.io/storage-mode" "local" $deployment) "local") }}
{{- $fromDeployment = "" }}
{{- end }}
{{- range (dig "spec" "template" "spec" "volumes" list $deployment) }}
{{- if and .persistentVolumeClaim (ne (toString .persistentVolumeClaim.claimName) $claim) }}
{{- $fromDeployment = "" }}
{{- end }}
{{- end }}
{{- if $fromDeployment }}
{{- $fromDeployment }}
{{- else if $pvc }}
{{- dig "metadata" "labels" "sts-backup.io/storage-engine" "unknown" $pvc }}
{{- end }}
{{- end }}

{{/*
Engine of a storage Deployment object from the cluster: its sts-backup.io/storage-engine label,
else (a Deployment of the StackState chart or of an older sts-backup) the server its first
container runs. Empty for an empty object.
*/}}
{{- define "sts-backup.storage.engineOf" -}}
{{- if . }}
{{- $label := dig "metadata" "labels" "sts-backup.io/storage-engine" "" . }}
{{- $containers := dig "spec" "template" "spec" "containers" list . }}
{{- $first := dict }}
{{- if $containers }}{{ $first = index $containers 0 }}{{ end }}
{{- $server := printf "%s %s" (dig "image" "" $first) (join " " (dig "command" list $first)) }}
{{- if $label }}
{{- $label }}
{{- else if contains "rclone" $server }}
{{- "rclone" }}
{{- else if contains "minio" $server }}
{{- "minio" }}
{{- else }}
{{- "unknown" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The PVC of local mode (minio.persistence.existingClaim or <release>-minio); empty without persistence. */}}
{{- define "sts-backup.storage.claimName" -}}
{{- $p := .Values.minio.persistence }}
{{- if $p.enabled }}
{{- default (include "sts-backup.storage.fullname" .) $p.existingClaim }}
{{- end }}
{{- end }}

{{/*
"true" when the minio engine runs a gateway mode with an image dated after that gateway was
removed (Azure: RELEASE.2022-04-30, S3: RELEASE.2022-10-24). Tags not of the RELEASE.<date>
form and digest-only pins are taken as pinned knowingly.
*/}}
{{- define "sts-backup.storage.minioTagLacksGateway" -}}
{{- $tag := toString .Values.minio.image.tag }}
{{- $mode := include "sts-backup.storage.mode" . }}
{{- $removed := ternary "2022-10-24" "2022-04-30" (eq $mode "s3gateway") }}
{{- if regexMatch "^RELEASE\\.[0-9]{4}-[0-9]{2}-[0-9]{2}" $tag }}
{{- $date := regexFind "[0-9]{4}-[0-9]{2}-[0-9]{2}" $tag }}
{{- if ge (replace "-" "" $date | atoi) (replace "-" "" $removed | atoi) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Env that points rclone at the backend of a gateway mode (none in local mode), from the Secret
only: used by the server and by the multipart cleanup next to it.
*/}}
{{- define "sts-backup.storage.rcloneBackendEnv" -}}
{{- $m := .Values.minio }}
{{- $mode := include "sts-backup.storage.mode" . }}
{{- $secret := include "sts-backup.secretName" . }}
{{- $fromSecret := $m.existingSecret | empty | not }}
{{- $awsKeys := or $fromSecret (and $m.s3gateway.accessKey $m.s3gateway.secretKey) }}
{{- if eq $mode "s3gateway" }}
- name: RCLONE_S3_PROVIDER
  value: {{ $m.s3gateway.provider | quote }}
- name: RCLONE_S3_ENV_AUTH
  value: "true"
{{- with $m.s3gateway.serviceEndpoint }}
- name: RCLONE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $m.s3gateway.region }}
- name: RCLONE_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- if $awsKeys }}
- name: RCLONE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: awsAccessKeyId
      optional: {{ $fromSecret }}
- name: RCLONE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: awsSecretAccessKey
      optional: {{ $fromSecret }}
{{- end }}
{{- else if eq $mode "azuregateway" }}
- name: RCLONE_AZUREBLOB_ACCOUNT
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: accesskey
- name: RCLONE_AZUREBLOB_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: secretkey
{{- with $m.azuregateway.serviceEndpoint }}
- name: RCLONE_AZUREBLOB_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where rclone keeps the parts of unfinished multipart uploads: hidden `.rclone_temp_multipart_*`
objects next to the upload's key, which no S3 listing shows and nothing removes when the server
dies mid-upload. The cleanup sidecar walks these roots (the volume, or every store's bucket and Elasticsearch's in the backend).
*/}}
{{- define "sts-backup.storage.cleanupRoots" -}}
{{- $mode := include "sts-backup.storage.mode" . }}
{{- $stores := dict }}
{{- include "sts-backup.stores" (dict "root" . "out" $stores) }}
{{- $buckets := list }}
{{- range $stores }}{{ $buckets = append $buckets .v.bucketName }}{{ end }}
{{- $buckets = append $buckets .Values.backup.elasticsearch.bucketName | uniq }}
{{- if eq $mode "local" }}
{{- "/export" }}
{{- else }}
{{- $remote := ternary ":s3:" ":azureblob:" (eq $mode "s3gateway") }}
{{- $roots := list }}
{{- range $buckets }}{{ $roots = append $roots (printf "%s%s" $remote .) }}{{ end }}
{{- join " " $roots }}
{{- end }}
{{- end }}

{{/*
Sidecar of the rclone engine: every interval, deletes the multipart leftovers (and only them)
that have not been written for `olderThan`. A live upload rewrites its temp object with every
part, so it is never that old.
*/}}
{{- define "sts-backup.storage.cleanupContainer" -}}
{{- $m := .Values.minio }}
{{- $c := $m.rclone.multipartCleanup -}}
- name: multipart-cleanup
  image: {{ include "sts-backup.image" (list $m.rclone.image "") | quote }}
  imagePullPolicy: {{ $m.rclone.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - {{ include "sts-backup.storage.cleanupScript" . | quote }}
  env:
    - name: HOME
      value: /tmp
    - name: CLEANUP_ROOTS
      value: {{ include "sts-backup.storage.cleanupRoots" . | quote }}
    - name: CLEANUP_MIN_AGE
      value: {{ $c.olderThan | quote }}
    - name: CLEANUP_INTERVAL_SECONDS
      value: {{ $c.intervalSeconds | toString | quote }}
    {{- with include "sts-backup.storage.rcloneBackendEnv" . | trim }}
    {{- . | nindent 4 }}
    {{- end }}
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 256Mi
  {{- with $m.containerSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if eq (include "sts-backup.storage.mode" .) "local" }}
    - name: export
      mountPath: /export
    {{- end }}
{{- end }}

{{/*
The cleanup loop (POSIX sh, the rclone image's busybox). The filter is fixed here, never taken
from values: `rclone delete` without it would empty the roots.
*/}}
{{- define "sts-backup.storage.cleanupScript" -}}
set -u
# PID 1 ignores signals it has no handler for: stop at once on SIGTERM instead of waiting out
# the pod's grace period (the sleep runs in the background so the trap fires during it).
trap 'exit 0' TERM INT
echo "multipart-cleanup: every ${CLEANUP_INTERVAL_SECONDS}s, leftovers older than ${CLEANUP_MIN_AGE} in: ${CLEANUP_ROOTS}"
while :; do
  for root in ${CLEANUP_ROOTS}; do
    rclone delete "${root}" --config "" --cache-dir /tmp/rclone-cleanup-cache \
      --min-age "${CLEANUP_MIN_AGE}" \
      --include ".rclone_temp_multipart_*" --include ".rclone_temp_multipart_*/**" \
      --retries 1 --stats 0 -v \
      || echo "multipart-cleanup: ${root}: rclone delete failed; next try in ${CLEANUP_INTERVAL_SECONDS}s" >&2
  done
  sleep "${CLEANUP_INTERVAL_SECONDS}" &
  wait $!
done
{{- end }}

{{/* "bucket[/prefix]" of StackGraph and of Elasticsearch, space separated: where the helm test probes. */}}
{{- define "sts-backup.storage.testTargets" -}}
{{- $targets := list }}
{{- range (list .Values.backup.stackGraph .Values.backup.elasticsearch) }}
{{- $targets = append $targets (trimSuffix "/" (printf "%s/%s" .bucketName (.s3Prefix | default ""))) }}
{{- end }}
{{- join " " $targets }}
{{- end }}

{{/*
The helm test (POSIX sh, the rclone image's busybox; no `$(`, which Kubernetes would try to
expand). rclone reads the endpoint and keys from RCLONE_S3_* env.
*/}}
{{- define "sts-backup.storage.testScript" -}}
set -eu
fail() { echo "helm test: $*" >&2; exit 1; }
probe=".sts-backup-helm-test-${HOSTNAME:-probe}"
printf 'sts-backup helm test %s\n' "${probe}" > /tmp/probe.want
for target in ${TEST_TARGETS}; do
  bucket="${target%%/*}"
  set -- --config "" --cache-dir /tmp/rclone-cache --retries 3 --low-level-retries 1 --contimeout 10s --timeout 30s
  rclone mkdir ":s3:${bucket}" "$@" || fail "${RCLONE_S3_ENDPOINT}: cannot reach or create bucket ${bucket} with the configured keys"
  rclone lsf ":s3:${bucket}" --max-depth 1 "$@" > /dev/null || fail "${RCLONE_S3_ENDPOINT}: cannot list bucket ${bucket}"
  rclone rcat ":s3:${target}/${probe}" "$@" < /tmp/probe.want || fail "cannot put ${target}/${probe}"
  rclone cat ":s3:${target}/${probe}" "$@" > /tmp/probe.got || fail "cannot get ${target}/${probe}"
  cmp -s /tmp/probe.want /tmp/probe.got || fail "${target}/${probe} read back differs from what was written"
  rclone deletefile ":s3:${target}/${probe}" "$@" || fail "cannot delete ${target}/${probe}"
  echo "helm test: ${target}: list, put, get, delete ok"
done
{{- end }}

{{/* Why this engine runs, one line for NOTES. */}}
{{- define "sts-backup.storage.engineReason" -}}
{{- $mode := include "sts-backup.storage.mode" . }}
{{- if ne .Values.minio.engine "auto" }}
{{- printf "chosen with minio.engine=%s" .Values.minio.engine }}
{{- else if ne $mode "local" }}
{{- "minio.engine=auto: rclone serves the gateway modes (MinIO removed its gateways in 2022)" }}
{{- else }}
{{- $existing := include "sts-backup.storage.existingEngine" . }}
{{- if $existing }}
{{- printf "minio.engine=auto: kept the server that wrote the existing volume %s" (include "sts-backup.storage.claimName" .) }}
{{- else }}
{{- "minio.engine=auto: a new volume gets rclone (maintained, plain files on the volume)" }}
{{- end }}
{{- end }}
{{- end }}
