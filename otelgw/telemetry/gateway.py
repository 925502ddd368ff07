"""The gateway's own series: what the receivers took, refused and rejected, request durations,
the pipeline queue, the write-ahead log, the writer and the tail sampler.

Counters the components already keep (their `stats` structs, also served as JSON at
/api/v1/status) are read at scrape time by `StatusCollector`; only what has no counter elsewhere
(durations, batch sizes) is a prometheus-client instrument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROWS_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000)


class ReceiverInstruments:
    """Per-request observations the receivers make."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram("otelgw_receiver_request_duration_seconds",
                                  "OTLP export request duration, by protocol, signal and outcome.",
                                  ["protocol", "signal", "outcome"], buckets=REQUEST_BUCKETS_S, registry=registry)
        self.refused = Counter("otelgw_receiver_refused_requests",
                               "OTLP export requests answered with an error, by protocol, signal and reason.",
                               ["protocol", "signal", "reason"], registry=registry)
        # The retryable refusals exist from the start, so alerts and rate() see a zero, not nothing.
        for protocol in ("grpc", "http"):
            for signal in ("traces", "logs", "metrics"):
                for reason in ("rate_limited", "unavailable"):
                    self.refused.labels(protocol, signal, reason)

    def observe(self, protocol: str, signal: str, outcome: str, seconds: float) -> None:
        self.duration.labels(protocol, signal, outcome).observe(seconds)
        if outcome != "ok":
            self.refused.labels(protocol, signal, outcome).inc()


class WriterInstruments:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_rows = Histogram("otelgw_writer_batch_rows", "Rows per ClickHouse insert, by table.",
                                    ["table"], buckets=BATCH_ROWS_BUCKETS, registry=registry)
        self.insert_seconds = Histogram("otelgw_writer_insert_duration_seconds",
                                        "Duration of successful ClickHouse inserts, by table.", ["table"],
                                        buckets=REQUEST_BUCKETS_S, registry=registry)

    def observe(self, table: str, rows: int, seconds: float) -> None:
        self.batch_rows.labels(table).observe(rows)
        self.insert_seconds.labels(table).observe(seconds)


def _counter(name: str, doc: str, label: str | None, values: dict[str, float] | float) -> CounterMetricFamily:
    if label is None:
        return CounterMetricFamily(name, doc, value=values)
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():  # type: ignore[union-attr]
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class StatusCollector(Collector):
    """Turns the status snapshot ({"pipeline": ..., "writer": ...}) into series at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        pipeline, writer, wal = snap["pipeline"], snap["writer"], snap["pipeline"]["wal"]
        yield _counter("otelgw_receiver_requests", "OTLP export requests received, by signal.", "signal",
                       pipeline["requests"])
        yield _counter("otelgw_receiver_accepted_items", "Spans, log records and data points accepted, by signal.",
                       "signal", pipeline["items_accepted"])
        rejected = CounterMetricFamily("otelgw_receiver_rejected_items",
                                       "Items rejected through OTLP partial success, by signal and reason.",
                                       labels=["signal", "reason"])
        for signal, reasons in sorted(pipeline["rejected_by_reason"].items()):
            for reason, value in sorted(reasons.items()):
                rejected.add_metric([signal, reason], value)
        yield rejected
        yield _counter("otelgw_pipeline_refused_requests", "Requests the pipeline refused before they were durable, "
                       "by reason (rate_limited, wal_full, overloaded, shutting_down).", "reason", pipeline["refused"])
        masked = CounterMetricFamily("otelgw_masked_items", "Values masked at ingest, by project and detector.",
                                     labels=["project", "detector"])
        for project, detectors in sorted(pipeline.get("masking", {}).items()):
            for detector, value in sorted(detectors.items()):
                masked.add_metric([project, detector], value)
        yield masked
        yield _counter("otelgw_pipeline_map_errors", "Records the mapper failed on (dead-lettered).", None,
                       pipeline["map_errors"])
        yield _counter("otelgw_fast_path_non_canonical_requests", "Trace requests the native fast path left to "
                       "Python because their protobuf bytes were not canonical.", None,
                       pipeline["fast_path_non_canonical"])
        yield _counter("otelgw_worker_inserted_chunks", "Mapping chunks whose rows their worker process inserted "
                       "itself (worker_inserts, a ClickHouse server).", None, pipeline["worker_inserted_chunks"])
        yield _counter("otelgw_worker_insert_fallbacks", "Mapping chunks whose worker could not insert all of its "
                       "rows; the gateway's writer inserted the rest under the same tokens.", None,
                       pipeline["worker_insert_fallbacks"])
        yield _counter("otelgw_chunk_log_failures", "Appends to the WAL's chunks.log that failed (worker_inserts): "
                       "retried, or the chunk left to the writer.", None, pipeline["chunk_log_failures"])
        yield _counter("otelgw_cross_folded_chunks", "Mapping chunks in which a call traced twice across export "
                       "requests was folded (logged in chunks.log, written under the chunk's tokens).", None,
                       pipeline["cross_folded_chunks"])
        yield _gauge("otelgw_pipeline_queue_records", "Durable records not yet read by the mapper.",
                     wal["durable_seq"] - wal["consumed_seq"])
        yield _gauge("otelgw_writer_lag_seconds", "Age of the oldest accepted request whose rows are not yet in "
                     "ClickHouse (0 when none).", pipeline["writer_lag_s"])
        yield _gauge("otelgw_wal_bytes", "Bytes in the write-ahead log.", wal["bytes"])
        yield _gauge("otelgw_wal_max_bytes", "The write-ahead log's limit (OTELGW_WAL_MAX_BYTES).", wal["max_bytes"])
        yield _gauge("otelgw_wal_segments", "Segment files in the write-ahead log.", wal["segments"])
        yield _gauge("otelgw_wal_pending_records", "Records not yet committed in ClickHouse.", wal["pending_records"])
        yield _counter("otelgw_wal_fsyncs", "Group-commit fsyncs.", None, wal["fsyncs"])
        yield _counter("otelgw_wal_truncated_tails", "Torn or corrupt segment tails cut at start.", None,
                       wal["truncated_tails"])
        mapping = pipeline.get("mapping")
        if mapping:
            yield _gauge("otelgw_mapping_workers", "Mapping worker processes configured (OTELGW_WORKERS; 1 = a "
                         "thread).", mapping["workers"])
            yield _gauge("otelgw_mapping_on_thread", "1 while mapping runs on a thread of the gateway process "
                         "(workers=1, or worker processes could not start again).",
                         int(mapping["workers"] == 1 or mapping["fell_back_to_thread"]))
            yield _counter("otelgw_mapping_cpu_seconds", "CPU seconds spent mapping records, in every worker.", None,
                           sum(mapping["cpu_s"].values()))
            yield _counter("otelgw_mapping_records", "Log records mapped.", None, mapping["records"])
            yield _counter("otelgw_mapping_worker_restarts", "Worker pools replaced after a worker process died.",
                           None, mapping["worker_restarts"])
            yield _counter("otelgw_mapping_crashed_records", "Records dead-lettered because mapping them killed a "
                           "worker process three times.", None, mapping["crashed_records"])
        sampler = pipeline.get("sampler")
        if sampler:
            yield _counter("otelgw_sampler_traces", "Traces decided by the tail sampler.", "decision",
                           {"kept": sampler["traces_kept"], "dropped": sampler["traces_dropped"]})
            yield _counter("otelgw_sampler_kept_by_policy", "Traces kept, by the policy that kept them.", "policy",
                           sampler["kept_by_policy"])
            yield _counter("otelgw_sampler_late_spans", "Spans that arrived after their trace's decision.",
                           "decision", {"kept": sampler["late_spans_kept"], "dropped": sampler["late_spans_dropped"]})
            yield _counter("otelgw_sampler_early_decisions", "Traces decided early under memory pressure.", None,
                           sampler["early_decisions"])
            yield _gauge("otelgw_sampler_buffered_traces", "Traces waiting for a decision.", sampler["buffered_traces"])
            yield _gauge("otelgw_sampler_buffered_spans", "Spans waiting for a decision.", sampler["buffered_spans"])
            yield _gauge("otelgw_sampler_buffered_bytes", "Approximate bytes waiting for a decision.",
                         sampler["buffered_bytes"])
        yield _counter("otelgw_writer_rows_written", "Rows inserted into ClickHouse, by table.", "table",
                       writer["rows_written"])
        yield _counter("otelgw_writer_native_rows", "Span rows the native fast path had ClickHouse write from request "
                       "bytes (also in otelgw_writer_rows_written).", None, writer["native_rows"])
        yield _counter("otelgw_writer_flushes", "Writer flush rounds.", None, writer["flushes"])
        yield _counter("otelgw_writer_insert_errors", "Failed ClickHouse insert attempts.", None,
                       writer["insert_errors"])
        yield _counter("otelgw_writer_dead_letter_rows", "Rows ClickHouse rejected, kept in dead-letter files.",
                       None, writer["dead_letter_rows"])
        yield _gauge("otelgw_writer_store_healthy", "1 while the last insert worked.", int(writer["healthy"]))
        yield _gauge("otelgw_writer_buffered_bytes", "Encoded bytes waiting for the next flush.",
                     writer["buffered_bytes"])
