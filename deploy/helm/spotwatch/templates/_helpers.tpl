{{/* Names: <release>-spotwatch unless the release name already says spotwatch. */}}
{{- define "spotwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spotwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "spotwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "spotwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "spotwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spotwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "spotwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "spotwatch.agentServiceAccount" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (printf "%s-agent" (include "spotwatch.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding redis-url (the chart's own unless redis.existingSecret names one). */}}
{{- define "spotwatch.redisSecret" -}}
{{- default (printf "%s-redis" (include "spotwatch.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "spotwatch.agentSecret" -}}
{{- default (printf "%s-agent" (include "spotwatch.fullname" .)) .Values.agent.existingSecret -}}
{{- end -}}

{{- define "spotwatch.webhookSecret" -}}
{{- default (printf "%s-webhook" (include "spotwatch.fullname" .)) .Values.webhook.existingSecret -}}
{{- end -}}

{{- define "spotwatch.redisEnv" -}}
- name: SPOTWATCH_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "spotwatch.redisSecret" . }}
      key: {{ .Values.redis.existingSecretKey }}
- name: SPOTWATCH_QUEUE_PREFIX
  value: {{ .Values.queuePrefix | quote }}
- name: SPOTWATCH_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}
