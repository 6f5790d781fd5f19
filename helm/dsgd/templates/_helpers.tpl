{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name in labels: nameOverride, else the chart's. */}}
{{- define "dsgd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, a DNS label (<= 63 characters): fullnameOverride, else
<release>-<name> (just <release> when it already contains the name). */}}
{{- define "dsgd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "dsgd.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pod (never change across upgrades: selectors are immutable). */}}
{{- define "dsgd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsgd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of every object the chart creates. */}}
{{- define "dsgd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dsgd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsgd
{{- end -}}

{{/* Labels of the monitoring objects: ours, the shared monitoring.labels, then the object's own. */}}
{{- define "dsgd.monitoringLabels" -}}
{{- $root := index . 0 -}}
{{- $own := index . 1 -}}
{{ include "dsgd.labels" $root }}
{{- with (mergeOverwrite (dict) ($root.Values.monitoring.labels | default dict) ($own | default dict)) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "dsgd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dsgd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference from (list <image values> <root>): global.imageRegistry, else the
image's registry, then the repository, then @digest when one is set (the tag is then
ignored: a digest names exactly one image), else :tag (default: the chart's appVersion).
*/}}
{{- define "dsgd.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- $registry := $root.Values.global.imageRegistry | default $image.registry -}}
{{- $name := $image.repository -}}
{{- if $registry -}}
{{- $name = printf "%s/%s" $registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $name $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name ($image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "dsgd.operatorImage" -}}
{{- include "dsgd.image" (list .Values.image .) -}}
{{- end -}}

{{- define "dsgd.trainerImage" -}}
{{- include "dsgd.image" (list .Values.trainerImage .) -}}
{{- end -}}

{{/* Pull secrets of the chart's pods: global.imagePullSecrets, then imagePullSecrets. */}}
{{- define "dsgd.imagePullSecrets" -}}
{{- with concat (.Values.global.imagePullSecrets | default list) (.Values.imagePullSecrets | default list) | uniq }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
RBAC: exactly the operator's permissions (dsgd_operator.reconcile.permissions; the tests
compare the rendered rules with it and, on a real cluster, with the API server's audit log
of what the operator did), split by scope.
*/}}
{{- define "dsgd.namespacedRules" -}}
- apiGroups: ["dsgd.io"]
  resources: ["distributedsgdjobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["dsgd.io"]
  resources: ["distributedsgdjobs/status", "sgdexperiments/status"]
  verbs: ["patch"]
- apiGroups: ["dsgd.io"]
  resources: ["sgdexperiments"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create"]
- apiGroups: ["scheduling.volcano.sh", "scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Namespaced mode only: the KopfPeering of each watched namespace. */}}
{{- define "dsgd.namespacedPeeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end -}}

{{/*
Cluster-wide mode only: kopf notices CRDs (re)installed, and the ClusterKopfPeering.
Namespaced mode needs no cluster-scoped right at all (kopf serves exactly the named
namespaces and discovers resources once, at start).
*/}}
{{- define "dsgd.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end -}}
