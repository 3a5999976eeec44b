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

{{/* The monitor's config file (JSON): one store per scheduled backup, and Elasticsearch. */}}
{{- define "sts-backup.monitor.config" -}}
{{- $b := .Values.backup }}
{{- $m := $b.monitor }}
{{- $stores := list }}
{{- if $b.stackGraph.scheduled.enabled }}
{{- $sg := $b.stackGraph.scheduled }}
{{- $stores = append $stores (dict
  "name" "stackgraph"
  "storage" (include "sts-backup.stackGraph.storageUrl" .)
  "schedule" $sg.schedule
  "timeZone" ($sg.timeZone | default "Etc/UTC")
  "grace" $m.grace
  "verifyEvery" $m.verifyEvery) }}
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
