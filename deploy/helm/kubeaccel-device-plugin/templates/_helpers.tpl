{{/* The chart's name, or nameOverride. */}}
{{- define "kubeaccel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the chart's name when it already carries the release's
(release "kubeaccel" -> kubeaccel-device-plugin), else <release>-<chart>.
*/}}
{{- define "kubeaccel.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "kubeaccel.name" . }}
{{- if or (contains $name .Release.Name) (hasPrefix .Release.Name $name) }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubeaccel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeaccel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubeaccel.labels" -}}
{{ include "kubeaccel.selectorLabels" . }}
app.kubernetes.io/component: device-plugin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kubeaccel.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* "true" when any configured resource asks for CDI: only then is the spec dir mounted. */}}
{{- define "kubeaccel.cdiEnabled" -}}
{{- range .Values.config.resources }}{{ if .cdi }}true{{ end }}{{ end }}
{{- end }}

{{- define "kubeaccel.metricsService" -}}
{{- if and .Values.metrics.enabled (or .Values.metrics.service.enabled .Values.serviceMonitor.enabled) }}true{{ end }}
{{- end }}
