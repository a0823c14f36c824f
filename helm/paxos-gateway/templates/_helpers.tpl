{{/* Chart name, overridable. */}}
{{- define "paxos-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (63 characters: DNS label limit). */}}
{{- define "paxos-gateway.fullname" -}}
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

{{- define "paxos-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "paxos-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paxos-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "paxos-gateway.labels" -}}
{{ include "paxos-gateway.roleLabels" (list . "") }}
{{- end }}

{{/*
Cluster mode (cluster.enabled, docs/cluster.md) runs two workloads, role "ingest" and role
"edge"; their objects carry app.kubernetes.io/component=<role>, and so do their selectors, so
that the subscriber Service, the PDBs and the NetworkPolicies each pick one role. Role "" is the
single process (cluster off) and the objects shared by both roles: component "gateway", and
selectors without a component, exactly as before cluster mode existed.
Argument: (list $ role).
*/}}
{{- define "paxos-gateway.roleSelectorLabels" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{ include "paxos-gateway.selectorLabels" $root }}
{{- if $role }}
app.kubernetes.io/component: {{ $role }}
{{- end }}
{{- end }}

{{- define "paxos-gateway.roleLabels" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
helm.sh/chart: {{ include "paxos-gateway.chart" $root }}
{{ include "paxos-gateway.selectorLabels" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/component: {{ default "gateway" $role }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The role of the subscriber-facing workload: "edge" in cluster mode, else "" (the single process). */}}
{{- define "paxos-gateway.edgeRole" -}}
{{- if .Values.cluster.enabled }}edge{{ end -}}
{{- end }}

{{/* The ingest workload's name (and its PDB's and NetworkPolicy's). */}}
{{- define "paxos-gateway.ingestName" -}}
{{- printf "%s-ingest" (include "paxos-gateway.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end }}

{{- define "paxos-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paxos-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "paxos-gateway.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Where the ConfigMap is mounted; the Dockerfile's CMD uses the same path. */}}
{{- define "paxos-gateway.configDir" -}}/etc/paxos-gateway{{- end }}

{{/* Where the auth Secret's key is mounted (outside the ConfigMap's directory). */}}
{{- define "paxos-gateway.authDir" -}}/etc/paxos-gateway-auth{{- end }}
{{- define "paxos-gateway.authTokenFile" -}}{{ include "paxos-gateway.authDir" . }}/tokens{{- end }}

{{- define "paxos-gateway.serverPort" -}}
{{- int64 (dig "server" "port" 8765 .Values.config) }}
{{- end }}

{{- define "paxos-gateway.metricsPort" -}}
{{- int64 (dig "metrics" "port" 9108 .Values.config) }}
{{- end }}

{{/* Seconds the gateway may take to drain (gateway default 10 when unset). */}}
{{- define "paxos-gateway.drainSeconds" -}}
{{- $drain := dig "shutdown" "drain_timeout" 10.0 .Values.config -}}
{{- if kindIs "invalid" $drain }}{{ $drain = 10.0 }}{{ end -}}
{{- int64 (ceil $drain) -}}
{{- end }}

{{/*
Seconds from SIGTERM until the gateway has exited, at most: gateway/app.py shutdown_bound =
max(drain_timeout + 1, 2): the drain (closing handshakes included), 1 s for the subscribers
still open to take their close frame (gateway/io/server.py FINAL_CLOSE_TIMEOUT), and in
parallel 2 s for the upstream connections to close (gateway/io/upstream.py
DEFAULT_CLOSE_TIMEOUT).
*/}}
{{- define "paxos-gateway.shutdownSeconds" -}}
{{- max (add (include "paxos-gateway.drainSeconds" . | int64) 1) 2 -}}
{{- end }}

{{/*
preStop sleep + the gateway's shutdown bound + margin (process exit). Argument: (list $
preStopSeconds): the ingest role has no preStop sleep.
*/}}
{{- define "paxos-gateway.terminationGracePeriodSeconds" -}}
{{- $root := index . 0 -}}
{{- add (int64 (index . 1)) (include "paxos-gateway.shutdownSeconds" $root | int64) (int64 $root.Values.lifecycle.terminationGraceMarginSeconds) -}}
{{- end }}

{{/*
One TOML value. Helm decodes every number in values as float64, so the type comes from the
gateway's config schema (docs/architecture.md), not from the value: an int must be written
without a fraction (8765, not 8765.0) and a float may carry one.
Argument: (list type value key).
*/}}
{{- define "paxos-gateway.tomlValue" -}}
{{- $type := index . 0 -}}
{{- $v := index . 1 -}}
{{- $key := index . 2 -}}
{{- if eq $type "string" -}}
{{- /* A JSON string is a valid TOML basic string (same escapes, \uXXXX included). */ -}}
{{- toString $v | toJson -}}
{{- else if eq $type "int" -}}
{{- if not (or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v)) -}}
{{- fail (printf "config.%s: expected an integer, got %v" $key $v) -}}
{{- end -}}
{{- if ne (float64 $v) (floor $v) -}}
{{- fail (printf "config.%s: expected an integer, got %v" $key $v) -}}
{{- end -}}
{{- int64 $v -}}
{{- else if eq $type "float" -}}
{{- $s := toString (float64 $v) -}}
{{- if regexMatch "^-?[0-9]+$" $s }}{{ $s }}.0{{ else }}{{ $s }}{{ end -}}
{{- else if eq $type "strings" -}}
{{- /* A JSON array of strings is a valid TOML array. */ -}}
{{- if not (kindIs "slice" $v) -}}
{{- fail (printf "config.%s: expected a list of strings, got %v" $key $v) -}}
{{- end -}}
{{- $items := list -}}
{{- range $v }}{{ $items = append $items (toString .) }}{{ end -}}
{{- $items | toJson -}}
{{- else if eq $type "bool" -}}
{{- ternary "true" "false" (eq (toString $v) "true") -}}
{{- else -}}
{{- fail (printf "config.%s: unknown TOML type %s" $key $type) -}}
{{- end -}}
{{- end }}

{{/* Types of the keys of every [section] of gateway.toml. */}}
{{- define "paxos-gateway.configTypes" -}}
upstream:
  base_url: string
  backoff_initial: float
  backoff_max: float
  ping_interval: float
  ping_timeout: float
  connect_timeout: float
  connect_interval: float
  coalesce_window: float
  dedup_capacity: int
  max_message_bytes: int
backfill:
  enabled: bool
  rest_url: string
  requests_per_second: float
  burst: int
  request_timeout: float
  timeout: float
  max_held: int
  window: int
  markets_refresh: float
server:
  host: string
  port: int
  max_subscribers: int
  max_subscriptions: int
  max_request_bytes: int
  buffer_bytes: int
  slow_policy: string
  history: int
  ping_interval: float
  ping_timeout: float
  handshake_timeout: float
  max_pending: int
  max_pending_per_ip: int
  send_buffer_bytes: int
  connections_per_ip_per_second: float
  connection_burst_per_ip: int
  auth_token_file: string
metrics:
  host: string
  port: int
  ready_grace: float
  max_connections: int
  max_connections_per_address: int
shutdown:
  drain_timeout: float
log:
  level: string
  format: string
feeds:
  path: string
  url: string
  name: string
  required: bool
# The contract of issue 14 (cluster mode); role and holder are set per pod, not here.
cluster:
  nats_urls: strings
  lease_ttl: float
  stream_replicas: int
  max_age: float
  duplicate_window: float
  checkpoint_interval: float
  resume_wait: float
  connect_timeout: float
{{- end }}

{{/* The whole gateway.toml. */}}
{{- define "paxos-gateway.configToml" -}}
{{- $types := include "paxos-gateway.configTypes" . | fromYaml -}}
{{- $config := .Values.config -}}
# Rendered by the {{ .Chart.Name }} chart from .Values.config; edit the values, not this file.
{{- $sections := list "upstream" "backfill" "server" "metrics" "shutdown" "log" }}
{{- /* Cluster off: no [cluster] section at all, so gateway.toml is byte for byte today's. */}}
{{- if .Values.cluster.enabled }}
{{- $sections = append $sections "cluster" }}
{{- end }}
{{- range $section := $sections }}
{{- $values := deepCopy (index $config $section | default dict) }}
{{- if and (eq $section "server") $.Values.auth.existingSecret }}
{{- $_ := set $values "auth_token_file" (include "paxos-gateway.authTokenFile" $) }}
{{- end }}
{{- if and (eq $section "cluster") $.Values.cluster.natsUrls }}
{{- /* Else they come from cluster.natsUrlsSecret, as an environment variable. */}}
{{- $_ := set $values "nats_urls" $.Values.cluster.natsUrls }}
{{- end }}
{{- $sectionTypes := index $types $section }}

[{{ $section }}]
{{- range $key := keys $values | sortAlpha }}
{{- $v := index $values $key }}
{{- if not (hasKey $sectionTypes $key) }}
{{- fail (printf "config.%s.%s: unknown key" $section $key) }}
{{- end }}
{{- if not (kindIs "invalid" $v) }}
{{ $key }} = {{ include "paxos-gateway.tomlValue" (list (index $sectionTypes $key) $v (printf "%s.%s" $section $key)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $feed := $config.feeds }}

[[feeds]]
{{- range $key := keys $feed | sortAlpha }}
{{- $v := index $feed $key }}
{{- if not (hasKey $types.feeds $key) }}
{{- fail (printf "config.feeds[%d].%s: unknown key" $i $key) }}
{{- end }}
{{- if not (kindIs "invalid" $v) }}
{{ $key }} = {{ include "paxos-gateway.tomlValue" (list (index $types.feeds $key) $v (printf "feeds[%d].%s" $i $key)) }}
{{- end }}
{{- end }}
{{- end }}
{{ end }}

{{/*
The ClusterIP Service of the ops port (/metrics, /healthz, /readyz), apart from the subscriber
Service so that a LoadBalancer or NodePort for subscribers never exposes it.
*/}}
{{- define "paxos-gateway.metricsServiceName" -}}
{{- printf "%s-metrics" (include "paxos-gateway.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end }}

{{/*
The ops port (/metrics, /healthz, /readyz) in a NetworkPolicy: pods of the selected namespaces,
or (none selected) pods of any namespace; never from outside the cluster.
*/}}
{{- define "paxos-gateway.metricsIngressRule" -}}
# The ops port (/metrics, /healthz, /readyz): pods of the selected namespaces, or (none
# selected) pods of any namespace; never from outside the cluster. Kubelet probes come from
# the pod's node, which NetworkPolicy always admits.
- ports:
    - port: metrics
      protocol: TCP
  from:
    {{- range .Values.networkPolicy.metricsNamespaceSelectors }}
    - namespaceSelector:
        {{- toYaml . | nindent 8 }}
    {{- else }}
    - namespaceSelector: {}
    {{- end }}
{{- end }}
