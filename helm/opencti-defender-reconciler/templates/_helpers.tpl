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

{{/* Pod-level settings shared by both pods. */}}
{{- define "reconciler.podSpecCommon" -}}
serviceAccountName: {{ include "reconciler.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
