"""The dead-letter directory over HTTP (admin): GET /api/v1/dead-letter lists what waits there,
POST /api/v1/dead-letter/replay takes records the mapper failed on in again once the cause is fixed
(docs/reliability.md, "Dead letters: list and replay").

A replayed record goes back into the write-ahead log under its own project and arrival time, as a
new request would (validated, durable before the answer, admission limits apply); its files move to
`dead-letter/replayed/` first, and back if it was not taken. A record the log still holds (the
gateway has not caught up with it since a restart) waits: its old copy would land too. If the
mapper fails again, the record is dead-lettered again under its new number. An admin of some
projects sees and replays only their projects' records; rows ClickHouse refused, records sent
without a project header (their resources name their projects) and records written before their
metadata existed are for admins of every project."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import msgspec
from aiohttp import web

from otelgw.api.common import PIPELINE_KEY, ApiError, json_response, principal
from otelgw.auth import Principal
from otelgw.governance.audit import audit
from otelgw.pipeline.admission import Overloaded
from otelgw.pipeline.dead_letter import DeadLetterEntry, DeadRecordMeta, NotFound, signal_of
from otelgw.pipeline.pipeline import Pipeline
from otelgw.receiver.decode import DecodeError, Encoding
from otelgw.receiver.ingest import BadProject, clean_project, ingest

MAX_FILES = 10_000
_CONNECTION = "dead-letter-replay"


class ListQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_FILES)] = 1000


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # File names from GET /api/v1/dead-letter; omitted: the first MAX_FILES records the caller may
    # replay (the answer says how many remain).
    files: Annotated[list[str], msgspec.Meta(max_length=MAX_FILES)] | None = None
    # For records dead-lettered before their project was kept beside them (admins of every
    # project; "" keeps what the request's resources say).
    project: str | None = None


def _pending(pipeline: Pipeline) -> Callable[[DeadRecordMeta], bool]:
    wal = pipeline.wal
    checkpoint = wal.checkpoint_seq

    def pending(meta: DeadRecordMeta) -> bool:
        return meta.wal_id == wal.id and meta.seq > checkpoint

    return pending


def _visible(entry: DeadLetterEntry, caller: Principal) -> bool:
    return caller.projects is None or (entry.kind == "record" and bool(entry.project) and caller.sees(entry.project))


async def _entries(pipeline: Pipeline) -> list[DeadLetterEntry]:
    # A directory scan (a stat and a read a file): not on the event loop.
    pending = _pending(pipeline)
    return await asyncio.get_running_loop().run_in_executor(None, lambda: pipeline.dead_letters.entries(
        is_pending=pending))


async def list_dead_letters(request: web.Request) -> web.Response:
    caller = principal(request)
    try:
        query = msgspec.convert({k: v for k, v in request.query.items() if v != ""}, ListQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    pipeline = request.app[PIPELINE_KEY]
    entries = [e for e in await _entries(pipeline) if _visible(e, caller)]
    answer: dict[str, object] = {"total": len(entries), "files": entries[:query.limit]}
    if caller.projects is None:
        answer["directory"] = str(pipeline.dead_letters.dir)
    return json_response(answer)


async def replay(request: web.Request) -> web.Response:
    caller = principal(request)
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw, type=ReplayRequest) if raw.strip() else ReplayRequest()
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    named_project: str | None = None
    if body.project is not None:
        if caller.projects is not None:
            raise ApiError(403, "forbidden", "only an admin of every project may name the project of a record")
        try:
            named_project = clean_project(body.project)
        except BadProject as exc:
            raise ApiError(400, "invalid_request", f"project: {exc}") from exc
    pipeline = request.app[PIPELINE_KEY]
    letters = pipeline.dead_letters
    remaining = waiting = 0
    if body.files is None:
        mine = [e for e in await _entries(pipeline) if e.replayable and _visible(e, caller)]
        candidates = [e.file for e in mine if not e.pending]
        names, remaining = candidates[:MAX_FILES], max(len(candidates) - MAX_FILES, 0)
        waiting = len(mine) - len(candidates)
    else:
        names = list(dict.fromkeys(body.files))
    replayed: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    async with letters.replay_lock:
        pending = _pending(pipeline)
        busy: Overloaded | None = None
        for name in names:
            if busy is not None:
                failed.append({"file": name, "reason": f"not tried: the gateway is busy ({busy}); retry later"})
                continue
            try:
                record = letters.load_record(name)
            except NotFound as exc:
                failed.append({"file": name, "reason": str(exc)})
                continue
            meta = record.meta
            if meta is not None:
                project, signal, received_ns = meta.project, meta.signal, meta.received_ns
            else:
                project, signal, received_ns = named_project, signal_of(name), None
            if project is None or not caller.sees(project) or (caller.projects is not None and not project):
                # A scoped admin learns no more of a record that is not theirs than of one that is missing.
                reason = (f"no dead-lettered record {name!r}" if caller.projects is not None else
                          "its project was not kept (dead-lettered by an older version): name it with 'project'")
                failed.append({"file": name, "reason": reason})
                continue
            if meta is not None and pending(meta):
                reason = (f"the write-ahead log still holds it (record {meta.seq}, not yet past the checkpoint): "
                          "retry once the gateway has caught up")
                failed.append({"file": name, "reason": reason})
                continue
            try:
                letters.move(name, replayed=True)
            except OSError as exc:
                failed.append({"file": name, "reason": f"cannot move it aside: {exc.strerror or exc}"})
                continue
            try:
                with pipeline.admission.slot(_CONNECTION):
                    pipeline.check_open(project, _CONNECTION)
                    await ingest(pipeline, None, signal, record.request, Encoding.PROTOBUF, project, _CONNECTION,
                                 received_ns=received_ns)
            except (DecodeError, Overloaded) as exc:
                letters.move(name, replayed=False)
                if isinstance(exc, DecodeError):
                    failed.append({"file": name, "reason": f"not a request any more: {exc}"})
                else:
                    busy = exc
                    failed.append({"file": name, "reason": f"not taken: {exc}; retry later"})
                continue
            except Exception:
                # (Not on cancellation: the record may be in the log already, and taken in.)
                letters.move(name, replayed=False)
                raise
            audit(request, "dead_letter.replay", target=name, project=project)
            replayed.append({"file": name, "project": project, "signal": str(signal)})
    answer: dict[str, object] = {"replayed": replayed, "failed": failed}
    if remaining:
        answer["remaining"] = remaining  # past MAX_FILES: call again
    if waiting:
        answer["pending"] = waiting  # the log still holds them: call again once it has caught up
    return json_response(answer)
