"""The dead-letter directory (data_dir/dead-letter/): what could not be stored, kept so that nothing
acknowledged is lost.

Three kinds of file land there: a record the mapper failed on (`record-<log>-<seq>-<signal>.pb`, the
request as received, with a `.json` beside it naming its project, arrival time and error), rows
ClickHouse refused as bad data (`<token>-<pid>.jsonl`) and fast-path requests ClickHouse refused
(`<token>-<pid>.pb` with `.positions.json`). A record can be taken in again once its cause is fixed
(an upgrade, a masking file): `replay` hands it back to the write-ahead log under its own project
and arrival time, and moves its files to `replayed/`."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from otelgw.pipeline.request import Signal
from otelgw.pipeline.wal import WalRecord

RECORD_PREFIX = "record-"
REPLAYED = "replayed"


class DeadRecordMeta(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
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


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        # One replay at a time: two at once could both take a record in.
        self.replay_lock = asyncio.Lock()

    def record_path(self, wal_id: str, seq: int, signal: Signal | str) -> Path:
        # Named by the log's id too: a new log (its directory lost or moved) numbers records from
        # 1 again, and must not overwrite what an earlier log dead-lettered.
        return self.dir / f"{RECORD_PREFIX}{wal_id}-{seq}-{signal}.pb"

    def has_record(self, wal_id: str, seq: int, signal: Signal | str) -> bool:
        return self.record_path(wal_id, seq, signal).exists()

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
        try:
            return msgspec.json.decode(_meta_path(path).read_bytes(), type=DeadRecordMeta)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def entries(self) -> list[DeadLetterEntry]:
        """Every file still waiting, oldest first (the `.json` beside a request is part of it)."""
        if not self.dir.is_dir():
            return []
        out: list[tuple[int, DeadLetterEntry]] = []
        for path in self.dir.iterdir():
            name = path.name
            if not path.is_file() or name.endswith((".json", ".part")):
                continue
            stat = path.stat()
            entry = DeadLetterEntry(file=name, kind="rows", bytes=stat.st_size, modified=_iso(stat.st_mtime_ns))
            if name.startswith(RECORD_PREFIX) and name.endswith(".pb"):
                entry.kind, entry.replayable = "record", True
                meta = self._meta(path)
                if meta is not None:
                    entry.signal, entry.project = str(meta.signal), meta.project
                    entry.received, entry.error = _iso(meta.received_ns), meta.error
                else:
                    entry.signal = name.rsplit("-", 1)[-1].removesuffix(".pb")
            elif name.endswith(".pb"):
                entry.kind = "native"
            out.append((stat.st_mtime_ns, entry))
        out.sort(key=lambda item: (item[0], item[1].file))
        return [entry for _, entry in out]

    def load_record(self, name: str) -> DeadRecord:
        """A record by its file name. Raises NotFound (also for a name that is not a record's)."""
        if "/" in name or os.sep in name or not (name.startswith(RECORD_PREFIX) and name.endswith(".pb")):
            raise NotFound(f"{name!r} is not a dead-lettered record")
        path = self.dir / name
        try:
            request = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no dead-lettered record {name!r}") from exc
        return DeadRecord(name=name, request=request, meta=self._meta(path))

    def move(self, name: str, *, replayed: bool) -> None:
        """To `replayed/` before the record is taken in (so no second replay takes it twice; not
        deleted: the operator removes them once the data is seen), or back if it was not."""
        done = self.dir / REPLAYED
        done.mkdir(exist_ok=True)
        source, target = (self.dir, done) if replayed else (done, self.dir)
        meta = _meta_path(source / name)
        if meta.exists():
            os.replace(meta, target / meta.name)
        os.replace(source / name, target / name)
