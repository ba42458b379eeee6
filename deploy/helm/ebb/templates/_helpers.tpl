{{/* The chart's name, overridable. */}}
{{- define "ebb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the Service, and with it the serving certificate's SAN. */}}
{{- define "ebb.fullname" -}}
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

{{- define "ebb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ebb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ebb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ebb
{{- end -}}

{{- define "ebb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ebb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the serving certificate, from either TLS source; fails on neither or both. */}}
{{- define "ebb.tlsSecretName" -}}
{{- $tls := .Values.tls -}}
{{- if and $tls.existingSecret $tls.certManager.enabled -}}
{{- fail "set either tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- else if $tls.existingSecret -}}
{{- $tls.existingSecret -}}
{{- else if $tls.certManager.enabled -}}
{{- printf "%s-serving-cert" (include "ebb.fullname" .) -}}
{{- else -}}
{{- fail "ebb needs a serving certificate: set tls.existingSecret (with tls.caBundle) or tls.certManager.enabled=true" -}}
{{- end -}}
{{- end -}}

{{- define "ebb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
