"""The dead-letter directory over HTTP (admin): GET /api/v1/dead-letter lists what waits there,
POST /api/v1/dead-letter/replay takes records the mapper failed on in again once the cause is fixed
(docs/reliability.md, "Dead letters").

A replayed record goes back into the write-ahead log under its own project and arrival time, as a
new request would (durable before the answer, admission limits apply), and its files move to
`dead-letter/replayed/`. If it fails again it is dead-lettered again under its new number. An admin
of some projects sees and replays only their projects' records; rows ClickHouse refused and records
written before their metadata existed (no project on file) are for admins of every project."""

from __future__ import annotations

import msgspec
from aiohttp import web

from otelgw.api.common import PIPELINE_KEY, ApiError, json_response, principal
from otelgw.governance.audit import audit
from otelgw.pipeline.admission import Overloaded
from otelgw.pipeline.dead_letter import DeadLetterEntry, NotFound
from otelgw.pipeline.request import Signal
from otelgw.receiver.decode import DecodeError, Encoding, decode
from otelgw.receiver.ingest import admission_project

MAX_FILES = 10_000


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # File names from GET /api/v1/dead-letter; omitted: every record the caller may replay.
    files: list[str] | None = msgspec.field(default=None)
    # For records dead-lettered before their project was kept beside them (admins of every project).
    project: str | None = None


def _visible(entry: DeadLetterEntry, projects: frozenset[str] | None) -> bool:
    return projects is None or (entry.kind == "record" and entry.project is not None and entry.project in projects)


async def list_dead_letters(request: web.Request) -> web.Response:
    caller = principal(request)
    pipeline = request.app[PIPELINE_KEY]
    entries = [e for e in pipeline.dead_letters.entries() if _visible(e, caller.projects)]
    return json_response({"directory": str(pipeline.dead_letters.dir), "files": entries})


async def replay(request: web.Request) -> web.Response:
    caller = principal(request)
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw, type=ReplayRequest) if raw.strip() else ReplayRequest()
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    if body.project is not None and caller.projects is not None:
        raise ApiError(403, "forbidden", "only an admin of every project may name the project of a record")
    pipeline = request.app[PIPELINE_KEY]
    letters = pipeline.dead_letters
    if body.files is None:
        names = [e.file for e in letters.entries() if e.replayable and _visible(e, caller.projects)]
    else:
        names = list(dict.fromkeys(body.files))
    if len(names) > MAX_FILES:
        raise ApiError(400, "invalid_request", f"files: at most {MAX_FILES} a request (got {len(names)})")
    async with letters.replay_lock:
        replayed: list[dict[str, str]] = []
        failed: list[dict[str, str]] = []
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
                project, received_ns = body.project, None
                try:
                    signal = Signal(name.rsplit("-", 1)[-1].removesuffix(".pb"))
                except ValueError:
                    failed.append({"file": name, "reason": "its name says no signal (traces, logs, metrics)"})
                    continue
            if project is None or not caller.sees(project):
                # A scoped admin learns no more of a record that is not theirs than one that is missing.
                reason = (f"no dead-lettered record {name!r}" if caller.projects is not None else
                          "its project was not kept (dead-lettered by an older version): name it with 'project'")
                failed.append({"file": name, "reason": reason})
                continue
            try:
                decoded = decode(signal, record.request, Encoding.PROTOBUF)
            except DecodeError as exc:
                failed.append({"file": name, "reason": f"not a request any more: {exc}"})
                continue
            connection = "dead-letter-replay"
            letters.move(name, replayed=True)
            try:
                with pipeline.admission.slot(connection):
                    pipeline.check_open(project, connection)
                    await pipeline.accept(decoded, record.request, project, admission_project(project, decoded),
                                          connection, received_ns=received_ns)
            except Overloaded as exc:
                letters.move(name, replayed=False)
                busy = exc
                failed.append({"file": name, "reason": f"not taken: {exc}; retry later"})
                continue
            except Exception:
                # (Not on cancellation: the record may be in the log already, and taken in.)
                letters.move(name, replayed=False)
                raise
            audit(request, "dead_letter.replay", target=name, project=project)
            replayed.append({"file": name, "project": project, "signal": str(signal)})
    return json_response({"replayed": replayed, "failed": failed})
