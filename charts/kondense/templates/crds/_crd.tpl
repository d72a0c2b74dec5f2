{{- /*
A CRD of the chart as a template (the cert-manager pattern), so that `helm upgrade` updates it:
Helm installs files in crds/ once and never upgrades them. Its text is files/crds/<file>, a
byte copy of the generated crds/<file> (`make chart-sync-crd`). Called with
(dict "root" . "file" "compressionjob.yaml").
*/ -}}
{{- define "kondense.crd" }}
{{- $root := .root }}
{{- $file := printf "files/crds/%s" .file }}
{{- with $root }}
{{- $crd := .Files.Get $file | fromYaml }}
{{- if not $crd.spec }}
{{- fail (printf "%s is missing or not a CRD: run `make chart-sync-crd`" $file) }}
{{- end }}
apiVersion: {{ $crd.apiVersion }}
kind: {{ $crd.kind }}
metadata:
  name: {{ $crd.metadata.name }}
  labels:
    helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
    app.kubernetes.io/name: {{ include "kondense.name" . }}
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    app.kubernetes.io/part-of: kondense
  {{- if include "kondense.crdsKeep" . }}
  annotations:
    # helm uninstall, and an upgrade to crds.enabled=false, leave the CRD: deleting it would
    # delete every resource of its kind in the cluster.
    helm.sh/resource-policy: keep
  {{- end }}
spec:
  {{- toYaml $crd.spec | nindent 2 }}
{{- end }}
{{- end }}
