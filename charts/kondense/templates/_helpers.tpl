{{/* Name of the chart, or nameOverride. */}}
{{- define "kondense.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: fullnameOverride, or the release name (+ chart name). */}}
{{- define "kondense.fullname" -}}
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

{{/* Labels that select the operator pod; never change them after an install. */}}
{{- define "kondense.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kondense.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "kondense.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kondense.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kondense
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "kondense.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kondense.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches: empty list means every namespace (rbac.scope=cluster). */}}
{{- define "kondense.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespaced" }}
{{- if not .Values.watchNamespaces }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: list the namespaces whose CompressionJobs the operator reconciles" }}
{{- end }}
{{- join "," .Values.watchNamespaces }}
{{- end }}
{{- end }}

{{/* crds.enabled and crds.keep, "true" or empty; unset means true, as when a release made by a
chart without them is upgraded with --reuse-values (which keeps the old chart's defaults). */}}
{{- define "kondense.crdsEnabled" -}}
{{- $crds := .Values.crds | default dict }}
{{- if or (not (hasKey $crds "enabled")) $crds.enabled }}true{{ end }}
{{- end }}

{{- define "kondense.crdsKeep" -}}
{{- $crds := .Values.crds | default dict }}
{{- if or (not (hasKey $crds "keep")) $crds.keep }}true{{ end }}
{{- end }}
