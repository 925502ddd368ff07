#!/usr/bin/env python3
"""Builds the otelgw Grafana dashboards in deploy/grafana/dashboards/ (stdlib only).

    python3 deploy/grafana/build_dashboards.py [--out DIR]

The JSON files are generated, so that the three dashboards share one data source, one panel style
and one set of label filters: edit this script, run it and commit both. The output is
deterministic (sorted keys, 2-space indent); tests/test_deploy_assets.py checks that the committed
files are this script's output and that every expression only reads series the gateway exposes
on /metrics or the recording rules in deploy/prometheus/rules/ define.

- otelgw-overview.json: all models (requests, errors, latency, TTFT, tokens, cost), by model.
- otelgw-model.json: one model ($model, in $project), by provider, mostly from the recording rules.
- otelgw-gateway.json: the gateway itself (receivers, pipeline, WAL, writer, tail sampler).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TAG = "otelgw"
GRID_WIDTH = 24
RATE = "$__rate_interval"

Panel = dict[str, Any]
Target = tuple[str, str]  # (PromQL expression, legend format)


class Grid:
    """Places panels left to right, wrapping to a new row when the width is used up."""

    def __init__(self) -> None:
        self.x = self.y = self.row_height = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > GRID_WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _targets(targets: list[Target], instant: bool) -> list[dict[str, Any]]:
    return [{"datasource": DATASOURCE, "editorMode": "code", "expr": expr, "instant": instant,
             "legendFormat": legend or "__auto", "range": not instant, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)]


def _thresholds(steps: list[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def timeseries(grid: Grid, title: str, description: str, targets: list[Target], unit: str, *, w: int = 12,
               h: int = 8, threshold: float | None = None, max_value: float | None = None,
               links: list[dict[str, Any]] | None = None) -> Panel:
    custom: dict[str, Any] = {
        "axisSoftMin": 0, "drawStyle": "line", "fillOpacity": 10, "gradientMode": "none", "lineInterpolation": "linear",
        "lineWidth": 1, "pointSize": 4, "showPoints": "never", "spanNulls": False, "stacking": {"mode": "none"},
        "thresholdsStyle": {"mode": "off" if threshold is None else "dashed"},
    }
    defaults: dict[str, Any] = {
        "color": {"mode": "palette-classic"}, "custom": custom, "links": links or [], "unit": unit,
        "thresholds": _thresholds([("green", None)] if threshold is None else [("transparent", None),
                                                                                 ("red", threshold)]),
    }
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "datasource": DATASOURCE, "description": description, "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid.place(w, h), "id": grid.take_id(),
        "options": {"legend": {"calcs": ["mean", "max", "lastNotNull"], "displayMode": "table", "placement": "bottom",
                               "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": _targets(targets, instant=False), "title": title, "type": "timeseries",
    }


def stat(grid: Grid, title: str, description: str, expr: str, unit: str, *, w: int = 4, h: int = 4,
         steps: list[tuple[str, float | None]] | None = None, mappings: list[dict[str, Any]] | None = None,
         decimals: int | None = None) -> Panel:
    defaults: dict[str, Any] = {"color": {"mode": "thresholds"}, "mappings": mappings or [], "unit": unit,
                                "thresholds": _thresholds(steps or [("blue", None)])}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DATASOURCE, "description": description, "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid.place(w, h), "id": grid.take_id(),
        "options": {"colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showPercentChange": False, "textMode": "auto", "wideLayout": True},
        "targets": _targets([(expr, "")], instant=True), "title": title, "type": "stat",
    }


def variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "allValue": ".*" if multi else None, "current": {}, "datasource": DATASOURCE, "definition": query,
        "hide": 0, "includeAll": multi, "label": label, "multi": multi, "name": name, "options": [],
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1, "type": "query",
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel],
              variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": description, "editable": True, "fiscalYearStartMonth": 0, "graphTooltip": 1, "id": None,
        "links": [{"asDropdown": False, "icon": "external link", "includeVars": False, "keepTime": True,
                   "tags": [TAG], "targetBlank": False, "title": "otelgw", "type": "dashboards"}],
        "panels": panels, "refresh": "30s", "schemaVersion": SCHEMA_VERSION, "tags": [TAG],
        "templating": {"list": variables}, "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "timezone": "", "title": title, "uid": uid, "version": 1, "weekStart": "",
    }


def quantile(q: float, metric: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}le) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


ERROR_STEPS = [("green", None), ("orange", 0.01), ("red", 0.05)]
MODEL_LINK = [{"title": "Model details", "url": "/d/otelgw-model/otelgw-model?var-model=${__field.labels.model}"
               "&${project:queryparam}&${__url_time_range}"}]


def overview() -> dict[str, Any]:
    g, p = Grid(), 'project=~"$project"'
    errors = f'sum by (model) (rate(inference_requests_total{{{p},status="error"}}[{RATE}]))'
    requests = f"sum by (model) (rate(inference_requests_total{{{p}}}[{RATE}]))"
    panels = [
        stat(g, "Inferences/s", "Inferences per second over the last 5m (recording rule).",
             f"sum(model:inference_requests:rate5m{{{p}}})", "reqps"),
        stat(g, "Error ratio", "Share of inferences that ended in error over the last 5m.",
             f"sum(model:inference_errors:rate5m{{{p}}}) / sum(model:inference_requests:rate5m{{{p}}})",
             "percentunit", steps=ERROR_STEPS),
        stat(g, "Inferences", "Inferences in the dashboard's time range.",
             f"sum(increase(inference_requests_total{{{p}}}[$__range]))", "short", decimals=0),
        stat(g, "Tokens", "Input and output tokens in the dashboard's time range (cached tokens are part of input).",
             f'sum(increase(inference_tokens_total{{{p},type=~"input|output"}}[$__range]))', "short", decimals=0),
        stat(g, "Cost", "Cost in US dollars in the dashboard's time range (otelgw's price table).",
             f"sum(increase(inference_cost_usd_total{{{p}}}[$__range]))", "currencyUSD"),
        stat(g, "Active models", "Models with inferences in the last 5m.",
             f"count(sum by (model) (model:inference_requests:rate5m{{{p}}}) > 0)", "none"),
        timeseries(g, "Inferences/s by model", "Click a series for the model's dashboard.",
                   [(requests, "{{model}}")], "reqps", links=MODEL_LINK),
        timeseries(g, "Error ratio by model", "Errors / inferences; the alert InferenceErrorRatioHigh fires above 5%.",
                   [(f"{errors} / ({requests} > 0)", "{{model}}")], "percentunit", threshold=0.05),
        timeseries(g, "Latency p50 by model", "Median inference latency (span duration).",
                   [(quantile(0.5, "inference_latency_seconds", p, "model, "), "{{model}}")], "s"),
        timeseries(g, "Latency p99 by model", "99th percentile latency; InferenceLatencyP99High fires above 5s.",
                   [(quantile(0.99, "inference_latency_seconds", p, "model, "), "{{model}}")], "s", threshold=5),
        timeseries(g, "Time to first token p95 by model",
                   "Streamed inferences only; InferenceTTFTP95High fires above 2s.",
                   [(quantile(0.95, "inference_ttft_seconds", p, "model, "), "{{model}}")], "s", threshold=2),
        timeseries(g, "Tokens/s by model and type", "Input, output and cached (part of input) tokens per second.",
                   [(f"sum by (model, type) (rate(inference_tokens_total{{{p}}}[{RATE}]))", "{{model}} {{type}}")],
                   "short"),
        timeseries(g, "Cost by model ($/h)", "US dollars per hour at the current rate.",
                   [(f"sum by (model) (rate(inference_cost_usd_total{{{p}}}[{RATE}])) * 3600", "{{model}}")],
                   "currencyUSD"),
        timeseries(g, "Inferences/s by provider", "Inferences per second by provider and outcome.",
                   [(f"sum by (provider, status) (rate(inference_requests_total{{{p}}}[{RATE}]))",
                     "{{provider}} {{status}}")], "reqps"),
    ]
    return dashboard("otelgw-overview", "otelgw / Overview",
                     "LLM inferences ingested by otelgw: traffic, errors, latency, tokens and cost by model.", panels,
                     [variable("project", "Project", "label_values(inference_requests_total, project)", multi=True)])


def model() -> dict[str, Any]:
    g, s = Grid(), 'project=~"$project",model="$model"'
    by_provider = "{{project}} / {{provider}}"
    requests = f"sum(rate(inference_requests_total{{{s}}}[{RATE}]))"
    panels = [
        stat(g, "Inferences/s", "Over the last 5m (recording rule).",
             f"sum(model:inference_requests:rate5m{{{s}}})", "reqps"),
        stat(g, "Error ratio", "Over the last 5m (recording rules).",
             f"sum(model:inference_errors:rate5m{{{s}}}) / sum(model:inference_requests:rate5m{{{s}}})",
             "percentunit", steps=ERROR_STEPS),
        stat(g, "Latency p99", "Over all providers and the selected projects.",
             quantile(0.99, "inference_latency_seconds", s, ""), "s",
             steps=[("green", None), ("orange", 2), ("red", 5)]),
        stat(g, "TTFT p95", "Time to first token of streamed inferences.",
             quantile(0.95, "inference_ttft_seconds", s, ""), "s", steps=[("green", None), ("orange", 1), ("red", 2)]),
        stat(g, "Tokens", "Input and output tokens in the dashboard's time range.",
             f'sum(increase(inference_tokens_total{{{s},type=~"input|output"}}[$__range]))', "short", decimals=0),
        stat(g, "Cost", "US dollars in the dashboard's time range.",
             f"sum(increase(inference_cost_usd_total{{{s}}}[$__range]))", "currencyUSD"),
        timeseries(g, "Inferences/s by outcome", "Successful and failed inferences per second.",
                   [(f"sum by (status) (rate(inference_requests_total{{{s}}}[{RATE}]))", "{{status}}")], "reqps"),
        timeseries(g, "Error ratio by provider", "Recording rule model:inference_errors:ratio_rate5m; the alert fires "
                   "above 5% for 5m.", [(f"model:inference_errors:ratio_rate5m{{{s}}}", by_provider)],
                   "percentunit", threshold=0.05),
        timeseries(g, "Latency p50 and p99 by provider", "Recording rules (5m windows); the alert fires above 5s.",
                   [(f"model:inference_latency_seconds:p50_5m{{{s}}}", f"p50 {by_provider}"),
                    (f"model:inference_latency_seconds:p99_5m{{{s}}}", f"p99 {by_provider}")], "s", threshold=5),
        timeseries(g, "Time to first token p95 by provider", "Recording rule; the alert fires above 2s.",
                   [(f"model:inference_ttft_seconds:p95_5m{{{s}}}", by_provider)], "s", threshold=2),
        timeseries(g, "Mean latency and time to first token", "Sum / count of the histograms.",
                   [(f"sum(rate(inference_latency_seconds_sum{{{s}}}[{RATE}])) / "
                     f"sum(rate(inference_latency_seconds_count{{{s}}}[{RATE}]))", "latency"),
                    (f"sum(rate(inference_ttft_seconds_sum{{{s}}}[{RATE}])) / "
                     f"sum(rate(inference_ttft_seconds_count{{{s}}}[{RATE}]))", "time to first token")], "s"),
        timeseries(g, "Tokens/s by type", "Recording rule model:inference_tokens:rate5m.",
                   [(f"sum by (type) (model:inference_tokens:rate5m{{{s}}})", "{{type}}")], "short"),
        timeseries(g, "Tokens per inference by type", "Average tokens per inference.",
                   [(f"sum by (type) (rate(inference_tokens_total{{{s}}}[{RATE}])) / ignoring (type) group_left "
                     f"{requests}", "{{type}}")], "short"),
        timeseries(g, "Cost by provider ($/h)", "Recording rule model:inference_cost_usd:rate5m x 3600.",
                   [(f"sum by (project, provider) (model:inference_cost_usd:rate5m{{{s}}}) * 3600", by_provider)],
                   "currencyUSD"),
    ]
    return dashboard("otelgw-model", "otelgw / Model", "One model's inferences in the selected projects, by provider.",
                     panels, [variable("project", "Project", "label_values(inference_requests_total, project)",
                                       multi=True),
                              variable("model", "Model",
                                       'label_values(inference_requests_total{project=~"$project"}, model)',
                                       multi=False)])


def gateway() -> dict[str, Any]:
    g, i = Grid(), 'job="otelgw",instance=~"$instance"'
    retryable = 'reason=~"rate_limited|unavailable"'
    panels = [
        stat(g, "Gateways up", "Targets of the Prometheus job otelgw that answered the last scrape.",
             f"sum(up{{{i}}})", "none", decimals=0),
        stat(g, "Store", "Whether the last insert into ClickHouse worked (worst gateway).",
             f"min(otelgw_writer_store_healthy{{{i}}})", "none", steps=[("red", None), ("green", 1)],
             mappings=[{"options": {"0": {"color": "red", "index": 0, "text": "unhealthy"},
                                    "1": {"color": "green", "index": 1, "text": "healthy"}}, "type": "value"}]),
        stat(g, "WAL used", "Write-ahead log bytes / OTELGW_WAL_MAX_BYTES (fullest gateway); exports are refused "
             "when full.", f"max(otelgw_wal_bytes{{{i}}} / otelgw_wal_max_bytes{{{i}}})", "percentunit",
             steps=[("green", None), ("orange", 0.5), ("red", 0.8)]),
        stat(g, "Writer lag", "Age of the oldest accepted request not yet in ClickHouse (worst gateway).",
             f"max(otelgw_writer_lag_seconds{{{i}}})", "s", steps=[("green", None), ("orange", 10), ("red", 60)]),
        stat(g, "Accepted items/s", "Spans, log records and data points accepted per second.",
             f"sum(rate(otelgw_receiver_accepted_items_total{{{i}}}[{RATE}]))", "short"),
        stat(g, "Retryable refusals/s", "Exports answered with rate_limited or unavailable.",
             f"sum(rate(otelgw_receiver_refused_requests_total{{{i},{retryable}}}[{RATE}]))", "reqps",
             steps=[("green", None), ("red", 0.001)]),
        timeseries(g, "Accepted items/s by signal", "Spans (traces), log records (logs), data points (metrics).",
                   [(f"sum by (signal) (rate(otelgw_receiver_accepted_items_total{{{i}}}[{RATE}]))", "{{signal}}")],
                   "short"),
        timeseries(g, "Export requests and rejected items/s", "Requests received by signal, and items rejected "
                   "through OTLP partial success by reason.",
                   [(f"sum by (signal) (rate(otelgw_receiver_requests_total{{{i}}}[{RATE}]))", "{{signal}} requests"),
                    (f"sum by (signal, reason) (rate(otelgw_receiver_rejected_items_total{{{i}}}[{RATE}]))",
                     "{{signal}} rejected ({{reason}})")], "short"),
        timeseries(g, "Export request duration by protocol", "p50 and p99 of OTLP export requests.",
                   [(quantile(0.5, "otelgw_receiver_request_duration_seconds", i, "protocol, "), "p50 {{protocol}}"),
                    (quantile(0.99, "otelgw_receiver_request_duration_seconds", i, "protocol, "),
                     "p99 {{protocol}}")], "s"),
        timeseries(g, "Refusals/s by reason", "Receiver: requests answered with an error. Pipeline: why requests "
                   "were refused before they were durable.",
                   [(f"sum by (reason) (rate(otelgw_receiver_refused_requests_total{{{i}}}[{RATE}]))",
                     "receiver {{reason}}"),
                    (f"sum by (reason) (rate(otelgw_pipeline_refused_requests_total{{{i}}}[{RATE}]))",
                     "pipeline {{reason}}")], "reqps"),
        timeseries(g, "Queue depth", "Durable records not yet mapped, and records not yet committed in ClickHouse.",
                   [(f"otelgw_pipeline_queue_records{{{i}}}", "{{instance}} mapper queue"),
                    (f"otelgw_wal_pending_records{{{i}}}", "{{instance}} not yet in ClickHouse")], "short"),
        timeseries(g, "WAL bytes and limit", "OtelgwWALNearFull fires above 80% of the limit.",
                   [(f"otelgw_wal_bytes{{{i}}}", "{{instance}} bytes"),
                    (f"otelgw_wal_max_bytes{{{i}}}", "{{instance}} limit")], "bytes"),
        timeseries(g, "Writer lag", "OtelgwWriterLagging fires above 60s for 5m.",
                   [(f"otelgw_writer_lag_seconds{{{i}}}", "{{instance}}")], "s", threshold=60),
        timeseries(g, "Rows per insert by table", "Median and mean rows per ClickHouse insert.",
                   [(quantile(0.5, "otelgw_writer_batch_rows", i, "table, "), "p50 {{table}}"),
                    (f"sum by (table) (rate(otelgw_writer_batch_rows_sum{{{i}}}[{RATE}])) / "
                     f"sum by (table) (rate(otelgw_writer_batch_rows_count{{{i}}}[{RATE}]))", "mean {{table}}")],
                   "short"),
        timeseries(g, "Insert duration p99 by table", "Successful ClickHouse inserts.",
                   [(quantile(0.99, "otelgw_writer_insert_duration_seconds", i, "table, "), "{{table}}")], "s"),
        timeseries(g, "Rows written/s by table", "Rows inserted into ClickHouse.",
                   [(f"sum by (table) (rate(otelgw_writer_rows_written_total{{{i}}}[{RATE}]))", "{{table}}")],
                   "short"),
        timeseries(g, "Native fast path", "Span rows ClickHouse wrote from request bytes (fast_path=auto; 0 when "
                   "off), and trace requests left to Python because their protobuf bytes were not canonical.",
                   [(f"sum(rate(otelgw_writer_native_rows_total{{{i}}}[{RATE}]))", "native span rows/s"),
                    (f"sum(rate(otelgw_fast_path_non_canonical_requests_total{{{i}}}[{RATE}]))",
                     "non-canonical requests/s")], "short"),
        timeseries(g, "Worker inserts", "Mapping chunks whose worker process inserted their rows itself "
                   "(worker_inserts=auto, a ClickHouse server; 0 when off), and chunks whose worker could not insert "
                   "some table: the gateway's writer inserted the rest under the same tokens.",
                   [(f"sum(rate(otelgw_worker_inserted_chunks_total{{{i}}}[{RATE}]))", "chunks/s"),
                    (f"sum(rate(otelgw_worker_insert_fallbacks_total{{{i}}}[{RATE}]))", "fallbacks/s")], "short"),
        timeseries(g, "Insert errors, dead letters and map errors", "Failed insert attempts (retried), rows "
                   "ClickHouse rejected (kept in dead-letter files) and records the mapper failed on.",
                   [(f"sum(rate(otelgw_writer_insert_errors_total{{{i}}}[{RATE}]))", "insert errors/s"),
                    (f"sum(rate(otelgw_writer_dead_letter_rows_total{{{i}}}[{RATE}]))", "dead-letter rows/s"),
                    (f"sum(rate(otelgw_pipeline_map_errors_total{{{i}}}[{RATE}]))", "map errors/s")], "short"),
        timeseries(g, "Store healthy", "1 while the last insert worked; OtelgwStoreUnhealthy fires after 2m at 0.",
                   [(f"otelgw_writer_store_healthy{{{i}}}", "{{instance}}")], "none", max_value=1),
        timeseries(g, "Mapping CPU (cores)", "CPU seconds per second spent mapping records in every worker process "
                   "(about the cores mapping takes), and worker pools replaced after a worker died.",
                   [(f"sum by (instance) (rate(otelgw_mapping_cpu_seconds_total{{{i}}}[{RATE}]))", "{{instance}}"),
                    (f"sum(increase(otelgw_mapping_worker_restarts_total{{{i}}}[{RATE}]))", "pool restarts")],
                   "short"),
        timeseries(g, "Tail sampler decisions/s", "Traces kept and dropped, spans arriving after their trace's "
                   "decision, and early decisions under memory pressure.",
                   [(f"sum by (decision) (rate(otelgw_sampler_traces_total{{{i}}}[{RATE}]))", "traces {{decision}}"),
                    (f"sum by (decision) (rate(otelgw_sampler_late_spans_total{{{i}}}[{RATE}]))",
                     "late spans {{decision}}"),
                    (f"sum(rate(otelgw_sampler_early_decisions_total{{{i}}}[{RATE}]))", "early decisions")],
                   "short"),
        timeseries(g, "Traces kept/s by policy", "The tail-sampling policy that kept each trace.",
                   [(f"sum by (policy) (rate(otelgw_sampler_kept_by_policy_total{{{i}}}[{RATE}]))", "{{policy}}")],
                   "short"),
        timeseries(g, "Tail sampler buffer", "Traces and spans waiting for a decision.",
                   [(f"sum(otelgw_sampler_buffered_traces{{{i}}})", "traces"),
                    (f"sum(otelgw_sampler_buffered_spans{{{i}}})", "spans")], "short"),
        timeseries(g, "Buffered bytes", "Bytes waiting in the tail sampler and in the writer for its next flush.",
                   [(f"sum(otelgw_sampler_buffered_bytes{{{i}}})", "tail sampler"),
                    (f"sum(otelgw_writer_buffered_bytes{{{i}}})", "writer")], "bytes"),
    ]
    return dashboard("otelgw-gateway", "otelgw / Gateway",
                     "otelgw's own health: receivers, pipeline, write-ahead log, ClickHouse writer and tail sampler.",
                     panels, [variable("instance", "Gateway", 'label_values(up{job="otelgw"}, instance)', multi=True)])


DASHBOARDS = {"otelgw-overview.json": overview, "otelgw-model.json": model, "otelgw-gateway.json": gateway}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "dashboards",
                        help="directory to write the JSON files to (default: %(default)s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (args.out / name).write_text(render(build), encoding="utf-8")
        print(args.out / name)


if __name__ == "__main__":
    main()
