{{/* llm-service.name: the chart name, or nameOverride. */}}
{{- define "llm-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* llm-service.fullname: prefix for every resource name (release name, plus chart name when different). */}}
{{- define "llm-service.fullname" -}}
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

{{/* llm-service.chart: chart name and version for the helm.sh/chart label. */}}
{{- define "llm-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* llm-service.selectorLabels: the immutable labels the Deployment selects its pods on; Services, the NetworkPolicy, the PDB and the zone spread select pods on them too (pod labels are never rewritten by Argo CD, see ownedSelectorLabels). */}}
{{- define "llm-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* llm-service.ownedSelectorLabels: labels only this chart writes, for selectors over other objects' own metadata (ServiceMonitor -> Service). Argo CD's label tracking (resourceTrackingMethod label or annotation+label) sets app.kubernetes.io/instance on every object it syncs to the Application name (argo-cd util/argo/resource_tracking.go SetAppInstance -> util/kube/kube.go SetAppInstanceLabel), so a Service of Application llm-service-prod carries instance llm-service-prod, not the release name; pod templates keep theirs (kube.go: only the legacy app-name key is copied into them). */}}
{{- define "llm-service.ownedSelectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-service.name" . }}
{{ .Values.labelDomain }}/instance: {{ .Release.Name }}
{{- end }}

{{/* llm-service.labels: standard labels for every object; call with (dict "ctx" $ "component" "x"). */}}
{{- define "llm-service.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "llm-service.chart" $ctx }}
{{ include "llm-service.selectorLabels" $ctx }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | replace "+" "_" | trunc 63 | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: {{ $ctx.Values.partOf }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{ $ctx.Values.labelDomain }}/environment: {{ $ctx.Values.environment }}
{{ $ctx.Values.labelDomain }}/instance: {{ $ctx.Release.Name }}
{{- end }}

{{/* llm-service.image: repository@digest when a digest is pinned, else repository:tag (tag defaults to appVersion); call with (dict "ctx" $ "image" .Values.x.image "what" "x"). */}}
{{- define "llm-service.image" -}}
{{- $img := .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else if .ctx.Values.images.requireDigests }}
{{- fail (printf "%s.image.digest must be set (images.requireDigests is true)" .what) }}
{{- else }}
{{- $tag := default (.ctx.Chart.AppVersion | replace "+" "_") $img.tag }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s.image.tag must not be latest" .what) }}
{{- end }}
{{- printf "%s:%s" $img.repository $tag }}
{{- end }}
{{- end }}

{{/* llm-service.modelArtifact: the pinned model artifact reference (<repository>@<digest>) when vllm.model.source is artifact, else empty (hub). */}}
{{- define "llm-service.modelArtifact" -}}
{{- $m := .Values.vllm.model }}
{{- if eq (default "hub" $m.source) "artifact" }}
{{- $a := $m.artifact }}
{{- $repo := required "vllm.model.artifact.repository must be set (vllm.model.source is artifact)" $a.repository }}
{{- $digest := required "vllm.model.artifact.digest must be set (vllm.model.source is artifact: the artifact is pulled by digest)" $a.digest }}
{{- $content := required "vllm.model.artifact.contentDigest must be set (vllm.model.source is artifact: the init container verifies it)" $a.contentDigest }}
{{- printf "%s@%s" $repo $digest }}
{{- end }}
{{- end }}

{{/* llm-service.serviceAccountName: the ServiceAccount the pods run as. */}}
{{- define "llm-service.serviceAccountName" -}}
{{- default (include "llm-service.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* llm-service.gatewaySecretName: the Secret with the gateway's secret settings. */}}
{{- define "llm-service.gatewaySecretName" -}}
{{- default (printf "%s-gateway" (include "llm-service.fullname" .)) .Values.gateway.secret.name }}
{{- end }}

{{/* llm-service.scope: PromQL label matchers selecting this release's series. */}}
{{- define "llm-service.scope" -}}
namespace="{{ .Release.Namespace }}", pod=~"{{ include "llm-service.fullname" . }}-.*"
{{- end }}

{{/* llm-service.gpuScope: PromQL matchers selecting this release's GPUs on DCGM exporter series (the workload's namespace/pod arrive as monitoring.gpuMetrics.namespaceLabel/podLabel). */}}
{{- define "llm-service.gpuScope" -}}
{{- $g := .Values.monitoring.gpuMetrics -}}
{{ $g.namespaceLabel }}="{{ .Release.Namespace }}", {{ $g.podLabel }}=~"{{ include "llm-service.fullname" . }}-.*"
{{- end }}

{{/* llm-service.monitoringLabels: labels a Prometheus instance selects ServiceMonitors/PrometheusRules by (selectorLabels, then the object's own extra labels); call with (dict "ctx" $ "extra" map). */}}
{{- define "llm-service.monitoringLabels" -}}
{{- $labels := merge (deepCopy (default dict .extra)) (deepCopy (default dict .ctx.Values.monitoring.selectorLabels)) -}}
{{- with $labels }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* llm-service.containerSecurityContext: the hardened container security context shared by both containers. */}}
{{- define "llm-service.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* llm-service.durationSeconds: a duration of whole s, m or h (Gateway API style, e.g. 300s, 5m) in seconds; call with (dict "value" "300s" "what" "httpRoute.requestTimeout"). */}}
{{- define "llm-service.durationSeconds" -}}
{{- $v := toString .value }}
{{- if regexMatch "^[0-9]+s$" $v }}{{ trimSuffix "s" $v | int }}
{{- else if regexMatch "^[0-9]+m$" $v }}{{ mul (trimSuffix "m" $v | int) 60 }}
{{- else if regexMatch "^[0-9]+h$" $v }}{{ mul (trimSuffix "h" $v | int) 3600 }}
{{- else }}{{ fail (printf "%s must be a whole number of s, m or h (got %s)" .what $v) }}
{{- end }}
{{- end }}

{{/* llm-service.validate: render-time checks across values that the schema cannot express (model access, drain timing). */}}
{{- define "llm-service.validate" -}}
{{- $v := .Values }}
{{- if and $v.vllm.model.gated (not $v.vllm.hfToken.secretName) (ne (default "hub" $v.vllm.model.source) "artifact") }}
{{- fail (printf "vllm.model.gated is true: %s is a gated Hugging Face model and this release has no token source; set vllm.hfToken.secretName to a Secret holding a token with access (key vllm.hfToken.secretKey), or vllm.model.gated=false when the weights come from a mirror that needs none" $v.vllm.model.id) }}
{{- end }}
{{- $stream := int $v.scheduling.maxStreamSeconds }}
{{- if lt (int $v.vllm.preStopSleepSeconds) (int $v.gateway.preStopSleepSeconds) }}
{{- fail (printf "vllm.preStopSleepSeconds (%d) must be >= gateway.preStopSleepSeconds (%d): vLLM must outlive the gateway's drain" (int $v.vllm.preStopSleepSeconds) (int $v.gateway.preStopSleepSeconds)) }}
{{- end }}
{{- $need := add $v.vllm.preStopSleepSeconds $stream }}
{{- if lt (int $v.scheduling.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "scheduling.terminationGracePeriodSeconds (%d) must be >= vllm.preStopSleepSeconds + scheduling.maxStreamSeconds (%d): the longest stream must finish before SIGKILL" (int $v.scheduling.terminationGracePeriodSeconds) (int $need)) }}
{{- end }}
{{- if and $v.scheduling.spot.enabled (le (int $v.scheduling.spot.terminationGracePeriodSeconds) (int $v.vllm.preStopSleepSeconds)) }}
{{- fail (printf "scheduling.spot.terminationGracePeriodSeconds (%d) must be > vllm.preStopSleepSeconds (%d)" (int $v.scheduling.spot.terminationGracePeriodSeconds) (int $v.vllm.preStopSleepSeconds)) }}
{{- end }}
{{- if and $v.ingress.enabled (gt (int $v.ingress.proxyTimeoutSeconds) $stream) }}
{{- fail (printf "ingress.proxyTimeoutSeconds (%d) must be <= scheduling.maxStreamSeconds (%d): a stream the proxy allows must fit the drain" (int $v.ingress.proxyTimeoutSeconds) $stream) }}
{{- end }}
{{- if $v.httpRoute.enabled }}
{{- $rt := include "llm-service.durationSeconds" (dict "value" $v.httpRoute.requestTimeout "what" "httpRoute.requestTimeout") | int }}
{{- if gt $rt $stream }}
{{- fail (printf "httpRoute.requestTimeout (%s) must be <= scheduling.maxStreamSeconds (%d): a stream the route allows must fit the drain" $v.httpRoute.requestTimeout $stream) }}
{{- end }}
{{- end }}
{{- end }}

{{/* llm-service.rolloutRouter: how a rollout splits traffic: `gatewayAPI` (the Argo Rollouts Gateway API plugin on the chart's HTTPRoute; needs a rollout.surge budget, the canary's pods come up before stable's go), `replicas` (replica ratio, maxSurge rollout.surge) or "" (no rollout). */}}
{{- define "llm-service.rolloutRouter" -}}
{{- if .Values.rollout.enabled }}
{{- if and .Values.httpRoute.enabled (gt (int .Values.rollout.surge) 0) }}gatewayAPI{{ else }}replicas{{ end }}
{{- end }}
{{- end }}

{{/* llm-service.workloadRef: apiVersion/kind/name of the model-serving workload (the Rollout when rollout.enabled), for scaleTargetRef. */}}
{{- define "llm-service.workloadRef" -}}
{{- if .Values.rollout.enabled -}}
apiVersion: argoproj.io/v1alpha1
kind: Rollout
{{- else -}}
apiVersion: apps/v1
kind: Deployment
{{- end }}
name: {{ include "llm-service.fullname" . }}
{{- end }}
