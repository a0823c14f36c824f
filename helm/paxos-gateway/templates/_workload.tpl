{{/*
The gateway's Deployment, for each role (helpers "paxos-gateway.roleLabels"):
  ""       the single process (cluster off): today's workload, unchanged;
  "edge"   cluster mode: serves subscribers from NATS; the same Deployment, Service, HPA and
           PDB as the single process, with `--role edge`;
  "ingest" cluster mode: holds the Paxos connections and publishes; a leader and warm
           standbys (cluster.ingest), no subscriber port, no Service of its own.
Argument: (list $ role).
*/}}
{{- define "paxos-gateway.deployment" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- $v := $root.Values -}}
{{- $ingest := eq $role "ingest" -}}
{{- $configDir := include "paxos-gateway.configDir" $root -}}
{{- $selector := include "paxos-gateway.roleSelectorLabels" (list $root $role) -}}
{{- $probes := ternary $v.cluster.ingest.probes $v.probes $ingest -}}
{{- /* No Service sends traffic to an ingest pod: nothing to wait for before SIGTERM. */ -}}
{{- $preStop := ternary 0 (int $v.lifecycle.preStopSleepSeconds) $ingest -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ ternary (include "paxos-gateway.ingestName" $root) (include "paxos-gateway.fullname" $root) $ingest }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "paxos-gateway.roleLabels" (list $root $role) | nindent 4 }}
spec:
  {{- if $ingest }}
  replicas: {{ $v.cluster.ingest.replicaCount }}
  {{- else if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- $selector | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if $ingest }}
      # Start the replacement first: it becomes a standby, so replacing the leader costs one
      # lease takeover (docs/cluster.md), never a time with no ingest pod at all.
      {{- else }}
      # Bring a replacement up (and ready) before a gateway goes away, so subscribers told to
      # reconnect (close code 1001) find somewhere to go.
      {{- end }}
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      annotations:
        # A config change rolls the pods: the gateway reads its config only at start.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if and $v.metrics.scrapeAnnotations (not $v.metrics.serviceMonitor.enabled) }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ include "paxos-gateway.metricsPort" $root | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "paxos-gateway.roleLabels" (list $root $role) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "paxos-gateway.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- if $ingest }}
      # SIGTERM -> stop publishing and close the upstream connections within the gateway's
      # shutdown bound; a standby takes the lease over (no preStop: no Service to leave).
      {{- else }}
      # SIGTERM -> stop accepting, close subscribers with 1001, drain for shutdown.drain_timeout,
      # exit 0; the grace period covers the preStop sleep, the drain and a margin.
      {{- end }}
      terminationGracePeriodSeconds: {{ include "paxos-gateway.terminationGracePeriodSeconds" (list $root $preStop) }}
      containers:
        - name: gateway
          image: {{ include "paxos-gateway.image" $root | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - run
            - --config
            - {{ $configDir }}/gateway.toml
            {{- if $role }}
            - --role
            - {{ $role }}
            {{- end }}
          {{- if or $role $v.extraEnv }}
          env:
            {{- if $role }}
            # The lease holder id (docs/cluster.md): the pod's name, unique and in the logs.
            - name: PAXOS_GATEWAY__CLUSTER__HOLDER
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- with $v.cluster.natsUrlsSecret.name }}
            # The NATS URLs, comma-separated, credentials included: kept out of the ConfigMap.
            - name: PAXOS_GATEWAY__CLUSTER__NATS_URLS
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.cluster.natsUrlsSecret.key }}
            {{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- with $v.envFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            {{- if not $ingest }}
            - name: ws
              containerPort: {{ include "paxos-gateway.serverPort" $root }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ include "paxos-gateway.metricsPort" $root }}
              protocol: TCP
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml $probes.readiness | nindent 12 }}
          {{- if gt $preStop 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $preStop }}
          {{- end }}
          resources:
            {{- toYaml (ternary $v.cluster.ingest.resources $v.resources $ingest) | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: {{ $configDir }}
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $v.auth.existingSecret }}
            - name: auth
              mountPath: {{ include "paxos-gateway.authDir" $root }}
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "paxos-gateway.fullname" $root }}
        {{- if $v.auth.existingSecret }}
        - name: auth
          secret:
            secretName: {{ $v.auth.existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ $v.auth.key }}
                path: tokens
        {{- end }}
        - name: tmp
          emptyDir:
            {{- with $v.tmpVolume.sizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $affinity := deepCopy (ternary $v.cluster.ingest.affinity $v.affinity $ingest) }}
      {{- if and $ingest (ne $v.cluster.ingest.podAntiAffinity "none") (not (hasKey $affinity "podAntiAffinity")) }}
      {{- /* Leader and standby on different nodes, so that losing one node never takes both. */}}
      {{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" ($selector | fromYaml)) }}
      {{- if eq $v.cluster.ingest.podAntiAffinity "hard" }}
      {{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
      {{- else }}
      {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
      {{- end }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (ternary $v.cluster.ingest.topologySpreadConstraints $v.topologySpreadConstraints $ingest) }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $constraint := deepCopy . }}
        {{- if not (hasKey $constraint "labelSelector") }}
        {{- $_ := set $constraint "labelSelector" (dict "matchLabels" ($selector | fromYaml)) }}
        {{- end }}
        - {{- toYaml $constraint | nindent 10 }}
        {{- end }}
      {{- end }}
{{- end }}
