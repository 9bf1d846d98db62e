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

{{/* insecure as the nodes' configs say it: false once TLS and client tokens protect them. */}}
{{- define "folio.insecure" -}}
{{- if and .Values.tls.enabled .Values.auth.enabled -}}
false
{{- else -}}
{{ .Values.insecure }}
{{- end -}}
{{- end -}}

{{/* Refuses values that would render nodes that cannot start or cannot be reached. */}}
{{- define "folio.checkSecurity" -}}
{{- if and .Values.auth.enabled (not .Values.tls.enabled) -}}
{{- fail "auth.enabled needs tls.enabled: tokens sent in plaintext can be copied off the wire" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not .Values.auth.keysSecret) -}}
{{- fail "auth.enabled needs auth.keysSecret: a Secret with one <id>.pub per auth.keyIds entry" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not .Values.auth.keyIds) -}}
{{- fail "auth.enabled needs at least one auth.keyIds entry" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- end -}}

{{/* A node config's [tls] and [auth] sections. The certificate and key are each pod's own,
given on the command line (--tls-cert, --tls-key); the CA is the same for every node. */}}
{{- define "folio.securityConfig" -}}
{{- if .Values.tls.enabled }}
[tls]
# cert and key: --tls-cert and --tls-key, from the pod's own Secret.
ca = "/run/secrets/folio/tls/ca.crt"
{{- end }}
{{- if .Values.auth.enabled }}
[auth]
audience = {{ .Values.auth.audience | quote }}
{{- range .Values.auth.keyIds }}
[[auth.keys]]
id = {{ . | quote }}
public_key = "/run/secrets/folio/keys/{{ . }}.pub"
{{- end }}
{{- end }}
{{- end -}}

{{/* The command-line arguments that give a pod its own certificate. */}}
{{- define "folio.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-cert
- /run/secrets/folio/tls/$(POD_NAME)/tls.crt
- --tls-key
- /run/secrets/folio/tls/$(POD_NAME)/tls.key
{{- end }}
{{- end -}}

{{/* The probes' scheme: the metrics endpoint speaks only HTTPS when TLS is on. */}}
{{- define "folio.probeScheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{/* volumeMounts for TLS and token keys, after the config's. */}}
{{- define "folio.securityMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /run/secrets/folio/tls
  readOnly: true
{{- end }}
{{- if .Values.auth.enabled }}
- name: keys
  mountPath: /run/secrets/folio/keys
  readOnly: true
{{- end }}
{{- end -}}

{{/* volumes for TLS and token keys. Arguments: dict with "root" (the chart's context), "sts"
(the StatefulSet's name) and "replicas". Every replica's Secret "<sts>-<i>-tls" appears under
its pod's name; the CA comes from pod 0's. */}}
{{- define "folio.securityVolumes" -}}
{{- $root := .root -}}
{{- $sts := .sts -}}
{{- if $root.Values.tls.enabled }}
- name: tls
  projected:
    defaultMode: 0440
    sources:
      {{- range $i := until (int .replicas) }}
      - secret:
          name: {{ $sts }}-{{ $i }}-tls
          items:
            - key: tls.crt
              path: {{ $sts }}-{{ $i }}/tls.crt
            - key: tls.key
              path: {{ $sts }}-{{ $i }}/tls.key
            {{- if eq $i 0 }}
            - key: ca.crt
              path: ca.crt
            {{- end }}
      {{- end }}
{{- end }}
{{- if $root.Values.auth.enabled }}
- name: keys
  secret:
    secretName: {{ $root.Values.auth.keysSecret }}
    defaultMode: 0440
    items:
      {{- range $root.Values.auth.keyIds }}
      - key: {{ . }}.pub
        path: {{ . }}.pub
      {{- end }}
{{- end }}
{{- end -}}

{{/* A cert-manager Certificate for one pod. Arguments: dict with "root", "pod", "sts", "uri"
and "extraNames" (more DNS names, e.g. the registry's client Service). */}}
{{- define "folio.certificate" -}}
{{- $root := .root -}}
{{- $ns := $root.Release.Namespace -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ .pod }}
  labels:
    {{- include "folio.labels" $root | nindent 4 }}
spec:
  secretName: {{ .pod }}-tls
  duration: {{ $root.Values.tls.certManager.duration }}
  renewBefore: {{ $root.Values.tls.certManager.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages:
    - digital signature
    - server auth
    - client auth
  uris:
    - {{ .uri }}
  dnsNames:
    - {{ .pod }}.{{ .sts }}.{{ $ns }}.svc.{{ $root.Values.clusterDomain }}
    - {{ .pod }}.{{ .sts }}.{{ $ns }}.svc
    - {{ .pod }}.{{ .sts }}
    {{- range .extraNames }}
    - {{ . }}
    {{- end }}
    - localhost
  ipAddresses:
    - 127.0.0.1
  issuerRef:
    {{- toYaml $root.Values.tls.certManager.issuerRef | nindent 4 }}
{{- end -}}
