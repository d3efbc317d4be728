{{- define "vouch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vouch.fullname" -}}
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

{{- define "vouch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vouch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Every pod of the release (server and migration Job): what the NetworkPolicy selects. */}}
{{- define "vouch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vouch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The serving pods only: what the Service, the PDB and the anti-affinity select. */}}
{{- define "vouch.serverLabels" -}}
{{ include "vouch.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "vouch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vouch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vouch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vouch.secretName" -}}
{{- default (printf "%s-secrets" (include "vouch.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "vouch.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "vouch.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "vouch.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- end }}
{{- end }}

{{/* Where a CA key given as "file" is copied to, 0600 and owned by the Vouch user. */}}
{{- define "vouch.caKeyDir" -}}/run/vouch/ca{{- end }}

{{- define "vouch.caKeyRef" -}}
{{- if eq .key "file" }}
{{- printf "%s/%s" (include "vouch.caKeyDir" .) .file }}
{{- else }}
{{- .key }}
{{- end }}
{{- end }}

{{/* Refuse value sets that cannot work, each with one line saying what and what to do. */}}
{{- define "vouch.checks" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and (eq .Values.database.type "sqlite") (gt $replicas 1) }}
{{- fail (printf "replicaCount is %d but database.type is sqlite: SQLite runs one replica (its file is on a ReadWriteOnce volume); set database.type=postgresql with VOUCH_DATABASE_URL in the Secret, or replicaCount=1" $replicas) }}
{{- end }}
{{- if and (eq .Values.database.type "postgresql") (not .Values.secrets.existingSecret) (not .Values.secrets.databaseUrl) }}
{{- fail "database.type is postgresql but no database URL: set secrets.databaseUrl (postgresql+psycopg://…), or VOUCH_DATABASE_URL in secrets.existingSecret" }}
{{- end }}
{{- $dataKept := and (eq .Values.database.type "sqlite") .Values.persistence.enabled }}
{{- if and (not $dataKept) (not .Values.secrets.existingSecret) (not .Values.secrets.auditKey) }}
{{- fail "without the SQLite data volume (database.type=postgresql or persistence.enabled=false) the audit key must be in the Secret: set secrets.auditKey (openssl rand -hex 32), or audit_key in secrets.existingSecret; otherwise each pod makes its own and loses it" }}
{{- end }}
{{- if .Values.yubikey.enabled }}
{{- if gt $replicas 1 }}
{{- fail (printf "replicaCount is %d but yubikey.enabled: a YubiKey sits in one node, so one replica signs with it; use a network HSM for several" $replicas) }}
{{- end }}
{{- if not .Values.yubikey.pcscd.image.repository }}
{{- fail "yubikey.enabled needs yubikey.pcscd.image.repository: an image with pcscd and libccid (see docs/operations.md)" }}
{{- end }}
{{- if and (not .Values.yubikey.device.resourceName) (not .Values.nodeSelector) }}
{{- fail "yubikey.enabled with the USB bus by hostPath needs nodeSelector naming the node the YubiKey is plugged into (or yubikey.device.resourceName from a device plugin)" }}
{{- end }}
{{- end }}
{{- if and (or .Values.yubikey.enabled .Values.hsm.softhsm.enabled) (not .Values.hsm.module.path) }}
{{- fail "an HSM or YubiKey needs hsm.module.path, the PKCS#11 module's path in the pod (e.g. /opt/pkcs11/libykcs11.so)" }}
{{- end }}
{{- if and .Values.hsm.softhsm.enabled (not .Values.hsm.softhsm.tokens) }}
{{- fail "hsm.softhsm.enabled needs hsm.softhsm.tokens, a volume holding the initialised token directory (e.g. persistentVolumeClaim: {claimName: softhsm-tokens})" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host, the name Slack and the hosts reach Vouch by" }}
{{- end }}
{{- end }}

{{/* The pod security context: Vouch's user from the image; fsGroup so that it can read the 0400
     secret files (kubelet gives the pod's group read on them, nobody else). */}}
{{- define "vouch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "vouch.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* What every Vouch container (init, server, Job) sees of its settings. */}}
{{- define "vouch.env" -}}
- name: VOUCH_SECRETS_DIR
  value: {{ .Values.secrets.mountPath | quote }}
- name: VOUCH_POLICY_FILE
  value: /etc/vouch/policy/policy.yaml
- name: VOUCH_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: VOUCH_SLACK_API_URL
  value: {{ .Values.slack.apiUrl | quote }}
{{- with (include "vouch.publicUrl" .) }}
- name: VOUCH_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.database.type "sqlite" }}
{{- /* PostgreSQL's URL is a secret file: an environment value would take precedence over it. */}}
- name: VOUCH_DATABASE_URL
  value: {{ printf "sqlite:///%s" .Values.database.sqlitePath | quote }}
{{- end }}
- name: VOUCH_CA_KEY
  value: {{ include "vouch.caKeyRef" (dict "key" .Values.ca.key "file" "ca_key") | quote }}
{{- if .Values.ca.hostKey }}
- name: VOUCH_HOST_CA_KEY
  value: {{ include "vouch.caKeyRef" (dict "key" .Values.ca.hostKey "file" "host_ca_key") | quote }}
{{- end }}
- name: VOUCH_HOST_PATTERN
  value: {{ .Values.ca.hostPattern | quote }}
{{- with .Values.hsm.module.path }}
- name: VOUCH_PKCS11_MODULE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.hsm.softhsm.enabled }}
- name: SOFTHSM2_CONF
  value: /etc/vouch/softhsm/softhsm2.conf
{{- end }}
- name: VOUCH_AUDIT_CHECKPOINTS
  value: {{ printf "%s/audit-checkpoints.log" (include "vouch.checkpointsDir" .) | quote }}
- name: VOUCH_SCHEDULER_INTERVAL
  value: {{ .Values.scheduler.interval | quote }}
- name: VOUCH_DIGEST_AT
  value: {{ .Values.scheduler.digestAt | quote }}
- name: VOUCH_OFFBOARDING_INTERVAL
  value: {{ .Values.scheduler.offboardingInterval | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vouch.checkpointsDir" -}}
{{- if .Values.audit.checkpoints.existingClaim }}
{{- .Values.audit.checkpoints.mountPath }}
{{- else }}
{{- "/var/lib/vouch" }}
{{- end }}
{{- end }}

{{/* The Secret as files: 0400, every key a file named as Vouch reads it. */}}
{{- define "vouch.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "vouch.secretName" . }}
    defaultMode: 0400
{{- end }}
