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
