{{/*
The backup monitor: what it watches (rendered from the same values as the CronJobs, so the
schedule it judges is the schedule that runs) and its names.
*/}}

{{- define "sts-backup.monitor.enabled" -}}
{{- if and .Values.backup.enabled .Values.backup.monitor.enabled }}true{{ end }}
{{- end }}

{{- define "sts-backup.monitor.fullname" -}}
{{ include "sts-backup.nameWithSuffix" (list . "monitor" 63) }}
{{- end }}

{{/* The monitor's config file (JSON): every store with scheduled backups, and Elasticsearch. */}}
{{- define "sts-backup.monitor.config" -}}
{{- $b := .Values.backup }}
{{- $m := $b.monitor }}
{{- $stores := list }}
{{- $all := dict }}
{{- include "sts-backup.stores" (dict "root" . "out" $all) }}
{{- range $name := include "sts-backup.store.order" $all | fromJsonArray }}
{{- $s := index $all $name }}
{{- if $s.v.scheduled.enabled }}
{{- $stores = append $stores (dict
  "name" $name
  "storage" (include "sts-backup.store.storageUrl" $s)
  "schedule" $s.v.scheduled.schedule
  "timeZone" ($s.v.scheduled.timeZone | default "Etc/UTC")
  "grace" $m.grace
  "verifyEvery" $m.verifyEvery) }}
{{- end }}
{{- end }}
{{- $config := dict "stores" $stores }}
{{- if $b.elasticsearch.scheduled.enabled }}
{{- $_ := set $config "elasticsearch" (dict
  "repository" $b.elasticsearch.snapshotRepositoryName
  "policy" $b.elasticsearch.scheduled.snapshotPolicyName
  "grace" $m.grace) }}
{{- end }}
{{- toJson $config }}
{{- end }}
