"""Erasure jobs: delete one user's, one session's, some inferences' or a time range's data from
one project (docs/privacy.md, "Erasure").

A job is a row in `erasure_jobs` (schema/009), written before the API answers. It runs as
steps, each recorded in the row when it ends, so a job stopped half-way (a restart, a crash,
the store going away) re-runs only the steps left:

1. resolve: the matched inferences (id, trace, span, response id) go into `erasure_targets`,
   with the traces every inference of which matched; the later steps read this snapshot.
2. count: rows per table that the job removes (a dry run stops here, then cleans up).
3. messages, feedback, logs, spans, inference_lookup, inferences: one delete each, by the
   snapshot; `inferences` last, so a resumed job still finds what it matched.
4. cleanup: the job's targets are dropped; the job's user and session ids are kept as SHA-256
   only.

Spans: a trace whose inferences all matched is deleted whole (its spans and log events); in a
trace that also holds inferences outside the selector, only the matched inference spans and
their log events go, and the trace's other spans stay (they are other users' data as much).

Deletes are ClickHouse lightweight deletes (`DELETE FROM`, synchronous), or a synchronous
mutation (`ALTER TABLE ... DELETE`) where a table does not take lightweight deletes. The
analytics rollups and `span_tag_names` are not touched: they hold no user, session, trace or
inference id and no attribute value.

`Eraser` is blocking (a worker thread, or the CLI); `ErasureRunner` runs jobs one at a time
on the gateway's event loop, each step in its own thread, and resumes unfinished jobs at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from otelgw.api.common import MAX_NS, MAX_TIME, clamp_time
from otelgw.pipeline.mapper import derived_inference_id_sql
from otelgw.store.client import DSN, ClientFactory
from otelgw.store.cluster import ddl_target

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
# Tables the job counts and deletes from, in delete order (inferences last: the selector and
# the resume read it).
TABLES = ("messages", "feedback", "logs", "spans", "inference_lookup", "inferences")
STEPS = ("resolve", "count", *TABLES, "cleanup")
DRY_RUN_STEPS = ("resolve", "count", "cleanup")
SELECTORS = ("user_id", "session_id", "inference_ids", "from_date/to_date")
MAX_INFERENCE_IDS = 1000
MAX_ATTEMPTS = 5
REQUEUE_S = 30.0
_FINAL = {"inferences", "messages", "feedback", "spans", "inference_lookup"}

_JOB_COLUMNS = ["job_id", "project_id", "selector", "dry_run", "status", "steps_done", "counts", "error", "attempts",
                "created_by", "created_at", "updated_at", "version"]
_TARGET = "SELECT {col} FROM erasure_targets WHERE job_id = {{job:String}} AND kind = '{kind}'"
_INFERENCES = _TARGET.format(col="inference_id", kind="inference")
_RESPONSES = _TARGET.format(col="response_id", kind="inference") + " AND response_id != ''"
_TRACES = _TARGET.format(col="trace_id", kind="trace")
_SPANS = _TARGET.format(col="trace_id, span_id", kind="inference") + " AND trace_id != ''"
# Messages and evaluations sent as log records name their span: they are stored under the id
# derived from it, which for a span linked to another span's inference (a call traced twice) is
# no inference's id.
_SPAN_IDS = _TARGET.format(col=derived_inference_id_sql("trace_id", "span_id"), kind="inference") + \
    " AND trace_id != ''"
_PROJECT = "project_id = {project:String}"
# A call a log record said: its record names it (pipeline/map_logs.py).
_RECORD_CALLS = _TARGET.format(col="toString(inference_id)", kind="inference")
# For a user or session selector, the sessions of the matched calls (kept in the trace_id column
# of 'session' targets): a coding agent's other records of them (prompts, tool events, bodies)
# name no call, only the session.
_SESSIONS = _TARGET.format(col="trace_id", kind="session")
_SESSION_KEYS = ("session.id", "gen_ai.conversation.id", "conversation.id")
# Rows of each table that belong to the job's matched inferences.
PREDICATES = {
    "inferences": f"{_PROJECT} AND inference_id IN ({_INFERENCES})",
    "inference_lookup": f"{_PROJECT} AND inference_id IN ({_INFERENCES})",
    "messages": f"{_PROJECT} AND (inference_id IN ({_INFERENCES}) OR inference_id IN ({_SPAN_IDS}))",
    # Evaluations that named only the provider's response id are matched by it at read time.
    "feedback": f"{_PROJECT} AND (inference_id IN ({_INFERENCES}) OR response_id IN ({_RESPONSES}) "
                f"OR inference_id IN ({_SPAN_IDS}))",
    "spans": f"{_PROJECT} AND (trace_id IN ({_TRACES}) OR (trace_id, span_id) IN ({_SPANS}))",
    "logs": f"{_PROJECT} AND (trace_id IN ({_TRACES}) OR (trace_id, span_id) IN ({_SPANS}) "
            f"OR attributes['otelgw.inference_id'] IN ({_RECORD_CALLS}) "
            + "".join(f"OR attributes['{key}'] IN ({_SESSIONS}) " for key in _SESSION_KEYS) + ")",
}
LIGHTWEIGHT_SETTINGS = {"lightweight_deletes_sync": 2, "mutations_sync": 2}
MUTATION_SETTINGS = {"mutations_sync": 2}


class SelectorError(ValueError):
    """A request that does not name exactly one valid selector (HTTP 400)."""


def _parse_time(value: str, field: str) -> datetime:
    """ISO 8601: a date alone, or a time without zone, is UTC. Clamped to what the tables can
    hold (a range to 9999-12-31 means to the end, not a wrapped-around Int64 that erases nothing)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise SelectorError(f"{field}: {value[:80]!r} is not an ISO 8601 date or time") from exc
    return clamp_time(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_selector(*, user_id: str | None = None, session_id: str | None = None,
                   inference_ids: list[str] | None = None, from_date: str | None = None,
                   to_date: str | None = None) -> dict[str, Any]:
    """The one selector given, normalized; a SelectorError naming the fields otherwise."""
    given = [name for name, value in (("user_id", user_id), ("session_id", session_id),
                                      ("inference_ids", inference_ids)) if value is not None]
    if from_date is not None or to_date is not None:
        given.append("from_date/to_date")
    if len(given) != 1:
        what = f"got {', '.join(given)}" if given else "got none"
        raise SelectorError(f"exactly one selector is required: user_id, session_id, inference_ids, or "
                            f"from_date and to_date ({what})")
    if user_id is not None:
        if not user_id.strip():
            raise SelectorError("user_id must not be empty")
        return {"user_id": user_id}
    if session_id is not None:
        if not session_id.strip():
            raise SelectorError("session_id must not be empty")
        return {"session_id": session_id}
    if inference_ids is not None:
        if not inference_ids or len(inference_ids) > MAX_INFERENCE_IDS:
            raise SelectorError(f"inference_ids must hold 1 to {MAX_INFERENCE_IDS} ids")
        ids = []
        for raw in inference_ids:
            try:
                ids.append(str(uuid.UUID(raw)))
            except (ValueError, AttributeError, TypeError) as exc:
                raise SelectorError(f"inference_ids: {raw!r} is not a UUID") from exc
        return {"inference_ids": sorted(set(ids))}
    if from_date is None or to_date is None:
        raise SelectorError("a time range needs both from_date and to_date")
    start, end = _parse_time(from_date, "from_date"), _parse_time(to_date, "to_date")
    if end <= start:
        raise SelectorError("to_date must be after from_date")
    return {"from_date": _iso(start), "to_date": _iso(end)}


def _selector_sql(selector: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "user_id" in selector:
        return "user_id = {value:String}", {"value": selector["user_id"]}
    if "session_id" in selector:
        return "session_id = {value:String}", {"value": selector["session_id"]}
    if "inference_ids" in selector:
        return "inference_id IN {ids:Array(UUID)}", {"ids": selector["inference_ids"]}
    start = _parse_time(selector["from_date"], "from_date")
    end = _parse_time(selector["to_date"], "to_date")
    # A range to the store's end also takes the rows stored at it (far-future times clamped).
    end_ns = MAX_NS + 1 if end >= MAX_TIME else int(end.timestamp() * 1_000_000) * 1000
    return ("timestamp >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC') AND "
            "timestamp < fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')",
            {"start_ns": int(start.timestamp() * 1_000_000) * 1000, "end_ns": end_ns})


def redacted(selector: dict[str, Any]) -> dict[str, Any]:
    """The selector a finished job keeps: user and session ids as SHA-256, the rest as given."""
    out = dict(selector)
    for name in ("user_id", "session_id"):
        value = out.get(name)
        if isinstance(value, str) and not value.startswith("sha256:"):
            out[name] = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return out


def _ms_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


class Job(msgspec.Struct, kw_only=True):
    job_id: str
    project_id: str
    selector: dict[str, Any]
    dry_run: bool = False
    status: str = PENDING
    steps_done: list[str] = msgspec.field(default_factory=list)
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    created_by: str = ""
    created_at_ms: int = 0
    updated_at_ms: int = 0
    version: int = 0

    @property
    def steps(self) -> tuple[str, ...]:
        return DRY_RUN_STEPS if self.dry_run else STEPS

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        return {"job_id": self.job_id, "project_id": self.project_id, "selector": self.selector,
                "dry_run": self.dry_run, "status": self.status,
                "steps_done": list(self.steps_done), "steps": list(self.steps), "counts": dict(self.counts),
                "error": self.error or None, "created_by": self.created_by,
                "created_at": _ms_iso(self.created_at_ms), "updated_at": _ms_iso(self.updated_at_ms)}


def new_job(project_id: str, selector: dict[str, Any], *, dry_run: bool = False, created_by: str = "") -> Job:
    now_ms = time.time_ns() // 1_000_000
    return Job(job_id=str(uuid.uuid4()), project_id=project_id, selector=selector, dry_run=dry_run,
               created_by=created_by, created_at_ms=now_ms, updated_at_ms=now_ms)


class JobStore:
    """`erasure_jobs` rows. Blocking: call from a worker thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def save(self, job: Job) -> None:
        """Write the job's current state as a newer version of its row."""
        now_ns = time.time_ns()
        job.version = max(job.version + 1, now_ns)
        job.updated_at_ms = now_ns // 1_000_000
        self._client.insert("erasure_jobs", [[
            job.job_id, job.project_id, msgspec.json.encode(job.selector).decode(), job.dry_run, job.status,
            list(job.steps_done), {k: int(v) for k, v in job.counts.items()}, job.error[:2000], job.attempts,
            job.created_by, datetime.fromtimestamp(job.created_at_ms / 1000, UTC),
            datetime.fromtimestamp(job.updated_at_ms / 1000, UTC), job.version,
        ]], column_names=_JOB_COLUMNS)

    def _select(self, where: str, params: dict[str, Any]) -> list[Job]:
        rows = self._client.query(
            "SELECT job_id, project_id, selector, dry_run, status, steps_done, counts, error, attempts, created_by, "
            "toUnixTimestamp64Milli(created_at) AS created_ms, toUnixTimestamp64Milli(updated_at) AS updated_ms, "
            f"version FROM erasure_jobs FINAL WHERE {where} ORDER BY created_at, job_id",
            parameters=params).result_rows
        return [Job(job_id=r[0], project_id=r[1], selector=msgspec.json.decode(r[2]), dry_run=bool(r[3]),
                    status=r[4], steps_done=list(r[5]), counts={k: int(v) for k, v in dict(r[6]).items()},
                    error=r[7], attempts=int(r[8]), created_by=r[9], created_at_ms=int(r[10]),
                    updated_at_ms=int(r[11]), version=int(r[12])) for r in rows]

    def get(self, job_id: str) -> Job | None:
        found = self._select("job_id = {job:String}", {"job": job_id})
        return found[0] if found else None

    def unfinished(self) -> list[Job]:
        return self._select("status IN ('pending', 'running')", {})

    def forget_versions(self, job: Job) -> None:
        """Drop the job's older row versions (they hold the selector before redaction)."""
        _delete(self._client, "erasure_jobs", "job_id = {job:String} AND version < {version:UInt64}",
                {"job": job.job_id, "version": job.version})


def _delete(client: Client, table: str, predicate: str, params: dict[str, Any], cluster: str | None = None) -> str:
    """A synchronous delete: lightweight where the table takes it, else a mutation. Returns
    which was used. On a cluster, a sharded table's rows are deleted from its local table on
    every node."""
    lightweight, mutation = delete_statements(table, predicate, cluster)
    try:
        client.command(lightweight, parameters=params, settings=LIGHTWEIGHT_SETTINGS)
        return "lightweight"
    except Exception as exc:  # e.g. a table with projections; a store outage fails the mutation too
        log.info("lightweight delete refused, using a mutation", extra={"table": table, "error": str(exc)[:300]})
    client.command(mutation, parameters=params, settings=MUTATION_SETTINGS)
    return "mutation"


def flush_distributed_statement(table: str, cluster: str) -> str:
    return f"SYSTEM FLUSH DISTRIBUTED ON CLUSTER '{cluster}' {table}"


def sync_targets_statement(cluster: str) -> str:
    return f"SYSTEM SYNC REPLICA ON CLUSTER '{cluster}' erasure_targets"


def delete_statements(table: str, predicate: str, cluster: str | None = None) -> tuple[str, str]:
    """The lightweight delete and the mutation that remove `predicate`'s rows from `table`."""
    target = ddl_target(table, cluster)
    return f"DELETE FROM {target} WHERE {predicate}", f"ALTER TABLE {target} DELETE WHERE {predicate}"


class Eraser:
    """The steps of a job against one client. Blocking: call from a worker thread."""

    def __init__(self, client: Client, cluster: str | None = None) -> None:
        self.client = client
        self.cluster = cluster
        self.jobs = JobStore(client)

    def _params(self, job: Job) -> dict[str, Any]:
        return {"job": job.job_id, "project": job.project_id}

    def run_step(self, job: Job, step: str) -> None:
        """Run one step (idempotent) and record it in the job row."""
        params = self._params(job)
        if self.cluster:
            self._settle_cluster(step)
        if step == "resolve":
            self._resolve(job)
        elif step == "count":
            job.counts = {table: self._count(table, params) for table in TABLES}
        elif step in TABLES:
            _delete(self.client, step, PREDICATES[step], params, self.cluster)
        elif step == "cleanup":
            _delete(self.client, "erasure_targets", "job_id = {job:String}", {"job": job.job_id})
        else:
            raise ValueError(f"unknown step {step}")
        if step not in job.steps_done:
            job.steps_done.append(step)
        if step == "cleanup":
            job.status, job.error = DONE, ""
            job.selector = redacted(job.selector)
            self.jobs.save(job)
            self.jobs.forget_versions(job)
        else:
            self.jobs.save(job)

    def _settle_cluster(self, step: str) -> None:
        """On a cluster: rows still queued in a Distributed table's forwarding would be missed by
        the resolve and the deletes and land afterwards, and each shard's delete reads its own
        replica of erasure_targets. Flush the forwarding, then sync the targets."""
        assert self.cluster
        tables = {"resolve": ("inferences",), "count": TABLES}.get(step, (step,) if step in TABLES else ())
        for table in tables:
            self.client.command(flush_distributed_statement(table, self.cluster))
        if step == "count" or step in TABLES:
            self.client.command(sync_targets_statement(self.cluster))

    def _resolve(self, job: Job) -> None:
        clause, params = _selector_sql(job.selector)
        params.update(self._params(job))
        self.client.command(
            "INSERT INTO erasure_targets (job_id, kind, inference_id, trace_id, span_id, response_id) "
            "SELECT DISTINCT {job:String}, 'inference', inference_id, trace_id, span_id, response_id "
            f"FROM inferences WHERE {_PROJECT} AND {clause}", parameters=params)
        # Other spans of a matched call: a provider SDK's own span inside the library's span is
        # linked to the library span's inference (mapper._drop_nested_duplicates), with the
        # content; its span row and log records go with the inference.
        self.client.command(
            "INSERT INTO erasure_targets (job_id, kind, inference_id, trace_id, span_id) "
            "SELECT DISTINCT {job:String}, 'inference', toUUID(inference_id), trace_id, span_id FROM spans "
            f"WHERE {_PROJECT} AND trace_id IN ({_TARGET.format(col='trace_id', kind='inference')}) "
            f"AND inference_id != '' AND toUUIDOrZero(inference_id) IN ({_INFERENCES}) "
            f"AND (trace_id, span_id) NOT IN ({_SPANS})", parameters=self._params(job))
        if "user_id" in job.selector or "session_id" in job.selector:
            self.client.command(
                "INSERT INTO erasure_targets (job_id, kind, trace_id) "
                "SELECT DISTINCT {job:String}, 'session', session_id FROM inferences "
                f"WHERE {_PROJECT} AND {clause} AND session_id != ''", parameters=params)
        # Traces every inference of which matched: deleted whole.
        self.client.command(
            "INSERT INTO erasure_targets (job_id, kind, trace_id) "
            "SELECT {job:String}, 'trace', trace_id FROM inferences "
            f"WHERE {_PROJECT} AND trace_id != '' AND trace_id IN ({_TARGET.format(col='trace_id', kind='inference')}) "
            f"GROUP BY trace_id HAVING countIf(inference_id NOT IN ({_INFERENCES})) = 0",
            parameters=self._params(job))

    def _count(self, table: str, params: dict[str, Any]) -> int:
        final = " FINAL" if table in _FINAL else ""
        return int(self.client.query(f"SELECT count() FROM {table}{final} WHERE {PREDICATES[table]}",
                                     parameters=params).result_rows[0][0])

    def run(self, job: Job) -> Job:
        """Every step left, synchronously (the CLI)."""
        if job.status == PENDING:
            job.status = RUNNING
            self.jobs.save(job)
        for step in job.steps:
            if step not in job.steps_done:
                self.run_step(job, step)
        return job


class ErasureRunner:
    """Runs erasure jobs one at a time on the gateway's event loop, each step on its own worker
    thread with its own client; at start it resumes every pending or running job in the store."""

    def __init__(self, dsn: DSN, *, retry_base_s: float = 1.0, cluster: str | None = None) -> None:
        self._clients = ClientFactory(dsn)
        self._cluster = cluster
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-erasure")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._retry_base_s = retry_base_s
        # Test hook: after this step is recorded, the runner waits (until stopped), as if the
        # process went away right then.
        self.hold_after: str | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._clients.call, fn, *args)

    async def start(self) -> None:
        # In the background: a gateway must not wait for its store to start serving (the WAL
        # takes what arrives meanwhile).
        self._task = asyncio.create_task(self._resume_then_loop(), name="otelgw-erasure")

    async def _resume_then_loop(self) -> None:
        while True:
            try:
                unfinished = await self._call(lambda client: JobStore(client).unfinished())
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cannot read unfinished erasure jobs yet; retrying", exc_info=True)
                await asyncio.sleep(REQUEUE_S)
        for job in unfinished:
            log.info("resuming erasure job", extra={"job_id": job.job_id, "steps_done": job.steps_done})
            self._queue.put_nowait(job.job_id)
        await self._loop()

    def submit(self, job_id: str) -> None:
        """Queue a job already saved (`JobStore.save`): saved first, it survives a restart."""
        self._queue.put_nowait(job_id)

    async def _loop(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is away (reading or saving the job): try it again later
                log.exception("erasure job interrupted; retrying", extra={"job_id": job_id})
                asyncio.get_running_loop().call_later(REQUEUE_S, self._queue.put_nowait, job_id)

    async def _run(self, job_id: str) -> None:
        job = await self._call(lambda client: JobStore(client).get(job_id))
        if job is None or job.finished:
            return
        log.info("erasure job started", extra={"job_id": job.job_id, "project": job.project_id,
                                               "dry_run": job.dry_run, "steps_done": job.steps_done})
        if job.status == PENDING:
            job.status = RUNNING
            await self._call(lambda client: JobStore(client).save(job))
        for step in job.steps:
            if step in job.steps_done:
                continue
            while True:
                try:
                    await self._call(lambda client, s=step: Eraser(client, self._cluster).run_step(job, s))
                    break
                except Exception as exc:
                    job.attempts += 1
                    job.error = f"{step}: {type(exc).__name__}: {str(exc)[:500]}"
                    if job.attempts >= MAX_ATTEMPTS:
                        job.status = FAILED
                    log.warning("erasure step failed", extra={"job_id": job.job_id, "step": step,
                                                              "attempts": job.attempts, "error": job.error})
                    try:
                        await self._call(lambda client: JobStore(client).save(job))
                    except Exception:  # the store is away: the row keeps its last state
                        pass
                    if job.status == FAILED:
                        return
                    await asyncio.sleep(self._retry_base_s * 2 ** (job.attempts - 1))
            if self.hold_after == step:
                await asyncio.Event().wait()
        log.info("erasure job done", extra={"job_id": job.job_id, "counts": job.counts, "dry_run": job.dry_run})

    async def stop(self, timeout_s: float = 60) -> None:
        """Stop between steps; a step under way finishes (its delete is synchronous) first."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self._pool.shutdown, True), timeout_s)
        except TimeoutError:
            log.warning("an erasure step was still running at stop; the job resumes at the next start")
        self._clients.close()
