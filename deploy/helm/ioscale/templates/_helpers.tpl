{{/* Names and labels shared by the templates. */}}

{{- define "ioscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ioscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ioscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ioscale.commonLabels" -}}
helm.sh/chart: {{ include "ioscale.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ioscale.labels" -}}
{{ include "ioscale.commonLabels" . }}
{{ include "ioscale.selectorLabels" . }}
{{- end }}

{{- define "ioscale.redisLabels" -}}
{{ include "ioscale.commonLabels" . }}
{{ include "ioscale.redisSelectorLabels" . }}
{{- end }}

{{- define "ioscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ioscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{- define "ioscale.redisName" -}}
{{- printf "%s-redis" (include "ioscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ioscale.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ioscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "ioscale.adminName" -}}
{{- printf "%s-admin" (include "ioscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The admin Service's own labels: what the ServiceMonitor selects (the node Service has none
of them but the same name and instance, so it is never scraped on a port it does not have). */}}
{{- define "ioscale.adminSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ioscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: admin
{{- end }}

{{- define "ioscale.adminLabels" -}}
{{ include "ioscale.commonLabels" . }}
{{ include "ioscale.adminSelectorLabels" . }}
{{- end }}

{{/* Where the pods find the JWT secret (a file: a variable would show in `kubectl describe`). */}}
{{- define "ioscale.jwtSecretDir" -}}
/etc/ioscale/jwt
{{- end }}

{{/* A secret value: the one given in values, else the one the installed Secret holds (so an
upgrade keeps what the install generated), else a new random one. Arguments: the given value,
the installed Secret's data (a dict, empty on install and under helm template), its key, the
length to generate. */}}
{{- define "ioscale.secretValue" -}}
{{- $given := index . 0 }}
{{- $installed := index . 1 }}
{{- $key := index . 2 }}
{{- if $given }}
{{- $given }}
{{- else if index $installed $key }}
{{- index $installed $key | b64dec }}
{{- else }}
{{- randAlphaNum (index . 3) }}
{{- end }}
{{- end }}

{{/* The Secret with `api-key`, `redis-url` and `jwt-secret`: the user's or the chart's. */}}
{{- define "ioscale.secretName" -}}
{{- default (include "ioscale.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* The Redis URL the chart's Secret holds. */}}
{{- define "ioscale.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379" (include "ioscale.redisName" .) }}
{{- else }}
{{- required "externalRedis.url is required when redis.enabled is false (or set existingSecret)" .Values.externalRedis.url }}
{{- end }}
{{- end }}
