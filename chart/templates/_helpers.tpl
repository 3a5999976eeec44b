{{/*
Names, labels and small shared helpers.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "sts-backup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix: fullnameOverride, else <release>-<name> unless the release name already holds the name. */}}
{{- define "sts-backup.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "sts-backup.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
<fullname>-<suffix> within a length limit: the prefix is shortened, the suffix is kept whole,
so two names never collide after truncation.
Usage: include "sts-backup.nameWithSuffix" (list . "suffix" 63)
*/}}
{{- define "sts-backup.nameWithSuffix" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $limit := index . 2 }}
{{- $prefix := include "sts-backup.fullname" $root | trunc (int (sub $limit (add1 (len $suffix)))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{/* Name of a regular object: <fullname>-<suffix>, at most 63 characters. */}}
{{- define "sts-backup.objectName" -}}
{{- include "sts-backup.nameWithSuffix" (list (index . 0) (index . 1) 63) }}
{{- end }}

{{/*
CronJob name: at most 52 characters, because the controller appends 11 characters
(-<unix minutes>) to name the Jobs it creates and a Job name is capped at 63.
*/}}
{{- define "sts-backup.cronJobName" -}}
{{- include "sts-backup.nameWithSuffix" (list (index . 0) (index . 1) 52) }}
{{- end }}

{{/* Chart label value. */}}
{{- define "sts-backup.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only (selectors are immutable). */}}
{{- define "sts-backup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sts-backup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels of every object. */}}
{{- define "sts-backup.labels" -}}
helm.sh/chart: {{ include "sts-backup.chart" . }}
{{ include "sts-backup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sts-backup
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: include "sts-backup.componentLabels" (list . "backup") */}}
{{- define "sts-backup.componentLabels" -}}
{{ include "sts-backup.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Image reference from {registry, repository, tag, digest}: include "sts-backup.image" (list $image $defaultTag) */}}
{{- define "sts-backup.image" -}}
{{- $img := index . 0 }}
{{- $tag := default (index . 1) $img.tag | toString }}
{{- $ref := $img.repository }}
{{- if $img.registry }}
{{- $ref = printf "%s/%s" $img.registry $img.repository }}
{{- end }}
{{- if $tag }}
{{- $ref = printf "%s:%s" $ref $tag }}
{{- end }}
{{- if $img.digest }}
{{- $ref = printf "%s@%s" $ref $img.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* The jobs image (sts-backup/jobs, tag defaults to appVersion). */}}
{{- define "sts-backup.jobsImage" -}}
{{- include "sts-backup.image" (list .Values.jobsImage .Chart.AppVersion) }}
{{- end }}

{{/* "true" when a store's export/import command (a list) writes or reads a {file}. */}}
{{- define "sts-backup.usesFile" -}}
{{- if contains "{file}" (join " " .) }}true{{ end }}
{{- end }}

{{/*
A store's backupNameTemplate (the argument) as a strftime template: surrounding whitespace trimmed and the StackState form
`$(date +FORMAT)` / `$(date -u +FORMAT)` (FORMAT optionally quoted) replaced by FORMAT, as the
binary does. Nothing is ever run by a shell; "sts-backup.nameTemplateProblem" refuses the rest.
*/}}
{{- define "sts-backup.backupNameTemplate" -}}
{{- $t := . | toString | trim }}
{{- regexReplaceAll "\\$\\(\\s*date (?:-u )?\\+['\"]*([^)]*?)['\"]*\\s*\\)" $t "${1}" }}
{{- end }}

{{/*
Why the translated name template would be refused by `stackgraph-backup` (empty when it is
accepted), by the binary's rules (jobs/core/src/naming.rs): literal text of letters, digits and
._+:=@,- only; strftime fields that never render a space, '/' or '%'; a name that cannot start
with '.', contain '..', end in .manifest.json or exceed 200 bytes. tests/chart/name_templates.tsv
holds the cases both must agree on.
*/}}
{{- define "sts-backup.nameTemplateProblem" -}}
{{- $format := . }}
{{- /* longest rendering of each accepted field (the binary renders at 1970, 2021-12-29 and 2099) */}}
{{- $width := dict "Y" 4 "C" 2 "y" 2 "m" 2 "b" 3 "h" 3 "B" 9 "d" 2 "a" 3 "A" 9 "w" 1 "u" 1 "U" 2 "W" 2 "G" 4 "g" 2 "V" 2 "j" 3 "F" 10 "H" 2 "I" 2 "M" 2 "S" 2 "P" 2 "p" 2 "T" 8 "R" 5 "X" 8 "s" 10 "f" 9 "z" 5 "Z" 3 "+" 35 "e" 2 "k" 2 "l" 2 }}
{{- $tokens := regexFindAll "%[-_0]?(?:\\.?[0-9]?f|:{1,3}z|#z|[a-zA-Z+%])|%.?|[^%]+" $format -1 }}
{{- $length := 0 }}
{{- $problem := "" }}
{{- if not $format }}
{{- $problem = "is empty" }}
{{- else if or (contains "$" $format) (contains "`" $format) }}
{{- $problem = "has shell syntax: only $(date +FORMAT) is understood (translated, never run by a shell)" }}
{{- end }}
{{- range $tokens }}
{{- if $problem }}
{{- else if not (hasPrefix "%" .) }}
{{- if not (regexMatch "^[A-Za-z0-9._+:=@,-]*$" .) }}
{{- $problem = printf "contains %q (allowed are letters, digits and ._+:=@,-)" (regexReplaceAll "[A-Za-z0-9._+:=@,-]" . "") }}
{{- end }}
{{- $length = add $length (len .) }}
{{- else if not (regexMatch "^%[-_0]?(?:\\.?[0-9]?f|:{1,3}z|#z|[a-zA-Z+%])$" .) }}
{{- $problem = printf "is not a valid strftime template (%q)" . }}
{{- else }}
{{- $spec := regexReplaceAll "^%[-_0]?" . "" }}
{{- $key := regexReplaceAll "^[.0-9:#]+" $spec "" }}
{{- if or (hasPrefix "%_" .) (and (has $spec (list "e" "k" "l")) (not (regexMatch "^%[-0]" .))) }}
{{- $problem = printf "has a space-padded field (%s) that renders a space at some times; use zero-padded fields such as %%Y%%m%%d-%%H%%M%%S" . }}
{{- else if not (hasKey $width $key) }}
{{- $problem = printf "has the field %s, which renders characters a name cannot hold (a space, '/', '%%' or a line break)" . }}
{{- else }}
{{- $length = add $length (add (get $width $key) (ternary 1 0 (hasPrefix "." $spec))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $problem }}
{{- else if hasPrefix "." $format }}
{{- $problem = "renders a name starting with '.'" }}
{{- else if contains ".." $format }}
{{- $problem = "renders a name containing '..'" }}
{{- else if hasSuffix ".manifest.json" $format }}
{{- $problem = "renders a name ending in .manifest.json (the commit marker of a backup)" }}
{{- else if gt $length 200 }}
{{- $problem = printf "can render names of %d bytes; at most 200 are allowed" $length }}
{{- end }}
{{- $problem }}
{{- end }}

{{/* True (non-empty) when the registration Job is needed. */}}
{{- define "sts-backup.es.registerEnabled" -}}
{{- $es := .Values.backup.elasticsearch }}
{{- if or $es.scheduled.enabled $es.restore.enabled }}true{{ end }}
{{- end }}

{{/* "true" when a rendered Job runs with --orchestrate (a store's restore template or backup CronJob, the Elasticsearch restore). */}}
{{- define "sts-backup.orchestrate.used" -}}
{{- $esr := .Values.backup.elasticsearch.restore -}}
{{- $used := and $esr.enabled $esr.orchestrate -}}
{{- $stores := dict -}}
{{- include "sts-backup.stores" (dict "root" . "out" $stores) -}}
{{- range $stores -}}
{{- if and .v.orchestrate.enabled (include "sts-backup.store.imageUsed" .) -}}
{{- $used = true -}}
{{- end -}}
{{- end -}}
{{- and .Values.backup.enabled $used | toString -}}
{{- end }}

{{- define "sts-backup.orchestrate.serviceAccountName" -}}
{{- include "sts-backup.objectName" (list . "orchestrate") -}}
{{- end }}
