{{/*
Signing, trusted keys, encryption and Object Lock: which job gets which key, as files.
One rule here: the private signing key only reaches the backup Jobs, the age identities only
the restore Jobs, the public keys every reader. Nothing secret is ever rendered into values,
args or env values: Secrets are mounted read-only and their paths passed in env.
*/}}

{{- define "sts-backup.security.signingDir" -}}/etc/sts-backup/signing{{- end }}
{{- define "sts-backup.security.trustedDir" -}}/etc/sts-backup/trusted-keys{{- end }}
{{- define "sts-backup.security.trustedExtraDir" -}}/etc/sts-backup/trusted-keys-cm{{- end }}
{{- define "sts-backup.security.identityDir" -}}/etc/sts-backup/age{{- end }}

{{/* Name of the ConfigMap rendered from backup.signing.trustedKeys. */}}
{{- define "sts-backup.security.trustedConfigMapName" -}}
{{- include "sts-backup.objectName" (list . "trusted-keys") }}
{{- end }}

{{/* Comma-separated paths of every trusted public key (env STS_TRUSTED_KEYS); empty for none. */}}
{{- define "sts-backup.security.trustedPaths" -}}
{{- $s := .Values.backup.signing }}
{{- $paths := list }}
{{- range $name, $_ := $s.trustedKeys }}
{{- $paths = append $paths (printf "%s/%s" (include "sts-backup.security.trustedDir" $) $name) }}
{{- end }}
{{- if $s.trustedKeysConfigMap.name }}
{{- range $s.trustedKeysConfigMap.keys }}
{{- $paths = append $paths (printf "%s/%s" (include "sts-backup.security.trustedExtraDir" $) .) }}
{{- end }}
{{- end }}
{{- join "," $paths }}
{{- end }}

{{/*
Env, volumes and mounts of one kind of job pod, as YAML {env: [], volumes: [], mounts: []}.
dict: root, kind — backup (signs, encrypts, prunes: trusted keys), restore (trusted keys,
identities), or any reader: list, prune, replicate, monitor (trusted keys).
*/}}
{{- define "sts-backup.security" -}}
{{- $root := .root }}
{{- $b := $root.Values.backup }}
{{- $env := list }}
{{- $volumes := list }}
{{- $mounts := list }}
{{- if .kind }}
{{- with include "sts-backup.security.trustedPaths" $root }}
{{- $env = append $env (dict "name" "STS_TRUSTED_KEYS" "value" .) }}
{{- end }}
{{- if $b.signing.trustedKeys }}
{{- $volumes = append $volumes (dict "name" "trusted-keys" "configMap" (dict "name" (include "sts-backup.security.trustedConfigMapName" $root) "defaultMode" 292)) }}
{{- $mounts = append $mounts (dict "name" "trusted-keys" "mountPath" (include "sts-backup.security.trustedDir" $root) "readOnly" true) }}
{{- end }}
{{- if $b.signing.trustedKeysConfigMap.name }}
{{- $volumes = append $volumes (dict "name" "trusted-keys-cm" "configMap" (dict "name" $b.signing.trustedKeysConfigMap.name "defaultMode" 292)) }}
{{- $mounts = append $mounts (dict "name" "trusted-keys-cm" "mountPath" (include "sts-backup.security.trustedExtraDir" $root) "readOnly" true) }}
{{- end }}
{{- end }}
{{- if eq .kind "backup" }}
{{- with $b.signing.existingSecret }}
{{- $env = append $env (dict "name" "STS_SIGNING_KEY" "value" (printf "%s/%s" (include "sts-backup.security.signingDir" $root) $b.signing.key)) }}
{{- $volumes = append $volumes (dict "name" "signing-key" "secret" (dict "secretName" . "defaultMode" 288 "items" (list (dict "key" $b.signing.key "path" $b.signing.key)))) }}
{{- $mounts = append $mounts (dict "name" "signing-key" "mountPath" (include "sts-backup.security.signingDir" $root) "readOnly" true) }}
{{- end }}
{{- with $b.encryption.recipients }}
{{- $env = append $env (dict "name" "STS_ENCRYPT_TO" "value" (join "," .)) }}
{{- end }}
{{- end }}
{{- if eq .kind "restore" }}
{{- $id := $b.encryption.identities }}
{{- if $id.existingSecret }}
{{- $paths := list }}
{{- $items := list }}
{{- range $id.keys }}
{{- $paths = append $paths (printf "%s/%s" (include "sts-backup.security.identityDir" $root) .) }}
{{- $items = append $items (dict "key" . "path" .) }}
{{- end }}
{{- $env = append $env (dict "name" "STS_IDENTITY_FILE" "value" (join "," $paths)) }}
{{- $volumes = append $volumes (dict "name" "age-identities" "secret" (dict "secretName" $id.existingSecret "defaultMode" 288 "items" $items)) }}
{{- $mounts = append $mounts (dict "name" "age-identities" "mountPath" (include "sts-backup.security.identityDir" $root) "readOnly" true) }}
{{- end }}
{{- end }}
{{- toYaml (dict "env" $env "volumes" $volumes "mounts" $mounts) }}
{{- end }}

{{/* The Object Lock mode of a store's backups (the store's, else backup.objectLock.mode); empty for off. dict: root, s */}}
{{- define "sts-backup.store.objectLock" -}}
{{- $mode := .s.v.objectLock.mode | default .root.Values.backup.objectLock.mode }}
{{- if ne $mode "none" }}{{ $mode }}{{ end }}
{{- end }}

{{/* Why the signing, encryption and Object Lock values cannot work (messages, one per line). */}}
{{- define "sts-backup.security.problems" -}}
{{- $b := .Values.backup }}
{{- $stores := dict }}
{{- include "sts-backup.stores" (dict "root" . "out" $stores) }}
{{- $scheduled := list }}
{{- range $name, $s := $stores }}
{{- if $s.v.scheduled.enabled }}{{ $scheduled = append $scheduled $s.path }}{{ end }}
{{- end }}
{{- if and (include "sts-backup.security.trustedPaths" .) (not $b.signing.existingSecret) $scheduled }}
{{- printf "backup.signing.existingSecret: trusted keys are set, so every reader refuses unsigned backups, but the scheduled backups (%s) would write unsigned ones. Set backup.signing.existingSecret to the Secret holding the private key that matches one of the trusted keys.\n" (join ", " (sortAlpha $scheduled)) }}
{{- end }}
{{- if and $b.signing.trustedKeysConfigMap.name (empty $b.signing.trustedKeysConfigMap.keys) }}
{{- printf "backup.signing.trustedKeysConfigMap.keys: name the keys of ConfigMap %s that hold the public keys (e.g. [\"key-2026.pem\"]).\n" $b.signing.trustedKeysConfigMap.name }}
{{- end }}
{{- range $name, $pem := $b.signing.trustedKeys }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $name) }}
{{- printf "backup.signing.trustedKeys: %q is not a valid file name (letters, digits, '-', '_', '.').\n" $name }}
{{- end }}
{{- if not (contains "-----BEGIN PUBLIC KEY-----" (toString $pem)) }}
{{- printf "backup.signing.trustedKeys.%s: not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"); write the output of `openssl pkey -in signing-key.pem -pubout`. A private key never belongs in values: put it in the Secret named by backup.signing.existingSecret.\n" $name }}
{{- end }}
{{- end }}
{{- range $b.encryption.recipients }}
{{- if not (hasPrefix "age1" (toString .)) }}
{{- printf "backup.encryption.recipients: %q is not an age recipient (age1...); identities (AGE-SECRET-KEY-...) never belong in values: put them in the Secret named by backup.encryption.identities.existingSecret.\n" (trunc 12 (toString .)) }}
{{- end }}
{{- end }}
{{- if and $b.encryption.identities.existingSecret (empty $b.encryption.identities.keys) }}
{{- printf "backup.encryption.identities.keys: name the keys of Secret %s that hold the identity files.\n" $b.encryption.identities.existingSecret }}
{{- end }}
{{- $local := eq (include "sts-backup.storage.mode" .) "local" }}
{{- $rclone := eq (include "sts-backup.storage.engine" .) "rclone" }}
{{- range $name := include "sts-backup.store.order" $stores | fromJsonArray }}
{{- $s := index $stores $name }}
{{- $mode := include "sts-backup.store.objectLock" (dict "root" $ "s" $s) }}
{{- if and $mode $s.v.scheduled.enabled }}
{{- if not $s.v.scheduled.backupRetentionTimeDelta }}
{{- printf "%s.scheduled.backupRetentionTimeDelta: Object Lock (%s) locks each backup for as long as retention keeps it, so it needs a retention; set one (e.g. \"days = 30\") or turn the lock off for this store (%s.objectLock.mode=none).\n" $s.path $mode $s.path }}
{{- end }}
{{- if or $local $rclone }}
{{- printf "%s.objectLock.mode: %s needs the storage service to pass S3 Object Lock through, and this one cannot (%s): every backup would be refused (exit 2). Lock the off-site copy instead (backup.replicate.objectLock, written straight to the destination), or turn it off (%s.objectLock.mode=none, backup.objectLock.mode=\"\").\n" $s.path $mode (ternary "local mode keeps the backups on a PVC" "rclone serve s3 reports no Object Lock configuration for any bucket" $local) $s.path }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
