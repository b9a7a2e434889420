{{/* Names, labels and the shared pieces of the Deployment and CronJob pods. */}}

{{- define "reconciler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "reconciler.fullname" -}}
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

{{- define "reconciler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "reconciler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reconciler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The controller's pods only (the plan CronJob's pods are "plan-report"). */}}
{{- define "reconciler.controllerSelectorLabels" -}}
{{ include "reconciler.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "reconciler.labels" -}}
helm.sh/chart: {{ include "reconciler.chart" . }}
{{ include "reconciler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opencti-defender-reconciler
{{- end }}

{{- define "reconciler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reconciler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "reconciler.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret the two secret env vars come from: the user's, or the chart's own. */}}
{{- define "reconciler.secretName" -}}
{{- default (include "reconciler.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Sibling directories: a volume mounted inside a read-only ConfigMap volume cannot get its
mount point created, so the config and the CA bundle never nest. */}}
{{- define "reconciler.configDir" -}}/etc/reconciler/config{{- end }}
{{- define "reconciler.configPath" -}}/etc/reconciler/config/config.yml{{- end }}
{{- define "reconciler.caDir" -}}/etc/reconciler/ca{{- end }}

{{- define "reconciler.caBundleEnabled" -}}
{{- if or .Values.caBundle.existingConfigMap .Values.caBundle.existingSecret }}true{{- end }}
{{- end }}

{{/* The config.yml document: the values' config, with ca_bundle pointing at the mounted PEM. */}}
{{- define "reconciler.configYaml" -}}
{{- $config := deepCopy .Values.config }}
{{- if include "reconciler.caBundleEnabled" . }}
{{- $_ := set $config.microsoft_defender_intel "ca_bundle" (printf "%s/%s" (include "reconciler.caDir" .) .Values.caBundle.key) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Directory of reconciler.state_path, mounted writable when the path is set and not already
inside the writable /tmp. */}}
{{- define "reconciler.stateDir" -}}
{{- with .Values.config.reconciler.state_path }}
{{- $dir := dir . }}
{{- if not (or (eq $dir "/tmp") (hasPrefix "/tmp/" $dir)) }}{{ $dir }}{{ end }}
{{- end }}
{{- end }}

{{/* Env shared by the controller and the plan CronJob: config path, secrets, extras. */}}
{{- define "reconciler.env" -}}
- name: RECONCILER_CONFIG
  value: {{ include "reconciler.configPath" . | quote }}
- name: OPENCTI_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "reconciler.secretName" . }}
      key: {{ .Values.existingSecretKeys.openctiToken }}
- name: MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "reconciler.secretName" . }}
      key: {{ .Values.existingSecretKeys.clientSecret }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts shared by both pods; "state" is added by the Deployment only. */}}
{{- define "reconciler.volumeMounts" -}}
- name: config
  mountPath: {{ include "reconciler.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if include "reconciler.caBundleEnabled" . }}
- name: ca-bundle
  mountPath: {{ include "reconciler.caDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "reconciler.volumes" -}}
- name: config
  configMap:
    name: {{ include "reconciler.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.caBundle.existingConfigMap }}
- name: ca-bundle
  configMap:
    name: {{ .Values.caBundle.existingConfigMap }}
    items:
      - key: {{ .Values.caBundle.key }}
        path: {{ .Values.caBundle.key }}
{{- else if .Values.caBundle.existingSecret }}
- name: ca-bundle
  secret:
    secretName: {{ .Values.caBundle.existingSecret }}
    items:
      - key: {{ .Values.caBundle.key }}
        path: {{ .Values.caBundle.key }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by both pods. Context: dict "root" (the chart's), "automount"
(mount the service account token: the controller's pods with leader election) and "affinity". */}}
{{- define "reconciler.podSpecCommon" -}}
{{- $root := .root }}
serviceAccountName: {{ include "reconciler.serviceAccountName" $root }}
automountServiceAccountToken: {{ .automount }}
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The controller workloads, as a YAML list: one per entry of `tenants`, or a single one
(name "") when there are none. Each: name, fullname (also its Lease's default name), replicas,
leaderElection (on when asked or when replicas > 1), lease (the Lease's name), tenant (the
values entry). Fails on a duplicate tenant name (JSON Schema cannot compare list items by a
key; this runs right after the schema, on every install, upgrade and template). */}}
{{- define "reconciler.workloads" -}}
{{- $root := . }}
{{- $fullname := include "reconciler.fullname" . }}
{{- $rec := .Values.config.reconciler }}
{{- $entries := list }}
{{- if .Values.tenants }}
{{- $seen := dict }}
{{- range .Values.tenants }}
{{- if hasKey $seen .name }}
{{- fail (printf "tenants: duplicate tenant name %q (each tenant needs its own name)" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $entries = append $entries (dict "name" .name "tenant" . "replicas" (int (default $root.Values.replicaCount .replicaCount))) }}
{{- end }}
{{- else }}
{{- $entries = append $entries (dict "name" "" "tenant" dict "replicas" (int .Values.replicaCount)) }}
{{- end }}
{{- $out := list }}
{{- range $entries }}
{{- $name := ternary $fullname (printf "%s-%s" $fullname .name | trunc 63 | trimSuffix "-") (eq .name "") }}
{{- $elect := or $rec.leader_election (gt .replicas 1) }}
{{- $lease := default $name $rec.lease_name }}
{{- $out = append $out (dict "name" .name "fullname" $name "replicas" .replicas "leaderElection" $elect "lease" $lease "tenant" .tenant) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* True when some workload runs leader election (the Role, the token mount). */}}
{{- define "reconciler.anyLeaderElection" -}}
{{- range (include "reconciler.workloads" . | fromYamlArray) }}{{ if .leaderElection }}true{{ end }}{{ end }}
{{- end }}

{{/* Selector labels of one workload's pods. Context: dict "root", "w" (a workload). */}}
{{- define "reconciler.workloadSelectorLabels" -}}
{{ include "reconciler.controllerSelectorLabels" .root }}
{{- if .w.name }}
opencti-defender-reconciler/tenant: {{ .w.name }}
{{- end }}
{{- end }}

{{/* The affinity of one workload's pods: the values' affinity, plus anti-affinity between its
replicas (soft or hard; unless the values bring their own podAntiAffinity). */}}
{{- define "reconciler.workloadAffinity" -}}
{{- $affinity := deepCopy (default dict .root.Values.affinity) }}
{{- $mode := .root.Values.podAntiAffinity }}
{{- if and (gt (int .w.replicas) 1) (ne $mode "none") (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "reconciler.workloadSelectorLabels" . | fromYaml)) }}
{{- if eq $mode "hard" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- else }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- toYaml $affinity }}
{{- end }}

{{/* Env of one workload's controller: the shared env, then leader election and the tenant's
own settings (env beats config.yml), then the tenant's extraEnv. Context: dict "root", "w". */}}
{{- define "reconciler.workloadEnv" -}}
{{- $root := .root }}
{{- $w := .w }}
{{- $t := .w.tenant }}
{{- $rec := $root.Values.config.reconciler }}
- name: RECONCILER_CONFIG
  value: {{ include "reconciler.configPath" $root | quote }}
- name: OPENCTI_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "reconciler.secretName" $root }}
      key: {{ $root.Values.existingSecretKeys.openctiToken }}
- name: MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
{{- if $w.name }}
      name: {{ $t.clientSecret.name }}
      key: {{ $t.clientSecret.key }}
{{- else }}
      name: {{ include "reconciler.secretName" $root }}
      key: {{ $root.Values.existingSecretKeys.clientSecret }}
{{- end }}
{{- if $w.leaderElection }}
- name: RECONCILER_LEADER_ELECTION
  value: "true"
{{- if not $rec.lease_name }}
- name: RECONCILER_LEASE_NAME
  value: {{ $w.lease | quote }}
{{- end }}
{{- if not $rec.lease_namespace }}
- name: RECONCILER_LEASE_NAMESPACE
  value: {{ $root.Release.Namespace | quote }}
{{- end }}
{{- end }}
{{- if $w.name }}
- name: RECONCILER_TENANT
  value: {{ $w.name | quote }}
- name: MICROSOFT_DEFENDER_INTEL_TENANT_ID
  value: {{ $t.tenantId | quote }}
- name: MICROSOFT_DEFENDER_INTEL_CLIENT_ID
  value: {{ $t.clientId | quote }}
- name: CONNECTOR_ID
  value: {{ $t.connectorId | quote }}
{{- with $t.liveStreamId }}
- name: CONNECTOR_LIVE_STREAM_ID
  value: {{ . | quote }}
{{- end }}
{{- with $t.ownershipTag }}
- name: MICROSOFT_DEFENDER_INTEL_OWNERSHIP_TAG
  value: {{ . | quote }}
{{- end }}
{{- with $t.quota }}
- name: RECONCILER_QUOTA
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := $t.policy }}
{{- /* The tenant's own policy keys, as the policy section's env vars (lists as JSON). */}}
- name: {{ printf "POLICY_%s" (upper $key) }}
  {{- if eq $key "known_rbac_groups" }}
  value: {{ join "," $value | quote }}
  {{- else if kindIs "slice" $value }}
  value: {{ toJson $value | quote }}
  {{- else }}
  value: {{ toString $value | quote }}
  {{- end }}
{{- end }}
{{- with $rec.state_path }}
{{- /* One position file per tenant, side by side in the state directory. */}}
- name: RECONCILER_STATE_PATH
  value: {{ printf "%s/%s-%s" (dir .) $w.name (base .) | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with $t.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
