{{/*
Names. The release's objects are "<fullname>-controller" and "<fullname>-agent"; with the
release called "faultline", fullname is just "faultline".
*/}}
{{- define "faultline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "faultline.fullname" -}}
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

{{/* "<fullname>-controller", "<fullname>-agent": leaves room for the suffix within 63. */}}
{{- define "faultline.controller.fullname" -}}
{{- printf "%s-controller" (include "faultline.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{- define "faultline.agent.fullname" -}}
{{- printf "%s-agent" (include "faultline.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "faultline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "faultline.labels" -}}
helm.sh/chart: {{ include "faultline.chart" . }}
{{ include "faultline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: faultline
{{- end }}

{{- define "faultline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faultline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "faultline.controller.labels" -}}
{{ include "faultline.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "faultline.controller.selectorLabels" -}}
{{ include "faultline.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "faultline.agent.labels" -}}
{{ include "faultline.labels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "faultline.agent.selectorLabels" -}}
{{ include "faultline.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "faultline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The env every faultline process gets: who and where it is (downward API) and the log filter.
*/}}
{{- define "faultline.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: FAULTLINE_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}
