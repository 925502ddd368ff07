"""Every API path, in one place (as Tempo's pkg/api/http.go keeps them)."""

PATH_HEALTHZ = "/healthz"
PATH_READY = "/ready"
PATH_INFERENCE = "/api/v1/metrics/inferences/{inference_id}"
PATH_SEMCONV_UNMAPPED = "/api/v1/semconv/unmapped"
PATH_STATUS = "/api/v1/status"
PATH_METRICS = "/metrics"
