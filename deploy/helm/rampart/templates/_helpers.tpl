{{/* Names, labels and the server's command line. */}}

{{- define "rampart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rampart.fullname" -}}
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

{{- define "rampart.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rampart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rampart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rampart.labels" -}}
helm.sh/chart: {{ include "rampart.chart" . }}
{{ include "rampart.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rampart.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rampart.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag (tag defaults to appVersion). */}}
{{- define "rampart.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Mount points of the Secrets (files only: never environment variables or arguments). */}}
{{- define "rampart.accessDir" -}}/var/run/secrets/rampart/access{{- end }}
{{- define "rampart.tlsDir" -}}/var/run/secrets/rampart/tls{{- end }}
{{- define "rampart.cloudDir" -}}/var/run/secrets/rampart/cloud{{- end }}

{{- define "rampart.tlsEnabled" -}}
{{- if or .Values.tls.http.enabled .Values.tls.http.mutual .Values.tls.grpc.enabled .Values.tls.grpc.mutual }}true{{ end }}
{{- end }}

{{- define "rampart.accessEnabled" -}}
{{- if or .Values.access.http .Values.access.grpc .Values.access.models }}true{{ end }}
{{- end }}

{{/* Combinations that cannot work are refused at render time, with the reason. */}}
{{- define "rampart.validate" -}}
{{- $repo := .Values.modelRepository }}
{{- if and $repo.persistentVolumeClaim $repo.url }}
{{- fail "modelRepository: set either persistentVolumeClaim or url, not both" }}
{{- end }}
{{- if not (or $repo.persistentVolumeClaim $repo.url) }}
{{- fail "modelRepository: set persistentVolumeClaim (a PVC holding the model repository) or url (s3://, gs://, as://)" }}
{{- end }}
{{- if and (include "rampart.accessEnabled" .) (not .Values.access.secretName) }}
{{- fail "access: restricted-API rules need access.secretName, the Secret that holds their credential values" }}
{{- end }}
{{- range .Values.access.http }}
{{- if has "health" .categories }}
{{- fail "access.http: the health category cannot be restricted here: kubelet's probes would need the credential in the pod spec" }}
{{- end }}
{{- end }}
{{- if and (include "rampart.tlsEnabled" .) (not .Values.tls.secretName) }}
{{- fail "tls: TLS needs tls.secretName, a kubernetes.io/tls Secret with tls.crt and tls.key (and ca.crt for mutual TLS)" }}
{{- end }}
{{- if .Values.tls.http.mutual }}
{{- fail "tls.http.mutual: kubelet's HTTP probes cannot present a client certificate; use TLS on HTTP and mutual TLS on gRPC (docs/tls.md)" }}
{{- end }}
{{- if and .Values.tls.grpc.mutual (not .Values.grpc.enabled) }}
{{- fail "tls.grpc.mutual needs grpc.enabled" }}
{{- end }}
{{- range .Values.server.extraArgs }}
{{- if and (regexMatch "^--(http-restricted-api|grpc-restricted-protocol|model-access)=" .) (not (regexMatch "^--[a-z-]+=[^:]*:(client-cert=|[^=]*=(@|env:))" .)) }}
{{- fail "server.extraArgs: a credential written into an argument is visible in the pod spec and in ps; use the access values (Secret files)" }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled .Values.podDisruptionBudget.minAvailable .Values.podDisruptionBudget.maxUnavailable }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}

{{/* rampart's flags (tritonserver's names; docs/operations.md, docs/security.md, docs/tls.md), as a YAML list. */}}
{{- define "rampart.args" -}}
{{- $v := .Values }}
{{- $access := include "rampart.accessDir" . }}
{{- $tls := include "rampart.tlsDir" . }}
{{- $a := list (printf "--model-repository=%s" (default "/models" $v.modelRepository.url)) }}
{{- $a = append $a "--backend-directory=/opt/rampart/onnxruntime" }}
{{- $a = append $a "--http-address=0.0.0.0" }}
{{- $a = append $a (printf "--http-port=%v" $v.ports.http) }}
{{- $a = append $a (printf "--allow-grpc=%t" $v.grpc.enabled) }}
{{- if $v.grpc.enabled }}
{{- $a = append $a "--grpc-address=0.0.0.0" }}
{{- $a = append $a (printf "--grpc-port=%v" $v.ports.grpc) }}
{{- end }}
{{- $a = append $a (printf "--allow-metrics=%t" $v.metrics.enabled) }}
{{- if $v.metrics.enabled }}
{{- $a = append $a (printf "--metrics-port=%v" $v.ports.metrics) }}
{{- end }}
{{- $a = append $a (printf "--model-control-mode=%s" $v.server.modelControlMode) }}
{{- range $v.server.loadModels }}
{{- $a = append $a (printf "--load-model=%s" .) }}
{{- end }}
{{- $a = append $a (printf "--strict-readiness=%t" $v.server.strictReadiness) }}
{{- $a = append $a (printf "--exit-on-error=%t" $v.server.exitOnError) }}
{{- $a = append $a (printf "--exit-timeout-secs=%v" $v.server.exitTimeoutSecs) }}
{{- $a = append $a (printf "--shutdown-grace-secs=%v" $v.server.shutdownGraceSecs) }}
{{- $a = append $a (printf "--log-format=%s" $v.server.logFormat) }}
{{- $a = append $a (printf "--log-verbose=%v" $v.server.logVerbose) }}
{{- if $v.tls.http.enabled }}
{{- $a = append $a "--http-use-ssl=true" }}
{{- $a = append $a (printf "--http-server-cert=%s/tls.crt" $tls) }}
{{- $a = append $a (printf "--http-server-key=%s/tls.key" $tls) }}
{{- end }}
{{- if or $v.tls.grpc.enabled $v.tls.grpc.mutual }}
{{- $a = append $a "--grpc-use-ssl=true" }}
{{- $a = append $a (printf "--grpc-server-cert=%s/tls.crt" $tls) }}
{{- $a = append $a (printf "--grpc-server-key=%s/tls.key" $tls) }}
{{- end }}
{{- if $v.tls.grpc.mutual }}
{{- $a = append $a "--grpc-use-ssl-mutual=true" }}
{{- $a = append $a (printf "--grpc-root-cert=%s/ca.crt" $tls) }}
{{- end }}
{{- if include "rampart.tlsEnabled" . }}
{{- $a = append $a (printf "--tls-reload-interval-secs=%v" $v.tls.reloadIntervalSecs) }}
{{- end }}
{{- /* Credentials: `@<file>` in the mounted Secret, never the value itself. */}}
{{- range $v.access.http }}
{{- $a = append $a (printf "--http-restricted-api=%s:%s=@%s/%s" (join "," .categories) .header $access .secretKey) }}
{{- end }}
{{- range $v.access.grpc }}
{{- $a = append $a (printf "--grpc-restricted-protocol=%s:%s=@%s/%s" (join "," .categories) .key $access .secretKey) }}
{{- end }}
{{- range $v.access.models }}
{{- $a = append $a (printf "--model-access=%s:%s=@%s/%s" (join "," .models) .key $access .secretKey) }}
{{- end }}
{{- range $v.access.clientCertAccess }}
{{- $a = append $a (printf "--client-cert-access=%s" .) }}
{{- end }}
{{- range $v.server.extraArgs }}
{{- $a = append $a (toString .) }}
{{- end }}
{{- toYaml $a }}
{{- end }}
