{{/* rollback-controller.fullname: the name of every object of this release. */}}
{{- define "rollback-controller.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* rollback-controller.selectorLabels: labels the Service and PDB select pods by. */}}
{{- define "rollback-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* rollback-controller.labels: the standard labels on every object. */}}
{{- define "rollback-controller.labels" -}}
{{ include "rollback-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: rollback-controller
app.kubernetes.io/part-of: llm-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* rollback-controller.secretName: the Secret with the webhook token and git credentials. */}}
{{- define "rollback-controller.secretName" -}}
{{- default (include "rollback-controller.fullname" .) .Values.secret.name }}
{{- end }}

{{/* rollback-controller.image: repository@digest (tag kept for humans). */}}
{{- define "rollback-controller.image" -}}
{{- $digest := required "image.digest must be set (sha256:...)" .Values.image.digest -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}@{{ $digest }}
{{- end }}
