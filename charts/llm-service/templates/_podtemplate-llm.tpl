{{/* llm-service.podTemplate: the model-serving pod template (`template:` at two spaces), shared by the Deployment and,
with rollout.enabled, the Argo Rollouts Rollout (rollout-llm.yaml): one pod spec whichever controller runs it. */}}
{{- define "llm-service.podTemplate" -}}
{{- $fullname := include "llm-service.fullname" . }}
{{- $spot := .Values.scheduling.spot }}
{{- $model := required "vllm.model.id must be set" .Values.vllm.model.id }}
{{- $revision := required "vllm.model.revision must be set (pin the model version)" .Values.vllm.model.revision }}
{{- include "llm-service.validate" . }}
{{- $home := "/home/vllm" }}
{{- $artifact := include "llm-service.modelArtifact" . }}
{{- $cache := printf "%s/.cache" $home }}
  template:
    metadata:
      labels:
        {{- include "llm-service.labels" (dict "ctx" . "component" "server") | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/configmap-gateway.yaml") . | sha256sum }}
        checksum/rbac: {{ include (print $.Template.BasePath "/configmap-rbac.yaml") . | sha256sum }}
        {{ .Values.labelDomain }}/release-id: {{ .Values.release.id | quote }}
        {{ .Values.labelDomain }}/release-commit: {{ .Values.release.commit | quote }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "llm-service.serviceAccountName" . }}
      # The pods never talk to the Kubernetes API.
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with .Values.images.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with .Values.scheduling.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $spot.enabled | ternary $spot.terminationGracePeriodSeconds .Values.scheduling.terminationGracePeriodSeconds }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      {{- with .Values.scheduling.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or .Values.scheduling.tolerations $spot.enabled }}
      tolerations:
        {{- with .Values.scheduling.tolerations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- if $spot.enabled }}
        - key: {{ $spot.taint.key }}
          operator: Equal
          value: {{ $spot.taint.value | quote }}
          effect: {{ $spot.taint.effect }}
        {{- end }}
      {{- end }}
      {{- if or .Values.scheduling.affinity $spot.enabled }}
      affinity:
        {{- with .Values.scheduling.affinity }}
        {{- toYaml (omit . "nodeAffinity") | nindent 8 }}
        {{- end }}
        {{- $nodeAffinity := default dict .Values.scheduling.affinity.nodeAffinity }}
        {{- if or $nodeAffinity $spot.enabled }}
        nodeAffinity:
          {{- with $nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution }}
          requiredDuringSchedulingIgnoredDuringExecution:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if or $nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution $spot.enabled }}
          preferredDuringSchedulingIgnoredDuringExecution:
            {{- with $nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- if $spot.enabled }}
            # Prefer spot capacity but keep on-demand nodes as a fallback when spot is reclaimed.
            - weight: {{ $spot.weight }}
              preference:
                matchExpressions:
                  - key: {{ $spot.nodeLabel.key }}
                    operator: In
                    values: [{{ $spot.nodeLabel.value | quote }}]
            {{- end }}
          {{- end }}
        {{- end }}
      {{- end }}
      {{- if .Values.scheduling.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ .Values.scheduling.topologySpread.maxSkew }}
          topologyKey: {{ .Values.scheduling.topologySpread.topologyKey }}
          whenUnsatisfiable: {{ .Values.scheduling.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "llm-service.selectorLabels" . | nindent 14 }}
      {{- end }}
      {{- if $artifact }}
      initContainers:
        # The pinned model artifact: copied into the model volume and verified against the release's content
        # digest before vLLM starts (charts/llm-service/files/model-fetch.sh); a mismatch fails the pod.
        - name: model-fetch
          image: {{ $artifact }}
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c", {{ regexReplaceAll "(?m)^#.*\n" (.Files.Get "files/model-fetch.sh") "" | quote }}]
          env:
            - name: MODEL_SRC
              value: /model
            - name: MODEL_DST
              value: /mnt/model
            - name: MODEL_CONTENT_DIGEST
              value: {{ .Values.vllm.model.artifact.contentDigest | quote }}
          resources:
            {{- toYaml .Values.vllm.model.artifact.resources | nindent 12 }}
          securityContext:
            {{- include "llm-service.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: model
              mountPath: /mnt/model
      {{- end }}
      containers:
        - name: gateway
          image: {{ include "llm-service.image" (dict "ctx" . "image" .Values.gateway.image "what" "gateway") }}
          imagePullPolicy: {{ .Values.gateway.image.pullPolicy }}
          {{- if eq (int .Values.gateway.port) (int .Values.gateway.internalPort) }}
          {{- fail "gateway.internalPort must differ from gateway.port (metrics and probes stay off the API port)" }}
          {{- end }}
          command: ["python", "-m", "app.gateway", "--host", "0.0.0.0", "--port", {{ .Values.gateway.port | quote }}, "--internal-port", {{ .Values.gateway.internalPort | quote }}]
          ports:
            # The API: the only port behind the Service, the Ingress and the HTTPRoute.
            - name: http
              containerPort: {{ .Values.gateway.port }}
              protocol: TCP
            # /metrics, /readyz, /healthz: the kubelet's probes and Prometheus only.
            - name: internal
              containerPort: {{ .Values.gateway.internalPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $fullname }}-gateway
          env:
            - name: GATEWAY_AUDIT_HASH_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "llm-service.gatewaySecretName" . }}
                  key: {{ .Values.gateway.secret.auditHashKeyKey }}
            # The release in the pod template itself, not only in the shared ConfigMap: during a canary a
            # restarted stable pod must keep labelling its metrics with the stable release.
            - name: GATEWAY_RELEASE
              value: {{ .Values.release.id | default "unknown" | quote }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: internal
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: internal
            periodSeconds: 10
            failureThreshold: 3
          lifecycle:
            preStop:
              # Keep serving until the endpoint is removed everywhere, then drain on SIGTERM.
              sleep:
                seconds: {{ .Values.gateway.preStopSleepSeconds }}
          resources:
            {{- toYaml .Values.gateway.resources | nindent 12 }}
          securityContext:
            {{- include "llm-service.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: rbac
              mountPath: /etc/gateway
              readOnly: true
            - name: gateway-tmp
              mountPath: /tmp
        - name: vllm
          image: {{ include "llm-service.image" (dict "ctx" . "image" .Values.vllm.image "what" "vllm") }}
          imagePullPolicy: {{ .Values.vllm.image.pullPolicy }}
          command: ["python3", "-m", "vllm.entrypoints.openai.api_server"]
          args:
            - --host=0.0.0.0
            - --port={{ .Values.vllm.port }}
            {{- if $artifact }}
            - --model={{ .Values.vllm.model.artifact.mountPath }}
            {{- else }}
            - --model={{ $model }}
            - --revision={{ $revision }}
            {{- end }}
            - --served-model-name={{ .Values.vllm.model.servedModelName }}
            - --tensor-parallel-size={{ .Values.vllm.engine.tensorParallelSize }}
            - --max-model-len={{ .Values.vllm.engine.maxModelLen }}
            - --max-num-seqs={{ .Values.vllm.engine.maxNumSeqs }}
            - --max-num-batched-tokens={{ .Values.vllm.engine.maxNumBatchedTokens }}
            - --gpu-memory-utilization={{ .Values.vllm.engine.gpuMemoryUtilization }}
            {{- with .Values.vllm.engine.quantization }}
            - --quantization={{ . }}
            {{- end }}
            {{- if .Values.vllm.engine.enablePrefixCaching }}
            - --enable-prefix-caching
            {{- end }}
            {{- range .Values.vllm.engine.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          ports:
            - name: vllm
              containerPort: {{ .Values.vllm.port }}
              protocol: TCP
          env:
            # Root filesystem is read-only: every path vLLM, Hugging Face, torch, triton and CUDA
            # write resolves to a mounted volume. HOME and the cache root are the image's
            # (app/Dockerfile, target vllm); $HOME (with ~/.cache, ~/.config, ~/.triton) is an
            # emptyDir, the weights live in the model volume, /tmp and /dev/shm are emptyDirs.
            - name: HOME
              value: {{ $home }}
            - name: XDG_CACHE_HOME
              value: {{ $cache }}
            - name: VLLM_CACHE_ROOT
              value: {{ $cache }}/vllm
            - name: VLLM_CONFIG_ROOT
              value: {{ $cache }}/vllm-config
            - name: TORCHINDUCTOR_CACHE_DIR
              value: {{ $cache }}/torchinductor
            - name: TRITON_CACHE_DIR
              value: {{ $cache }}/triton
            - name: CUDA_CACHE_PATH
              value: {{ $cache }}/nv
            - name: HF_HOME
              value: /models/cache
            - name: TMPDIR
              value: /tmp
            - name: VLLM_NO_USAGE_STATS
              value: "1"
            - name: DO_NOT_TRACK
              value: "1"
            {{- if $artifact }}
            # The weights come from the artifact: no hub access at all.
            - name: HF_HUB_OFFLINE
              value: "1"
            {{- end }}
            {{- with and (not $artifact) .Values.vllm.hfToken.secretName }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $.Values.vllm.hfToken.secretKey }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /health
              port: vllm
            periodSeconds: {{ .Values.vllm.startupProbe.periodSeconds }}
            failureThreshold: {{ .Values.vllm.startupProbe.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /health
              port: vllm
            periodSeconds: 10
            failureThreshold: 3
          livenessProbe:
            httpGet:
              path: /health
              port: vllm
            periodSeconds: 15
            timeoutSeconds: 5
            failureThreshold: 4
          lifecycle:
            preStop:
              # Keep serving the gateway's in-flight streams until the gateway has drained and
              # stopped (vllm.preStopSleepSeconds >= gateway.preStopSleepSeconds, validated).
              sleep:
                seconds: {{ .Values.vllm.preStopSleepSeconds }}
          resources:
            {{- toYaml .Values.vllm.resources | nindent 12 }}
          securityContext:
            {{- include "llm-service.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- if $artifact }}
            - name: model
              mountPath: {{ .Values.vllm.model.artifact.mountPath }}
              readOnly: true
            {{- end }}
            - name: model-cache
              mountPath: /models/cache
            - name: vllm-home
              mountPath: {{ $home }}
            - name: dshm
              mountPath: /dev/shm
            - name: vllm-tmp
              mountPath: /tmp
      volumes:
        - name: rbac
          configMap:
            name: {{ $fullname }}-rbac
        - name: gateway-tmp
          emptyDir:
            sizeLimit: 64Mi
        - name: vllm-tmp
          emptyDir:
            sizeLimit: {{ .Values.vllm.tmpSizeLimit }}
        - name: vllm-home
          emptyDir:
            sizeLimit: {{ .Values.vllm.homeSizeLimit }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ .Values.vllm.shmSize }}
        {{- if $artifact }}
        - name: model
          emptyDir:
            sizeLimit: {{ .Values.vllm.model.artifact.sizeLimit }}
        {{- end }}
        - name: model-cache
          {{- if eq .Values.vllm.modelCache.type "pvc" }}
          persistentVolumeClaim:
            claimName: {{ $fullname }}-model-cache
          {{- else }}
          emptyDir:
            sizeLimit: {{ .Values.vllm.modelCache.size }}
          {{- end }}
{{- end }}
