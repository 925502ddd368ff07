"""Every API path, in one place (as Tempo's pkg/api/http.go keeps them), with the role each
needs. `None` is public: health and readiness for load balancers, metrics for Prometheus."""

PATH_HEALTHZ = "/healthz"
PATH_READY = "/ready"
PATH_METRICS = "/metrics"
PATH_STATUS = "/api/v1/status"
PATH_OPENAPI = "/api/openapi.json"
PATH_INFERENCES_LIST = "/api/v1/metrics/inferences/list"
PATH_INFERENCES_EXPORT = "/api/v1/metrics/inferences/export"
PATH_INFERENCE = "/api/v1/metrics/inferences/{inference_id}"
PATH_INFERENCE_FEEDBACK = "/api/v1/metrics/inferences/{inference_id}/feedback"
PATH_SEMCONV_UNMAPPED = "/api/v1/semconv/unmapped"
PATH_INFERENCE_TRACE = "/api/v1/metrics/inferences/{inference_id}/trace"
# Grafana Tempo's HTTP API (pkg/api/http.go), so Grafana can use otelgw as a Tempo data source.
PATH_TEMPO_TRACE = "/api/traces/{trace_id}"
PATH_TEMPO_TRACE_V2 = "/api/v2/traces/{trace_id}"
PATH_TEMPO_ECHO = "/api/echo"
PATH_TEMPO_BUILDINFO = "/api/status/buildinfo"
PATH_KEYS = "/api/v1/keys"
PATH_KEY = "/api/v1/keys/{key_id}"

VIEWER, EDITOR, ADMIN = "viewer", "editor", "admin"
