{{/* Names. */}}
{{- define "dittofs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dittofs-operator.fullname" -}}
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

{{- define "dittofs-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; the selector labels are the immutable subset. */}}
{{- define "dittofs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dittofs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dittofs-operator.labels" -}}
helm.sh/chart: {{ include "dittofs-operator.chart" . }}
{{ include "dittofs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dittofs
{{- end }}

{{- define "dittofs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dittofs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
"<fullname>-<suffix>" as a DNS label (Service names): the full name is shortened, never the suffix.
Called with (list . "suffix").
*/}}
{{- define "dittofs-operator.suffixed" -}}
{{- $suffix := index . 1 }}
{{- $room := int (sub 62 (len $suffix)) }}
{{- printf "%s-%s" (include "dittofs-operator.fullname" (index . 0) | trunc $room | trimSuffix "-") $suffix }}
{{- end }}

{{/* The webhook Service; `dittoctl run --service-name` gets the same value (it is also in the cert SANs). */}}
{{- define "dittofs-operator.webhookServiceName" -}}
{{- include "dittofs-operator.suffixed" (list . "webhook") }}
{{- end }}

{{- define "dittofs-operator.metricsServiceName" -}}
{{- include "dittofs-operator.suffixed" (list . "metrics") }}
{{- end }}

{{/* The ValidatingWebhookConfiguration (cluster-scoped); `--webhook-config-name` gets the same value. */}}
{{- define "dittofs-operator.webhookConfigName" -}}
{{- include "dittofs-operator.fullname" . }}
{{- end }}

{{/*
Secret with the serving certificate. selfSigned mode: the operator writes "<service name>-tls"
(webhook/wiring.py self_signed_secret_name); certManager mode uses the same name; provided mode the user's.
*/}}
{{- define "dittofs-operator.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "provided" }}
{{- required "webhook.tls.provided.secretName is required when webhook.tls.mode is provided" .Values.webhook.tls.provided.secretName }}
{{- else }}
{{- printf "%s-tls" (include "dittofs-operator.webhookServiceName" .) }}
{{- end }}
{{- end }}

{{- define "dittofs-operator.certificateName" -}}
{{- printf "%s-serving-cert" (include "dittofs-operator.fullname" .) }}
{{- end }}

{{- define "dittofs-operator.caName" -}}
{{- printf "%s-webhook-ca" (include "dittofs-operator.fullname" .) }}
{{- end }}

{{- define "dittofs-operator.issuerName" -}}
{{- printf "%s-selfsigned-issuer" (include "dittofs-operator.fullname" .) }}
{{- end }}

{{/* Fixed in the operator (RunSettings.lease_name); RBAC names it. */}}
{{- define "dittofs-operator.leaseName" -}}
{{ include "dittofs-operator.fullname" . }}
{{- end }}

{{- define "dittofs-operator.certDir" -}}
/tmp/k8s-webhook-server/serving-certs
{{- end }}

{{/* A digest pins the image whatever its tag. */}}
{{- define "dittofs-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The webhook in selfSigned mode needs a writable cert dir (the /tmp emptyDir) and RBAC to publish. */}}
{{- define "dittofs-operator.selfSigned" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.tls.mode "selfSigned") }}true{{ end }}
{{- end }}

{{- define "dittofs-operator.mountsTlsSecret" -}}
{{- if and .Values.webhook.enabled (has .Values.webhook.tls.mode (list "certManager" "provided")) }}true{{ end }}
{{- end }}
