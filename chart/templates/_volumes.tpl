{{/*
Volumes and mounts of the job pods: the storage credentials, /tmp, the stores' scratch space
and the Elasticsearch auth/CA Secrets.
*/}}

{{/* Where the storage Secret's `accesskey`/`secretkey` are mounted (env S3_CREDENTIALS_DIR). */}}
{{- define "sts-backup.credentialsDir" -}}
/etc/sts-backup/s3
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

{{/* Scratch volume for the {file} of a store's export/import (dict: root, scratch): an emptyDir, or a generic ephemeral PVC. */}}
{{- define "sts-backup.store.scratchVolume" -}}
{{- $scratch := .scratch -}}
- name: scratch
{{- if $scratch.ephemeralVolume.size }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "sts-backup.componentLabels" (list .root "scratch") | nindent 10 }}
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
