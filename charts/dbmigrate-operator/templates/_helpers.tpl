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

{{- /*
The ValidatingAdmissionPolicy apiVersion to render, "" when admissionPolicy.enabled is false.
admissionregistration.k8s.io/v1 from Kubernetes 1.30; on 1.29 only v1beta1 exists, and only where
the cluster turned it on (feature gate + runtime-config). Never silently nothing: a cluster that
serves neither fails the install unless the policy is turned off explicitly.
admissionPolicy.apiVersion forces one (offline `helm template` / `helm lint` without capabilities).
*/}}
{{- define "dbmigrate-operator.vapApiVersion" -}}
{{- if .Values.admissionPolicy.enabled }}
{{- $group := "admissionregistration.k8s.io" }}
{{- with .Values.admissionPolicy.apiVersion }}
{{- printf "%s/%s" $group . }}
{{- else }}
{{- if .Capabilities.APIVersions.Has (printf "%s/v1/ValidatingAdmissionPolicy" $group) }}
{{- printf "%s/v1" $group }}
{{- else if .Capabilities.APIVersions.Has (printf "%s/v1beta1/ValidatingAdmissionPolicy" $group) }}
{{- printf "%s/v1beta1" $group }}
{{- else }}
{{- fail (printf "admissionPolicy.enabled=true, but this API server serves no ValidatingAdmissionPolicy (%s/v1 is GA from Kubernetes 1.30; on 1.29 %s/v1beta1 must be turned on: feature gate ValidatingAdmissionPolicy=true and --runtime-config=%s/v1beta1=true). Without it nothing limits the operator's own Job creation and Pod patches, nor spec.image to job.allowedImages. Turn the API on, or install without the policy: --set admissionPolicy.enabled=false (docs/install.md). With helm template, pass --api-versions %s/v1/ValidatingAdmissionPolicy (or set admissionPolicy.apiVersion)." $group $group $group $group) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
