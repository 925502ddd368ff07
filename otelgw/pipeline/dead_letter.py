"""The dead-letter directory (data_dir/dead-letter/): what could not be stored, kept so that nothing
acknowledged is lost.

Three kinds of file land there: a record the mapper failed on (`record-<log>-<seq>-<signal>.pb`, the
request as received, with a `.json` beside it naming its project, arrival time and error), rows
ClickHouse refused as bad data (`<token>-<pid>.jsonl`) and fast-path requests ClickHouse refused
(`<token>-<pid>.pb` with `.positions.json`). A record can be taken in again once its cause is fixed
(an upgrade, a masking file): its files move to `replayed/` and it goes back into the write-ahead
log under its own project and arrival time (otelgw/api/dead_letter.py)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from otelgw.pipeline.request import Signal
from otelgw.pipeline.wal import WalRecord

RECORD_PREFIX = "record-"
REPLAYED = "replayed"
# What write_record names files: anything else is no record's (and never reaches the disk).
_RECORD_NAME = re.compile(r"record-[A-Za-z0-9_.]{1,64}-[0-9]{1,20}-(traces|logs|metrics)\.pb")


class DeadRecordMeta(msgspec.Struct, kw_only=True):
    """Written beside a dead-lettered record's request bytes."""

    signal: Signal
    project: str
    received_ns: int
    wal_id: str
    seq: int
    error: str = ""
    dead_lettered_ns: int = 0


class DeadLetterEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    file: str
    kind: str  # record | rows | native
    bytes: int
    modified: str
    replayable: bool = False
    signal: str | None = None
    project: str | None = None
    received: str | None = None
    error: str | None = None
    # The log still holds it (the gateway has not caught up with it since a restart): replay later.
    pending: bool = False


class DeadRecord(msgspec.Struct, kw_only=True):
    name: str
    request: bytes
    meta: DeadRecordMeta | None  # None: written before the metadata existed


class NotFound(LookupError):
    pass


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def signal_of(name: str) -> Signal:
    """The signal a record's file name says (records from before their metadata was kept)."""
    return Signal(name.rsplit("-", 1)[-1].removesuffix(".pb"))


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        # One replay at a time: two at once could both take a record in.
        self.replay_lock = asyncio.Lock()

    def record_path(self, wal_id: str, seq: int, signal: Signal | str) -> Path:
        # Named by the log's id too: a new log (its directory lost or moved) numbers records from
        # 1 again, and must not overwrite what an earlier log dead-lettered.
        return self.dir / f"{RECORD_PREFIX}{wal_id}-{seq}-{signal}.pb"

    def names(self) -> set[str]:
        """The names of the records here and replayed: one listing, so a replay of a large log
        asks the disk about the few records it holds, not about every record."""
        out: set[str] = set()
        for folder in (self.dir, self.dir / REPLAYED):
            try:
                out.update(n for n in os.listdir(folder) if n.startswith(RECORD_PREFIX) and n.endswith(".pb"))
            except OSError:
                continue
        return out

    def was_dead_lettered(self, wal_id: str, record: WalRecord, names: set[str]) -> bool:
        """This very record was dead-lettered, whether its files still wait or were replayed (its
        replay is a new record: this one must not land too); `names` is a listing (`names()`).
        The metadata must agree where there is some: with fsync off, a power loss can hand a
        number out again."""
        name = self.record_path(wal_id, record.seq, record.signal).name
        if name not in names:
            return False
        meta = self._meta(self.dir / name)
        return meta is None or (meta.received_ns, meta.project) == (record.received_ns, record.project)

    def write_record(self, record: WalRecord, wal_id: str, error: str) -> Path:
        """The request as received, and (first, so a request file always has it) its metadata."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.record_path(wal_id, record.seq, record.signal)
        meta = DeadRecordMeta(signal=record.signal, project=record.project, received_ns=record.received_ns,
                              wal_id=wal_id, seq=record.seq, error=error[-2000:], dead_lettered_ns=time.time_ns())
        _write_atomic(_meta_path(path), msgspec.json.encode(meta))
        _write_atomic(path, record.request)
        return path

    def _meta(self, path: Path) -> DeadRecordMeta | None:
        # (Looked for in the other folder too: a move stopped between the two files.)
        other = self.dir / REPLAYED if path.parent == self.dir else self.dir
        for candidate in (_meta_path(path), _meta_path(other / path.name)):
            try:
                return msgspec.json.decode(candidate.read_bytes(), type=DeadRecordMeta)
            except FileNotFoundError:
                continue
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                return None
        return None

    def entries(self, *, is_pending: Callable[[DeadRecordMeta], bool] | None = None) -> list[DeadLetterEntry]:
        """Every file still waiting, oldest first (the `.json` beside a request is part of it).
        Blocking (a directory scan): call it off the event loop."""
        if not self.dir.is_dir():
            return []
        out: list[tuple[int, DeadLetterEntry]] = []
        for path in self.dir.iterdir():
            name = path.name
            try:
                if not path.is_file() or name.endswith((".json", ".part")):
                    continue
                stat = path.stat()
            except OSError:
                continue  # gone meanwhile
            entry = DeadLetterEntry(file=name, kind="rows", bytes=stat.st_size, modified=_iso(stat.st_mtime_ns))
            if _RECORD_NAME.fullmatch(name):
                entry.kind, entry.replayable = "record", True
                meta = self._meta(path)
                if meta is not None:
                    entry.signal, entry.project = str(meta.signal), meta.project
                    entry.received, entry.error = _iso(meta.received_ns), meta.error
                    entry.pending = is_pending(meta) if is_pending is not None else False
                else:
                    entry.signal = str(signal_of(name))
            elif name.endswith(".pb"):
                entry.kind = "native"
            out.append((stat.st_mtime_ns, entry))
        out.sort(key=lambda item: (item[0], item[1].file))
        return [entry for _, entry in out]

    def load_record(self, name: str) -> DeadRecord:
        """A record by its file name. Raises NotFound (also for a name that is not a record's)."""
        if not _RECORD_NAME.fullmatch(name):
            raise NotFound(f"{name[:200]!r} is not a dead-lettered record's name")
        path = self.dir / name
        try:
            request = path.read_bytes()
        except OSError as exc:
            raise NotFound(f"no dead-lettered record {name!r}") from exc
        return DeadRecord(name=name, request=request, meta=self._meta(path))

    def move(self, name: str, *, replayed: bool) -> None:
        """To `replayed/` before the record is taken in (so no second replay takes it twice; not
        deleted: the operator removes them once the log has passed the new record), or back if it
        was not. The request first: it is what a replay looks for."""
        done = self.dir / REPLAYED
        done.mkdir(exist_ok=True)
        source, target = (self.dir, done) if replayed else (done, self.dir)
        os.replace(source / name, target / name)
        meta = _meta_path(source / name)
        if meta.exists():
            os.replace(meta, target / meta.name)
