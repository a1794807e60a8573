{{/* Names and labels shared by every template. */}}

{{- define "dbmigrate-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dbmigrate-operator.fullname" -}}
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

{{- define "dbmigrate-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbmigrate-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dbmigrate-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dbmigrate-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dbmigrate-operator
{{- end }}

{{- define "dbmigrate-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dbmigrate-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dbmigrate-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- /* The leader-election Lease's name (values: peering.name, the key's name from before the Lease). */}}
{{- define "dbmigrate-operator.leaseName" -}}
{{- default (include "dbmigrate-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{- define "dbmigrate-operator.webhookService" -}}
{{- printf "%s-webhook" (include "dbmigrate-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dbmigrate-operator.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "dbmigrate-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the operator reads the serving certificate (gating/server.py DEFAULT_CERT_DIR). */}}
{{- define "dbmigrate-operator.certDir" -}}
/etc/dbmigrate-operator/webhook-tls
{{- end }}
