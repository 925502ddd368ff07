"""Plain OTLP clients for tests: HTTP via urllib (a real socket, no test doubles) and gRPC via
a generic channel call with raw bytes."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any

import grpc

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}


class HttpResult:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def post(url: str, body: bytes | Any, content_type: str = "application/x-protobuf",
         headers: dict[str, str] | None = None, method: str = "POST", timeout: float = 30) -> HttpResult:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    request = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, dict(exc.headers), exc.read())


def post_otlp(base_url: str, signal: str, body: bytes, encoding: str = "protobuf", project: str = "",
              gzip_body: bool = False, path: str | None = None) -> HttpResult:
    headers = {}
    if project:
        headers["x-otelgw-project"] = project
    if gzip_body:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return post(base_url + (path or f"/v1/{signal}"), body, CONTENT_TYPES[encoding], headers)


def grpc_export(target: str, signal: str, body: bytes, project: str = "",
                compression: grpc.Compression = grpc.Compression.NoCompression) -> bytes:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)
        metadata = (("x-otelgw-project", project),) if project else ()
        return call(body, metadata=metadata, timeout=30, compression=compression)


def get_json(url: str, timeout: float = 30) -> tuple[int, Any]:
    import json

    result = post(url, None, method="GET", timeout=timeout)
    return result.status, json.loads(result.body) if result.body else None


def call_api(base_url: str, method: str, path: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    """A JSON API call with an optional bearer key: (status, decoded JSON or raw bytes)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = json.dumps(body).encode() if body is not None else None
    result = post(f"{base_url}{path}", data, "application/json", headers, method=method)
    try:
        return result.status, json.loads(result.body)
    except ValueError:
        return result.status, result.body
