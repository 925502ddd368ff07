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
# Feedback of a whole trace: the only way to evaluations of spans that are no inference.
PATH_TRACE_FEEDBACK = "/api/v1/traces/{trace_id}/feedback"
# Grafana Tempo's HTTP API (pkg/api/http.go), so Grafana can use otelgw as a Tempo data source.
PATH_TEMPO_TRACE = "/api/traces/{trace_id}"
PATH_TEMPO_TRACE_V2 = "/api/v2/traces/{trace_id}"
PATH_TEMPO_SEARCH = "/api/search"
PATH_TEMPO_TAGS = "/api/search/tags"
PATH_TEMPO_TAGS_V2 = "/api/v2/search/tags"
PATH_TEMPO_TAG_VALUES = "/api/search/tag/{tag}/values"
PATH_TEMPO_TAG_VALUES_V2 = "/api/v2/search/tag/{tag}/values"
PATH_TEMPO_ECHO = "/api/echo"
PATH_TEMPO_BUILDINFO = "/api/status/buildinfo"
# The Bud metrics service's API (budmetrics), so its dashboards and producers can use otelgw.
PATH_ANALYTICS = "/observability/analytics"
PATH_OBSERVABILITY_ADD = "/observability/add"
PATH_SESSIONS = "/api/v1/sessions"
PATH_SESSION = "/api/v1/sessions/{session_id}"
PATH_WHOAMI = "/api/v1/whoami"
PATH_RETENTION = "/api/v1/retention"
PATH_DATA_DELETE = "/api/v1/data/delete"
PATH_DATA_DELETE_JOB = "/api/v1/data/delete/{job_id}"
PATH_AUDIT = "/api/v1/audit"
PATH_KEYS = "/api/v1/keys"
PATH_KEY = "/api/v1/keys/{key_id}"
PATH_DEAD_LETTER = "/api/v1/dead-letter"
PATH_DEAD_LETTER_REPLAY = "/api/v1/dead-letter/replay"

VIEWER, EDITOR, ADMIN = "viewer", "editor", "admin"

# The web UI (otelgw/web/): the app shell for every page path (deep links survive a reload) and
# the static assets under a content hash.
UI_PAGES = ("/", "/inferences/{inference_id}", "/traces/{trace_id}", "/sessions", "/sessions/{session_id}",
            "/dashboard", "/settings")
PATH_UI_ASSET = "/assets/{version}/{path:.+}"
