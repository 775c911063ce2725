{{/*
Labels of every object. Call with (dict "ctx" $ "component" "recommender"); component may be
empty. No Helm-specific labels, so the chart renders what deploy/kustomize/base holds.
*/}}
{{- define "tailor.labels" -}}
app.kubernetes.io/name: tailor
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: tailor
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Selector labels of a component's pods. Call with (dict "ctx" $ "component" "recommender").
*/}}
{{- define "tailor.selectorLabels" -}}
app.kubernetes.io/name: tailor
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The image of both binaries.
*/}}
{{- define "tailor.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Pod-level settings shared by both Deployments. Call with (dict "ctx" $ "values" .Values.updater).
*/}}
{{- define "tailor.podSettings" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/*
Container settings shared by both binaries: downward-API env, the admin port and its probes.
*/}}
{{- define "tailor.containerCommon" -}}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
ports:
  - name: admin
    containerPort: 8080
    protocol: TCP
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 5
  periodSeconds: 20
  failureThreshold: 3
{{- end }}

{{/*
The container securityContext of both binaries.
*/}}
{{- define "tailor.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/*
Without leader election every replica would write: allow only one.
*/}}
{{- define "tailor.checkReplicas" -}}
{{- if and (not .Values.leaderElection.enabled) (or (gt (int .Values.recommender.replicas) 1) (gt (int .Values.updater.replicas) 1)) }}
{{- fail "leaderElection.enabled=false needs recommender.replicas and updater.replicas of 1: without a leader every replica would write" }}
{{- end }}
{{- end }}

{{/*
The flags both binaries take the same way.
*/}}
{{- define "tailor.commonArgs" -}}
- --admin-addr=0.0.0.0:8080
- --leader-election={{ .Values.leaderElection.enabled }}
- {{ printf "--log=%s" .Values.logLevel | quote }}
{{- end }}

{{/*
Checks the prometheus values. Call with $.
*/}}
{{- define "tailor.checkPrometheus" -}}
{{- $p := .Values.prometheus }}
{{- if and $p.bearerToken.secretName (or $p.basicAuth.user $p.basicAuth.passwordSecretName) }}
{{- fail "prometheus: use either bearerToken or basicAuth, not both" }}
{{- end }}
{{- if and $p.basicAuth.user (not $p.basicAuth.passwordSecretName) }}
{{- fail "prometheus.basicAuth.user needs prometheus.basicAuth.passwordSecretName" }}
{{- end }}
{{- if and $p.basicAuth.passwordSecretName (not $p.basicAuth.user) }}
{{- fail "prometheus.basicAuth.passwordSecretName needs prometheus.basicAuth.user" }}
{{- end }}
{{- if and $p.ca.secretName $p.ca.configMapName }}
{{- fail "prometheus.ca: use either secretName or configMapName, not both" }}
{{- end }}
{{- end }}

{{/*
The flags that reach Prometheus (both binaries read it: the recommender its history, the
updater the working set before a memory decrease that restarts a container). Call with $.
*/}}
{{- define "tailor.prometheusArgs" -}}
{{- $p := .Values.prometheus }}
{{- $ca := or $p.ca.secretName $p.ca.configMapName }}
- {{ printf "--prometheus-url=%s" $p.url | quote }}
{{- with $p.bearerToken.secretName }}
- --prometheus-token-file=/etc/tailor/prometheus/token/token
{{- end }}
{{- with $p.basicAuth.user }}
- {{ printf "--prometheus-user=%s" . | quote }}
- --prometheus-password-file=/etc/tailor/prometheus/basic-auth/password
{{- end }}
{{- if $ca }}
- --prometheus-ca-file=/etc/tailor/prometheus/ca/ca.crt
{{- end }}
{{- if $p.insecureSkipVerify }}
- --prometheus-insecure-skip-verify
{{- end }}
{{- with $p.extraMatchers }}
- {{ printf "--prometheus-extra-matchers=%s" . | quote }}
{{- end }}
{{- end }}

{{/*
The container's mounts of the Prometheus secrets, if any. Call with $.
*/}}
{{- define "tailor.prometheusVolumeMounts" -}}
{{- $p := .Values.prometheus }}
{{- $ca := or $p.ca.secretName $p.ca.configMapName }}
{{- if or $p.bearerToken.secretName $p.basicAuth.passwordSecretName $ca }}
volumeMounts:
  {{- if $p.bearerToken.secretName }}
  - name: prometheus-token
    mountPath: /etc/tailor/prometheus/token
    readOnly: true
  {{- end }}
  {{- if $p.basicAuth.passwordSecretName }}
  - name: prometheus-basic-auth
    mountPath: /etc/tailor/prometheus/basic-auth
    readOnly: true
  {{- end }}
  {{- if $ca }}
  - name: prometheus-ca
    mountPath: /etc/tailor/prometheus/ca
    readOnly: true
  {{- end }}
{{- end }}
{{- end }}

{{/*
The pod's volumes of the Prometheus secrets, if any. Call with $.
*/}}
{{- define "tailor.prometheusVolumes" -}}
{{- $p := .Values.prometheus }}
{{- $ca := or $p.ca.secretName $p.ca.configMapName }}
{{- if or $p.bearerToken.secretName $p.basicAuth.passwordSecretName $ca }}
volumes:
  {{- with $p.bearerToken.secretName }}
  - name: prometheus-token
    secret:
      secretName: {{ . }}
      items:
        - key: {{ $p.bearerToken.key }}
          path: token
  {{- end }}
  {{- with $p.basicAuth.passwordSecretName }}
  - name: prometheus-basic-auth
    secret:
      secretName: {{ . }}
      items:
        - key: {{ $p.basicAuth.passwordKey }}
          path: password
  {{- end }}
  {{- with $p.ca.secretName }}
  - name: prometheus-ca
    secret:
      secretName: {{ . }}
      items:
        - key: {{ $p.ca.key }}
          path: ca.crt
  {{- end }}
  {{- with $p.ca.configMapName }}
  - name: prometheus-ca
    configMap:
      name: {{ . }}
      items:
        - key: {{ $p.ca.key }}
          path: ca.crt
  {{- end }}
{{- end }}
{{- end }}
