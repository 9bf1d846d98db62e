{{/* The release's base name for every object: at most 30 characters, so a group's StatefulSet
(this, "-", and a group name of up to 16) stays within the 52 that its pods' revision label
allows. */}}
{{- define "folio.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "folio.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The registry's StatefulSet and Service name. */}}
{{- define "folio.registryName" -}}
{{- printf "%s-registry" (include "folio.fullname" .) -}}
{{- end -}}

{{/* The registry addresses groups report to, as a TOML array. */}}
{{- define "folio.registryAddrs" -}}
{{- $addrs := list -}}
{{- if .Values.registry.enabled -}}
{{- $name := include "folio.registryName" . -}}
{{- range $i := until (int .Values.registry.replicas) -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc.%s:7000" $name $i $name $.Release.Namespace $.Values.clusterDomain | quote) -}}
{{- end -}}
{{- else -}}
{{- range .Values.registry.external -}}
{{- $addrs = append $addrs (. | quote) -}}
{{- end -}}
{{- end -}}
[{{ join ", " $addrs }}]
{{- end -}}

{{/* The pod security settings every Folio pod runs with. */}}
{{- define "folio.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "folio.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
