{{/* The name objects of this release start with. */}}
{{- define "gigafab.fullname" -}}
{{- if contains "gigafab" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-gigafab" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gigafab.labels" -}}
app.kubernetes.io/name: gigafab
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gigafab
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator"). */}}
{{- define "gigafab.selector" -}}
app.kubernetes.io/name: gigafab
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gigafab.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* "true" when cert-manager issues the health plane's certificates. */}}
{{- define "gigafab.certManager" -}}
{{- $wanted := toString .Values.certificates.certManager -}}
{{- if eq $wanted "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}true{{- end -}}
{{- else if eq $wanted "true" -}}true{{- end -}}
{{- end -}}

{{/* The DNS name agents reach a site's gateway at, and its certificate carries: (dict "root" $ "site" .). */}}
{{- define "gigafab.gatewayHost" -}}
{{ include "gigafab.fullname" .root }}-gateway-{{ .site.name }}.{{ .root.Release.Namespace }}.svc
{{- end -}}

{{- define "gigafab.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* The Secret with the health plane's CA (tls.crt, tls.key), which only the signer mounts. */}}
{{- define "gigafab.caSecret" -}}
{{ .Values.certificates.ca.secretName | default (printf "%s-health-ca" (include "gigafab.fullname" .)) }}
{{- end -}}
