{{/*
Names. The objects shared with the agents (backend ConfigMap and Secrets, agent token) have fixed
names, so that the agent sidecar finds them in any namespace without knowing this release.
*/}}
{{- define "shardkeeper.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shardkeeper.serviceAccountName" -}}
{{- default (include "shardkeeper.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "shardkeeper.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shardkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The namespaces that get the shared objects: the release's and agent.namespaces, once each. */}}
{{- define "shardkeeper.sharedNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.agent.namespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{- define "shardkeeper.tokenSecretName" -}}
{{- default "shardkeeper-agent-token" .Values.agent.token.existingSecret -}}
{{- end -}}

{{/*
Backend environment, shared by the operator and the agents. Takes the chart's values (a dict, so
that a parent chart can pass .Values.shardkeeper). A backend that is not enabled contributes nothing,
and the product treats a backend without its variables as not enabled, naming what is missing.
*/}}
{{/* The ConfigMap's data: the envconfig of every enabled backend, as strings. */}}
{{- define "shardkeeper.backendSettings" -}}
{{- $data := dict -}}
{{- if .skipAccessCheck }}{{ $_ := set $data "BACKUP_SKIP_ACCESS_CHECK" "true" }}{{ end -}}
{{- range $name := list "filesystem" "s3" "gcs" "azure" -}}
{{- $cfg := index $ $name -}}
{{- if $cfg.enabled -}}
{{- range $key, $value := $cfg.envconfig }}{{ $_ := set $data $key (toString $value) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{- define "shardkeeper.backendEnvFrom" -}}
{{- $b := .backups -}}
- configMapRef:
    name: shardkeeper-backups
{{- range $name := list "s3" "azure" }}
{{- $cfg := index $b $name }}
{{- if and $cfg.enabled $cfg.secrets }}
- secretRef:
    name: shardkeeper-backup-{{ $name }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "shardkeeper.backendEnv" -}}
{{- $b := .backups -}}
{{- range $name := list "s3" "azure" }}
{{- $cfg := index $b $name }}
{{- if $cfg.enabled }}
{{- range $env, $secret := $cfg.envSecrets }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $env }}}
{{- end }}
{{- end }}
{{- end }}
{{- if and $b.gcs.enabled (or $b.gcs.secrets $b.gcs.envSecrets) }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: /etc/gcp/credentials.json
{{- end }}
{{- end -}}

{{- define "shardkeeper.backendVolumeMounts" -}}
{{- $b := .backups -}}
{{- if $b.filesystem.enabled }}
- name: shardkeeper-backups
  mountPath: {{ $b.filesystem.envconfig.BACKUP_FILESYSTEM_PATH }}
{{- end }}
{{- if and $b.gcs.enabled (or $b.gcs.secrets $b.gcs.envSecrets) }}
- name: shardkeeper-gcp-credentials
  mountPath: /etc/gcp
  readOnly: true
{{- end }}
{{- end -}}

{{- define "shardkeeper.backendVolumes" -}}
{{- $b := .backups -}}
{{- if $b.filesystem.enabled }}
- name: shardkeeper-backups
  {{- toYaml $b.filesystem.volume | nindent 2 }}
{{- end }}
{{- if and $b.gcs.enabled (or $b.gcs.secrets $b.gcs.envSecrets) }}
- name: shardkeeper-gcp-credentials
  secret:
    secretName: {{ $b.gcs.envSecrets.GOOGLE_APPLICATION_CREDENTIALS | default "shardkeeper-backup-gcs" }}
    items:
      - {key: GOOGLE_APPLICATION_CREDENTIALS, path: credentials.json}
{{- end }}
{{- end -}}

{{- define "shardkeeper.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/*
The agent sidecar, for your database's StatefulSet. Arguments (a dict):
  values      this chart's values (.Values here; .Values.shardkeeper from a parent chart)
  dataVolume  the name of the pod volume holding the database's data
  dataPath    where to mount it in the agent (the data root: one directory per collection)
  hookUrl     optional: the workload hook's base URL, e.g. http://127.0.0.1:8080/shardkeeper
  securityContext  optional: merged over the default (non-root 65532, read-only root); the agent
              must be able to write the data directory, so set runAsUser/runAsGroup to the database's
Add "shardkeeper.agent.volumes" (same values) to the pod's volumes. The pod's ServiceAccount needs
no permissions: the agent never talks to the API server.
*/}}
{{- define "shardkeeper.agent.container" -}}
{{- $v := .values -}}
- name: shardkeeper-agent
  image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["agent", "--data-root", {{ .dataPath | quote }}, "--listen", "0.0.0.0:{{ $v.agent.port }}"
         {{- with .hookUrl }}, "--hook-url", {{ . | quote }}{{ end }}]
  ports:
    - {name: shardkeeper, containerPort: {{ $v.agent.port }}, protocol: TCP}
    {{- if $v.metrics.port }}
    - {name: sk-metrics, containerPort: {{ $v.metrics.port }}, protocol: TCP}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - {name: SHARDKEEPER_METRICS_PORT, value: {{ $v.metrics.port | toString | quote }}}
    - {name: SHARDKEEPER_AGENT_TOKEN_FILE, value: /var/run/shardkeeper/token}
    - {name: SHARDKEEPER_LOG_JSON, value: "1"}
    - {name: SHARDKEEPER_IMMUTABLE_PATTERNS, value: {{ join "," $v.agent.immutablePatterns | quote }}}
    {{- with include "shardkeeper.backendEnv" $v | trim }}{{ . | nindent 4 }}{{ end }}
  envFrom:
    {{- include "shardkeeper.backendEnvFrom" $v | nindent 4 }}
  volumeMounts:
    - {name: {{ .dataVolume }}, mountPath: {{ .dataPath | quote }}}
    - {name: shardkeeper-agent-token, mountPath: /var/run/shardkeeper, readOnly: true}
    - {name: shardkeeper-tmp, mountPath: /tmp}
    {{- with include "shardkeeper.backendVolumeMounts" $v | trim }}{{ . | nindent 4 }}{{ end }}
  livenessProbe:
    httpGet: {path: /healthz, port: shardkeeper}
    periodSeconds: 20
  readinessProbe:
    httpGet: {path: /healthz, port: shardkeeper}
    periodSeconds: 10
  resources:
    {{- toYaml $v.agent.resources | nindent 4 }}
  securityContext:
    {{- $default := include "shardkeeper.containerSecurityContext" . | fromYaml }}
    {{- merge (deepCopy (default dict .securityContext)) $default | toYaml | nindent 4 }}
{{- end -}}

{{- define "shardkeeper.agent.volumes" -}}
{{- $v := .values -}}
- name: shardkeeper-agent-token
  secret:
    secretName: {{ default "shardkeeper-agent-token" $v.agent.token.existingSecret }}
    items: [{key: token, path: token}]
- name: shardkeeper-tmp
  emptyDir: {}
{{- include "shardkeeper.backendVolumes" $v }}
{{- end -}}
