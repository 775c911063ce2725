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
Call with (dict "ctx" $ "webhookPort" 9443); webhookPort (the updater's) may be empty.
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
{{- with .webhookPort }}
  - name: webhook
    containerPort: {{ int . }}
    protocol: TCP
{{- end }}
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
{{- include "tailor.scopeArgs" . }}
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
The container's mounts of the Prometheus secrets and, with webhookTls, of the webhook's
certificate, if any. Call with (dict "ctx" $ "webhookTls" false).
*/}}
{{- define "tailor.volumeMounts" -}}
{{- $p := .ctx.Values.prometheus }}
{{- $ca := or $p.ca.secretName $p.ca.configMapName }}
{{- if or $p.bearerToken.secretName $p.basicAuth.passwordSecretName $ca .webhookTls }}
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
  {{- if .webhookTls }}
  - name: webhook-tls
    mountPath: /tls
    readOnly: true
  {{- end }}
{{- end }}
{{- end }}

{{/*
The pod's volumes of the Prometheus secrets and, with webhookTls, of the webhook's certificate
(the Secret cert-manager writes), if any. Call with (dict "ctx" $ "webhookTls" false).
*/}}
{{- define "tailor.volumes" -}}
{{- $p := .ctx.Values.prometheus }}
{{- $ca := or $p.ca.secretName $p.ca.configMapName }}
{{- if or $p.bearerToken.secretName $p.basicAuth.passwordSecretName $ca .webhookTls }}
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
  {{- if .webhookTls }}
  - name: webhook-tls
    secret:
      secretName: tailor-webhook-tls
      items:
        - key: tls.crt
          path: tls.crt
        - key: tls.key
          path: tls.key
  {{- end }}
{{- end }}
{{- end }}

{{/*
Checks the webhook values. Call with $.
*/}}
{{- define "tailor.checkWebhook" -}}
{{- $w := .Values.webhook }}
{{- if and $w.enabled (not (has $w.certificates (list "self-managed" "cert-manager"))) }}
{{- fail (printf "webhook.certificates must be self-managed or cert-manager, not %q" (toString $w.certificates)) }}
{{- end }}
{{- end }}

{{/*
Whether the webhook's certificate comes from cert-manager ("true" or ""). Call with $.
*/}}
{{- define "tailor.webhookCertManager" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certificates "cert-manager") }}true{{ end }}
{{- end }}

{{/*
Whether the updater manages the webhook's certificates itself ("true" or ""). Call with $.
*/}}
{{- define "tailor.webhookSelfManaged" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certificates "self-managed") }}true{{ end }}
{{- end }}

{{/*
The updater's webhook flags. Call with $.
*/}}
{{- define "tailor.webhookArgs" -}}
{{- $w := .Values.webhook }}
{{- $ns := .Release.Namespace }}
{{- if $w.enabled }}
- --webhook-addr=0.0.0.0:{{ int $w.port }}
- --updater-username=system:serviceaccount:{{ $ns }}:tailor-updater
{{- if eq $w.certificates "cert-manager" }}
- --webhook-certs=files
- --webhook-cert-dir=/tls
{{- else }}
- --webhook-certs=self-managed
- --webhook-secret=tailor-webhook-tls
- --webhook-configurations=tailor
- --webhook-names=tailor-webhook.{{ $ns }}.svc,tailor-webhook.{{ $ns }}.svc.cluster.local
- --webhook-cert-validity-seconds={{ int64 $w.certValiditySeconds }}
{{- end }}
{{- else }}
- --webhook-certs=none
{{- end }}
{{- end }}

{{/*
The webhook configurations' metadata: name, labels and, with cert-manager, the CA injector's
annotation. Call with $.
*/}}
{{- define "tailor.webhookConfigurationMetadata" -}}
name: tailor
labels:
  {{- include "tailor.labels" (dict "ctx" . "component" "webhook") | nindent 2 }}
{{- if include "tailor.webhookCertManager" . }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/tailor-webhook
{{- end }}
{{- end }}

{{/*
Checks the namespace scope values. Call with $.
*/}}
{{- define "tailor.checkScope" -}}
{{- if and .Values.namespaces .Values.excludeNamespaces }}
{{- fail "namespaces and excludeNamespaces cannot be used together: give the namespaces to watch, or those to leave out" }}
{{- end }}
{{- range concat (.Values.namespaces | default list) (.Values.excludeNamespaces | default list) }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .)) }}
{{- fail (printf "%q is not a namespace name (a DNS-1123 label: lower-case letters, digits and '-', at most 63)" (toString .)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The namespace scope flags of both binaries, if scoped. Call with $.
*/}}
{{- define "tailor.scopeArgs" -}}
{{- with .Values.namespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- with .Values.excludeNamespaces }}
- --exclude-namespaces={{ join "," . }}
{{- end }}
{{- end }}

{{/*
The recommender's grants on namespaced resources: in a ClusterRole, or with namespaces set in
a Role in each of them. Call with $.
*/}}
{{- define "tailor.recommenderRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
- apiGroups: [tailor.dev]
  resources: [verticalautoscalers]
  verbs: [get, list, watch]
- apiGroups: [tailor.dev]
  resources: [verticalautoscalers/status]
  verbs: [patch]
# Mirrored into VerticalAutoscaler status.
- apiGroups: [tailor.dev]
  resources: [resizestates]
  verbs: [get, list, watch]
{{- end }}

{{/*
The updater's grants on namespaced resources: in a ClusterRole, or with namespaces set in a
Role in each of them. Call with $.
*/}}
{{- define "tailor.updaterRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/resize]
  verbs: [patch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch]
# Upstream VPA, when installed: tailor never acts on pods an updating VPA owns.
- apiGroups: [autoscaling.k8s.io]
  resources: [verticalpodautoscalers]
  verbs: [get, list, watch]
- apiGroups: [tailor.dev]
  resources: [verticalautoscalers]
  verbs: [get, list, watch]
# Its own record of each VerticalAutoscaler. Never verticalautoscalers/status: whoever may
# patch that writes the recommendation the updater applies.
- apiGroups: [tailor.dev]
  resources: [resizestates]
  verbs: [get, list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
