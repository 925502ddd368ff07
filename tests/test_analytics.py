"""POST /observability/analytics on a running gateway, read from the rollup views, checked
against the same numbers computed from the raw inferences table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fixtures_lib import all_fixtures
from otlp_client import post, post_otlp

from otelgw.pipeline.mapper import DEFAULT_PROJECT

PATH = "/observability/analytics"
# A fixed week of data: 2026-03-02 (a Monday) 00:00 to 2026-03-09 00:00 UTC.
T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
WEEK = 7 * 86400
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b", "mistral-large", "gemini-1.5-pro", "o1"]


def api(gateway, body: Any) -> tuple[int, Any]:
    result = post(f"{gateway.api_url}{PATH}", json.dumps(body).encode(), "application/json")
    return result.status, json.loads(result.body)


def ok(gateway, **body: Any) -> dict[str, Any]:
    status, answer = api(gateway, body)
    assert status == 200, answer
    return answer


@pytest.fixture(scope="module")
def data(gateway):
    """20,000 inferences over the week, skewed across models (model i has weight 7 - i), with
    errors, streaming TTFT, cached tokens, queue time; inserted as rows, so the views fill."""
    gateway._clients.get().command(f"""
        INSERT INTO inferences (inference_id, project_id, trace_id, span_id, timestamp, end_timestamp, service_name,
            provider, request_model, response_model, input_tokens, output_tokens, cached_input_tokens, cost_usd,
            latency_ms, ttft_ms, queue_ms, is_success, ingested_at)
        SELECT generateUUIDv4(number), ['proj-a', 'proj-b'][number % 2 + 1], hex(number), hex(number),
            fromUnixTimestamp64Nano(toInt64(start_ns + number % 1000 * 1e6), 'UTC'),
            fromUnixTimestamp64Nano(toInt64(start_ns + lat * 1e6), 'UTC'),
            ['chat-api', 'batch-worker', 'rag'][number % 3 + 1],
            if(m < 2 OR m = 6, 'openai', ['anthropic', 'meta', 'mistral', 'google'][m - 1]),
            model, if(number % 11 = 0, '', model), 100 + number % 900, if(ok, 10 + number % 300, 0),
            if(number % 4 = 0, 50, 0), (100 + number % 900) * 1e-6, lat, if(number % 3 = 0, lat / 4, NULL),
            if(number % 5 = 0, number % 50, NULL), ok, now64(3)
        FROM (SELECT number, {MODELS}[m + 1] AS model, toUInt8(arrayFirstIndex(x -> (number % 28) < x,
                  [7, 13, 18, 22, 25, 27, 28]) - 1) AS m, number % 17 != 0 AS ok,
                  50 + (number * 7919 % 5000) AS lat, ({T0} + cityHash64(number) % {WEEK}) * 1e9 AS start_ns
              FROM numbers(20000))""")
    return gateway


def raw(gateway, sql: str, **params: Any) -> list[dict[str, Any]]:
    return gateway.query(sql, **params)


def _ts(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_hourly_counts_tokens_and_outcomes_match_raw_rows(data) -> None:
    answer = ok(data, metrics=["request_count", "success_request", "failure_request", "input_token", "output_token",
                               "cost", "cache"],
                from_date=_ts(T0), to_date=_ts(T0 + WEEK), frequency_unit="hour")
    assert answer["object"] == "observability_metrics"
    assert len(answer["items"]) == 7 * 24
    periods = [b["time_period"] for b in answer["items"]]
    assert periods == sorted(periods, reverse=True) and periods[-1] == _period(T0)
    truth = {r["h"]: r for r in raw(data, """
        SELECT toString(toStartOfHour(timestamp)) AS h, count() AS n, countIf(is_success) AS s,
               sum(input_tokens) AS i, sum(output_tokens) AS o, sum(cost_usd) AS c,
               countIf(cached_input_tokens > 0) AS hits, sum(cached_input_tokens) AS cached
        FROM inferences GROUP BY h""")}
    assert sum(r["n"] for r in truth.values()) == 20000
    for bucket in answer["items"]:
        (item,) = bucket["items"]
        t = truth[bucket["time_period"].replace("T", " ")]
        d = item["data"]
        assert d["request_count"]["count"] == t["n"]
        assert d["success_request"]["count"] == t["s"]
        assert d["failure_request"]["count"] == t["n"] - t["s"]
        assert d["success_request"]["rate"] == pytest.approx(100 * t["s"] / t["n"], abs=0.001)
        assert d["input_token"]["count"] == t["i"] and d["output_token"]["count"] == t["o"]
        assert d["cost"]["total_usd"] == pytest.approx(t["c"], abs=1e-6)
        assert d["cache"]["hit_count"] == t["hits"] and d["cache"]["cached_tokens"] == t["cached"]
        assert d["cache"]["hit_rate"] == pytest.approx(100 * t["hits"] / t["n"], abs=0.001)


def test_latency_ttft_queue_and_throughput_percentiles(data) -> None:
    answer = ok(data, metrics=["latency", "ttft", "queuing_time", "throughput"], from_date=_ts(T0),
                to_date=_ts(T0 + WEEK), frequency_unit="week", group_by=["model"])
    (bucket,) = answer["items"]
    truth = {r["model"]: r for r in raw(data, """
        SELECT if(response_model != '', response_model, request_model) AS model, avg(latency_ms) AS lat,
               quantilesExact(0.5, 0.95, 0.99)(latency_ms) AS lq, avg(ttft_ms) AS ttft,
               quantileExact(0.95)(ttft_ms) AS t95, avg(queue_ms) AS q, quantileExact(0.99)(queue_ms) AS q99,
               avgIf(output_tokens * 1000 / (latency_ms - ifNull(ttft_ms, 0)), output_tokens > 0) AS tps
        FROM inferences GROUP BY model""")}
    assert {i["model_id"] for i in bucket["items"]} == set(MODELS)
    for item in bucket["items"]:
        t, d = truth[item["model_id"]], item["data"]
        assert d["latency"]["avg"] == pytest.approx(t["lat"], abs=1e-3)
        for key, exact in zip(("p50", "p95", "p99"), t["lq"], strict=True):
            assert d["latency"][key] == pytest.approx(exact, rel=0.05), key  # t-digest
        assert d["latency"]["max"] >= d["latency"]["p99"]
        assert d["ttft"]["avg"] == pytest.approx(t["ttft"], abs=1e-3)
        assert d["ttft"]["p95"] == pytest.approx(t["t95"], rel=0.05)
        assert d["queuing_time"]["avg_time_ms"] == pytest.approx(t["q"], abs=1e-3)
        assert d["queuing_time"]["p99"] == pytest.approx(t["q99"], abs=2)
        assert d["throughput"]["avg"] == pytest.approx(t["tps"], abs=1e-3)


def test_partial_hours_at_the_edges_are_read_from_the_minute_rollup(data) -> None:
    start, end = T0 + 3 * 86400 + 1234 * 60, T0 + 5 * 86400 + 77 * 60  # mid-hour, across two midnights
    answer = ok(data, metrics=["request_count"], from_date=_ts(start), to_date=_ts(end), frequency_unit="day",
                group_by=["provider"], return_delta=False)
    truth = {(r["d"], r["provider"]): r["n"] for r in raw(data, """
        SELECT toString(toDate(timestamp)) AS d, provider, count() AS n FROM inferences
        WHERE timestamp >= toDateTime({a:UInt32}, 'UTC') AND timestamp < toDateTime({b:UInt32}, 'UTC')
        GROUP BY d, provider""", a=start, b=end)}
    got = {(b["time_period"][:10], i["provider"]): i["data"]["request_count"]["count"]
           for b in answer["items"] for i in b["items"]}
    assert got == truth
    assert [b["time_period"] for b in answer["items"]] == [_period(T0 + k * 86400) for k in (5, 4, 3)]


def test_intervals_aligned_to_from_date_and_calendar_units(data) -> None:
    start = T0 + 90 * 60
    answer = ok(data, metrics=["request_count"], from_date=_ts(start), to_date=_ts(start + 86400),
                frequency_unit="hour", frequency_interval=6, return_delta=False)
    assert [b["time_period"] for b in answer["items"]] == [_period(start + k * 6 * 3600) for k in (3, 2, 1, 0)]
    counts = [b["items"][0]["data"]["request_count"]["count"] for b in reversed(answer["items"])]
    for k, count in enumerate(counts):
        assert count == raw(data, "SELECT count() AS n FROM inferences WHERE timestamp >= toDateTime({a:UInt32}, 'UTC')"
                                  " AND timestamp < toDateTime({b:UInt32}, 'UTC')",
                            a=start + k * 21600, b=start + (k + 1) * 21600)[0]["n"]
    for unit, first in (("month", "2026-03-01T00:00:00"), ("quarter", "2026-01-01T00:00:00"),
                        ("year", "2026-01-01T00:00:00")):
        answer = ok(data, metrics=["request_count"], from_date=_ts(T0), to_date=_ts(T0 + WEEK), frequency_unit=unit)
        (bucket,) = answer["items"]
        assert bucket["time_period"] == first and bucket["items"][0]["data"]["request_count"]["count"] == 20000
    weeks = ok(data, metrics=["request_count"], from_date=_ts(T0 - WEEK), to_date=_ts(T0 + 2 * WEEK),
               frequency_unit="week")
    assert [b["time_period"] for b in weeks["items"]] == [_period(T0 + k * WEEK) for k in (1, 0, -1)]


def test_group_by_topk_folds_the_rest_into_other(data) -> None:
    answer = ok(data, metrics=["request_count", "latency"], from_date=_ts(T0), to_date=_ts(T0 + WEEK),
                frequency_unit="day", group_by=["model"], topk=3)
    by_model = {r["model"]: r["n"] for r in raw(data, """
        SELECT if(response_model != '', response_model, request_model) AS model, count() AS n
        FROM inferences GROUP BY model""")}
    top = sorted(by_model, key=lambda m: -by_model[m])[:3]
    totals: dict[str, int] = {}
    for bucket in answer["items"]:
        assert [i["model_id"] for i in bucket["items"]] == sorted(top) + ["other"]
        for item in bucket["items"]:
            totals[item["model_id"]] = totals.get(item["model_id"], 0) + item["data"]["request_count"]["count"]
            assert item["data"]["latency"]["p95"] is not None
    assert totals == {**{m: by_model[m] for m in top}, "other": sum(by_model.values()) - sum(by_model[m] for m in top)}
    two = ok(data, metrics=["request_count"], from_date=_ts(T0), to_date=_ts(T0 + WEEK), frequency_unit="week",
             group_by=["project", "endpoint"])
    keys = {(i["project_id"], i["endpoint_id"]) for i in two["items"][0]["items"]}
    assert keys == {(p, s) for p in ("proj-a", "proj-b") for s in ("chat-api", "batch-worker", "rag")}
    assert sum(i["data"]["request_count"]["count"] for i in two["items"][0]["items"]) == 20000


def test_filters_take_a_value_or_a_list(data) -> None:
    def total(**filters: Any) -> int:
        answer = ok(data, metrics=["request_count"], from_date=_ts(T0), to_date=_ts(T0 + WEEK),
                    frequency_unit="year", filters=filters)
        return answer["items"][0]["items"][0]["data"]["request_count"]["count"] if answer["items"][0]["items"] else 0

    n = raw(data, "SELECT countIf(project_id = 'proj-a' AND provider IN ('anthropic', 'meta')) AS a, "
                  "countIf(service_name = 'rag' AND if(response_model != '', response_model, request_model) = 'o1') "
                  "AS b FROM inferences")[0]
    assert total(project="proj-a", provider=["anthropic", "meta"]) == n["a"]
    assert total(endpoint="rag", model="o1") == n["b"] == total(service_name=["rag"], model=["o1"])
    assert total(project="no-such-project") == 0
    single = ok(data, metrics=["request_count"], from_date=_ts(T0), to_date=_ts(T0 + WEEK), frequency_unit="year",
                filters={"model": "o1"})
    assert single["items"][0]["items"][0]["model_id"] == "o1"  # a single filtered value is echoed, as Bud does


def test_deltas_against_the_previous_bucket_and_period(data) -> None:
    answer = ok(data, metrics=["request_count", "latency"], from_date=_ts(T0 + 86400), to_date=_ts(T0 + 4 * 86400),
                frequency_unit="day")
    days = {r["d"]: r for r in raw(data, "SELECT toString(toDate(timestamp)) AS d, count() AS n, "
                                         "avg(latency_ms) AS lat FROM inferences GROUP BY d")}
    for bucket in answer["items"]:
        day = bucket["time_period"][:10]
        prev = datetime.fromtimestamp(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() - 86400,
                                      UTC).strftime("%Y-%m-%d")
        count = bucket["items"][0]["data"]["request_count"]
        assert count["delta"] == days[day]["n"] - days[prev]["n"]
        assert count["delta_percent"] == pytest.approx(100 * count["delta"] / days[prev]["n"], abs=0.01)
        latency = bucket["items"][0]["data"]["latency"]
        assert latency["delta"] == pytest.approx(days[day]["lat"] - days[prev]["lat"], abs=0.01)
    (summary,) = answer["summary"]
    current = sum(days[d]["n"] for d in ("2026-03-03", "2026-03-04", "2026-03-05"))
    before = sum(days[d]["n"] for d in ("2026-03-02",))  # the 3 days before hold only one day of data
    assert summary["data"]["request_count"]["count"] == current
    assert summary["data"]["request_count"]["delta"] == current - before
    off = ok(data, metrics=["request_count"], from_date=_ts(T0), to_date=_ts(T0 + 86400), return_delta=False)
    assert off["summary"] is None and off["items"][0]["items"][0]["data"]["request_count"]["delta"] is None


def test_fill_time_gaps_and_concurrency(data) -> None:
    empty_day = T0 + WEEK + 86400
    filled = ok(data, metrics=["request_count", "latency", "concurrent_requests"], from_date=_ts(T0 + WEEK - 86400),
                to_date=_ts(empty_day + 86400), frequency_unit="day", group_by=["project"])
    assert len(filled["items"]) == 3
    for bucket in filled["items"][:2]:  # the two days without data: zeros and nulls, every group
        assert [i["project_id"] for i in bucket["items"]] == ["proj-a", "proj-b"]
        for item in bucket["items"]:
            assert item["data"]["request_count"]["count"] == 0 and item["data"]["latency"]["p99"] is None
    last = filled["items"][2]["items"][0]["data"]
    lat_sum = raw(data, "SELECT sum(latency_ms) AS s FROM inferences WHERE project_id = 'proj-a' AND "
                        "toDate(timestamp) = '2026-03-08'")[0]["s"]
    assert last["concurrent_requests"]["avg"] == pytest.approx(lat_sum / 1000 / 86400, rel=1e-3)
    sparse = ok(data, metrics=["request_count"], from_date=_ts(T0 + WEEK - 86400), to_date=_ts(empty_day + 86400),
                frequency_unit="day", fill_time_gaps=False)
    assert [b["time_period"] for b in sparse["items"]] == [_period(T0 + WEEK - 86400)]


@pytest.mark.parametrize("body,field", [
    ({"from_date": "2026-03-02"}, "metrics"),
    ({"metrics": ["request_count"]}, "from_date"),
    ({"metrics": ["tokens"], "from_date": "2026-03-02"}, "metrics"),
    ({"metrics": [], "from_date": "2026-03-02"}, "metrics"),
    ({"metrics": ["latency"], "from_date": "yesterday"}, "from_date"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "to_date": "2026-03-01"}, "to_date"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "frequency_unit": "minute"}, "frequency_unit"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "frequency_interval": 0}, "frequency_interval"),
    ({"metrics": ["latency"], "from_date": "2000-01-01", "frequency_unit": "hour"}, "frequency_unit"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "topk": 3}, "topk"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "group_by": ["user"]}, "group_by"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "filters": {"region": "eu"}}, "region"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "filters": {"model": []}}, "filters.model"),
    ({"metrics": ["latency"], "from_date": "2026-03-02", "filters": {"endpoint": "a", "service_name": "b"}},
     "endpoint"),
])
def test_validation_errors_name_the_field(gateway, body: dict[str, Any], field: str) -> None:
    status, answer = api(gateway, body)
    assert status == 400, answer
    assert field in answer["error"]["message"], answer


def test_dates_past_what_the_store_holds(gateway) -> None:
    """Times outside 1900 .. 2262 (DateTime64(9)) are its ends; each of these was a 500 (year
    10000 or 0 in a bucket, a float timestamp out of range)."""
    hour = {"metrics": ["request_count"], "frequency_unit": "hour"}
    status, answer = api(gateway, {**hour, "from_date": "9999-12-31T23:00:00", "to_date": "253402300900"})
    assert status == 200 and [i["time_period"] for i in answer["items"]] == ["2262-04-11T23:00:00"], answer
    for far in ("99999999999999", "9999999999999999999"):
        status, answer = api(gateway, {**hour, "from_date": far})
        assert status == 400 and "to_date must be after from_date" in answer["error"]["message"], answer
    status, answer = api(gateway, {**hour, "from_date": "0001-01-01T00:00:00+14:00", "frequency_unit": "day"})
    assert status == 400 and "buckets" in answer["error"]["message"], answer
    status, answer = api(gateway, {**hour, "from_date": "0001-01-01T00:00:00+14:00", "frequency_unit": "year"})
    assert status == 200 and min(i["time_period"] for i in answer["items"]) == "1900-01-01T00:00:00", answer


def test_ingested_spans_reach_the_rollups(gateway) -> None:
    """Spans sent over OTLP land in the rollups through the views, counted once each."""
    fixture = next(f for f in all_fixtures() if f.name == "otelv2-chat")
    body = {"metrics": ["request_count", "input_token", "output_token"], "from_date": "2020-01-01T00:00:00Z",
            "frequency_unit": "year", "filters": {"project": DEFAULT_PROJECT, "model": "gpt-4o-mini"},
            "return_delta": False, "fill_time_gaps": False}

    def totals() -> tuple[int, int, int]:
        items = [i["data"] for b in ok(gateway, **body)["items"] for i in b["items"]]
        return (sum(d["request_count"]["count"] for d in items), sum(d["input_token"]["count"] for d in items),
                sum(d["output_token"]["count"] for d in items))

    before = totals()
    for signal, encoding, payload in fixture.payloads():
        assert post_otlp(gateway.http_url, signal, payload, encoding).status == 200
    gateway.settle()
    (expected,) = fixture.expected["inferences"]
    after = totals()
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == \
        (1, expected["input_tokens"], expected["output_tokens"])


def test_two_gateways_applying_the_rollup_migration_count_old_rows_once(chdb_path) -> None:
    """Migration 006 backfills the rollups from existing rows; two gateways starting together
    both run it. The backfill's fixed deduplication token (for the views' inserts too) and its
    time bound keep every old inference counted once."""
    import time as clock
    import uuid as uuidlib

    from otelgw.store.client import DSN, ClientFactory
    from otelgw.store.migrate import discover
    database = f"t_backfill_{uuidlib.uuid4().hex[:8]}"
    ClientFactory(DSN(f"chdb://{chdb_path}")).get().command(f"CREATE DATABASE {database}")
    client = ClientFactory(DSN(f"chdb://{chdb_path}?database={database}")).get()
    migrations = discover()
    for migration in migrations:
        if migration.version < 6:
            for statement in migration.statements():
                client.command(statement)
    client.command("INSERT INTO inferences (inference_id, project_id, timestamp, end_timestamp, request_model, "
                   "latency_ms, ingested_at) SELECT generateUUIDv4(number), 'p', now64(9), now64(9), 'm', 10, "
                   "now64(3) - 5 FROM numbers(100)")
    clock.sleep(0.01)
    (rollups,) = [m for m in migrations if m.version == 6]
    for _ in range(2):
        for statement in rollups.statements():
            client.command(statement)
    for table in ("inference_stats_1m", "inference_stats_1h", "inference_stats_1d"):
        assert client.query(f"SELECT sum(requests) FROM {table}").result_rows[0][0] == 100, table
