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

{{/* The Secret with `api-key` and `redis-url`: the user's or the chart's. */}}
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
