{{- define "tunegate.labels" -}}
app.kubernetes.io/name: tunegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tunegate.selector" -}}
app.kubernetes.io/name: tunegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tunegate.fullname" -}}
{{- if contains "tunegate" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-tunegate" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* Namespaces that get trainer ServiceAccounts (and, when listed, Roles). */}}
{{- define "tunegate.trainerNamespaces" -}}
{{- $namespaces := list .Release.Namespace -}}
{{- range .Values.watchNamespaces }}{{ if not (has . $namespaces) }}{{ $namespaces = append $namespaces . }}{{ end }}{{ end -}}
{{- join "," $namespaces -}}
{{- end -}}
