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

{{/* The prefix of cluster-scoped names (and of the RoleBinding in kube-system, a namespace
every release shares): <release namespace>:<fullname>, so that two releases of the same name in
two namespaces do not take each other's ClusterRoles and bindings. */}}
{{- define "ebb.clusterPrefix" -}}
{{- printf "%s:%s" .Release.Namespace (include "ebb.fullname" .) -}}
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

{{/* The Secret holding the serving certificate: tls.existingSecret, or the one cert-manager
issues or the chart generates (<fullname>-serving-cert). Fails when both sources are set. */}}
{{- define "ebb.tlsSecretName" -}}
{{- $tls := .Values.tls -}}
{{- if and $tls.existingSecret $tls.certManager.enabled -}}
{{- fail "set either tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- else if $tls.existingSecret -}}
{{- $tls.existingSecret -}}
{{- else -}}
{{- printf "%s-serving-cert" (include "ebb.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart generates the serving certificate (neither other source is set). */}}
{{- define "ebb.generatesTLS" -}}
{{- if not (or .Values.tls.existingSecret .Values.tls.certManager.enabled) -}}true{{- end -}}
{{- end -}}

{{/* The Service's DNS names: the serving certificate's SANs. */}}
{{- define "ebb.dnsNames" -}}
{{- $svc := printf "%s.%s.svc" (include "ebb.fullname" .) .Release.Namespace -}}
{{- list $svc (printf "%s.cluster.local" $svc) | toJson -}}
{{- end -}}

{{/* repository@digest when a digest is given (what scripts/build-image prints), else repository:tag. */}}
{{- define "ebb.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* A NetworkPolicy egress rule: `ports` (numbers, TCP) to `to` (NetworkPolicyPeers; empty: any peer). */}}
{{- define "ebb.egressRule" -}}
- ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
