"""Map an OTLP metrics request to `metric_points`: one row per data point, nothing dropped."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.json_format import MessageToDict

from otelgw.pipeline.anyvalue import attrs_to_dict, str_map, to_json
from otelgw.pipeline.mapper import MapperOptions, resource_context
from otelgw.pipeline.rows import MetricPointRow, RowBatch, ts

_TEMPORALITY = ("unspecified", "delta", "cumulative")


def _temporality(value: int) -> str:
    return _TEMPORALITY[value] if 0 <= value < 3 else str(value)


def _finite(value: float) -> float | str:
    """NaN and ±Inf as the strings ClickHouse reads into Float64 (JSON has no such numbers: the
    encoder wrote null, which stored 0)."""
    return value if math.isfinite(value) else ("nan" if value != value else "inf" if value > 0 else "-inf")


def _number(point: Any) -> float | str:
    return float(point.as_int) if point.WhichOneof("value") == "as_int" else _finite(point.as_double)


def map_metrics(request: Any, project_header: str, received_ns: int, options: MapperOptions) -> RowBatch:
    batch = RowBatch(metric_points=[])
    out = batch.metric_points
    for resource_metrics in request.resource_metrics:
        resource = resource_context(resource_metrics.resource, project_header, options)
        resource_map, project, service = resource.attributes, resource.project, resource.service
        for scope_metrics in resource_metrics.scope_metrics:
            scope_name = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data") or "unknown"
                data = getattr(metric, kind) if kind != "unknown" else None
                temporality = _temporality(getattr(data, "aggregation_temporality", 0)) if data is not None else ""
                monotonic = bool(getattr(data, "is_monotonic", False))
                for point in (data.data_points if data is not None else ()):
                    row = MetricPointRow(
                        project_id=project,
                        service_name=service,
                        metric_name=metric.name,
                        description=metric.description,
                        unit=metric.unit,
                        type=kind,
                        aggregation_temporality=temporality,
                        is_monotonic=monotonic,
                        timestamp=ts(point.time_unix_nano or received_ns),
                        start_timestamp=ts(point.start_time_unix_nano),
                        attributes=str_map(attrs_to_dict(point.attributes, options.max_attributes),
                                           options.max_attribute_chars),
                        resource_attributes=resource_map,
                        scope_name=scope_name,
                    )
                    if kind in ("gauge", "sum"):
                        row.value = _number(point)
                    elif kind in ("histogram", "exponential_histogram", "summary"):
                        row.count = point.count
                        row.sum = _finite(point.sum)
                        if kind != "summary":
                            row.min = _finite(point.min) if point.HasField("min") else None
                            row.max = _finite(point.max) if point.HasField("max") else None
                        if kind == "histogram":
                            row.bucket_counts = list(point.bucket_counts)
                            row.explicit_bounds = [_finite(b) for b in point.explicit_bounds]
                        else:
                            row.extra = to_json(MessageToDict(point))
                    if kind in ("gauge", "sum", "histogram") and point.exemplars:
                        row.extra = to_json([MessageToDict(e) for e in point.exemplars])
                    out.append(row)
    return batch
