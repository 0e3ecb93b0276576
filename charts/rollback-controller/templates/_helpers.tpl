{{/* rollback-controller.fullname: the name of every object of this release. */}}
{{- define "rollback-controller.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* rollback-controller.selectorLabels: labels the Service and PDB select pods by. */}}
{{- define "rollback-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* rollback-controller.ownedSelectorLabels: labels only this chart writes, for selectors over other objects' own metadata (ServiceMonitor -> Service): Argo CD's label tracking sets app.kubernetes.io/instance on every object it syncs to the Application name (policies/manifests/tracking.rego). */}}
{{- define "rollback-controller.ownedSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{ .Values.labelDomain }}/instance: {{ .Release.Name }}
{{- end }}

{{/* rollback-controller.labels: the standard labels on every object. */}}
{{- define "rollback-controller.labels" -}}
{{ include "rollback-controller.selectorLabels" . }}
{{ .Values.labelDomain }}/instance: {{ .Release.Name }}
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

{{/* rollback-controller.argocdCA: "configMap" or "secret" when argocd.tls names a CA bundle, else empty. */}}
{{- define "rollback-controller.argocdCA" -}}
{{- $tls := .Values.argocd.tls -}}
{{- if $tls.caConfigMap.name }}configMap{{ else if $tls.caSecret.name }}secret{{ end }}
{{- end }}

{{/* rollback-controller.validate: an https Argo CD server needs a TLS decision (the controller's client verifies against the system CAs only; argocd-server's default certificate is self-signed). */}}
{{- define "rollback-controller.validate" -}}
{{- $a := .Values.argocd }}
{{- if and $a.tls.caConfigMap.name $a.tls.caSecret.name }}
{{- fail "argocd.tls.caConfigMap.name and argocd.tls.caSecret.name are both set: name one CA bundle" }}
{{- end }}
{{- $ca := include "rollback-controller.argocdCA" . }}
{{- if and $ca $a.tls.insecure }}
{{- fail "argocd.tls.insecure is true and a CA bundle is named (argocd.tls.caConfigMap/caSecret): verify against the bundle, or opt out, not both" }}
{{- end }}
{{- /* ARGOCD_SERVER without a scheme means https to the controller (pipeline/gitops/argocd_sync.py). */}}
{{- $https := and $a.server (not (hasPrefix "http://" $a.server)) }}
{{- if and $https (not $ca) (not $a.tls.insecure) }}
{{- fail (printf "argocd.server %s is https but argocd.tls makes no decision: the controller verifies argocd-server against the system CAs only, and argocd-server's default certificate is self-signed. Set argocd.tls.caConfigMap.name (or caSecret.name) to a ConfigMap/Secret in this namespace holding the PEM bundle that verifies it (docs/rollback.md, \"TLS to argocd-server\"), or argocd.tls.insecure=true to skip verification" $a.server) }}
{{- end }}
{{- end }}

{{/* rollback-controller.monitoringLabels: labels a Prometheus instance selects ServiceMonitors/PrometheusRules by (monitoring.selectorLabels, then the object's own extra labels); call with (dict "ctx" $ "extra" map). */}}
{{- define "rollback-controller.monitoringLabels" -}}
{{- $labels := merge (deepCopy (default dict .extra)) (deepCopy (default dict .ctx.Values.monitoring.selectorLabels)) -}}
{{- with $labels }}
{{- toYaml . }}
{{- end }}
{{- end }}
