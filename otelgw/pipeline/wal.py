"""Write-ahead log: every accepted request is appended here, and made durable, before the
client is answered. It is also the ingest queue: the pipeline reads records back in order, so
a backlog (a slow or absent ClickHouse) waits on disk, not in memory.

Layout of `wal_dir`:
- `NNNNNNNNNNNNNNNNNNNN.seg`: segments named by the sequence number of their first record.
- `checkpoint`: the highest sequence number whose rows are all committed in ClickHouse.
- `cuts.log`: the record ranges of insert blocks, written before the insert, so a replay
  cuts the same blocks and repeats the same deduplication tokens.
- `id`: this WAL's random id, part of every deduplication token.

A segment is a sequence of length-delimited protobuf messages (varint length, then the
message), the framing ClickHouse's `Protobuf` input format reads:

    message WalRecord {
      bytes   request            = 1;  // Export{Trace,Logs,Metrics}ServiceRequest, protobuf
      uint32  signal             = 2;  // 1 traces, 2 logs, 3 metrics
      string  project            = 3;
      fixed64 received_unix_nano = 4;
      uint64  seq                = 5;
      fixed32 crc32              = 15; // zlib.crc32 of every byte of the record before it
    }

The checksum rides inside the record as its last field: a reader with a schema that does not
declare field 15 (ClickHouse with the OTLP schema) skips it, and a torn or corrupt tail is found
without a second file to keep in step.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import msgspec

from otelgw.pipeline.request import Signal
from otelgw.pipeline.wal_cipher import WalCipher, WalDecryptError, is_sealed
from otelgw.protowire import read_varint, varint

log = logging.getLogger(__name__)

SIGNAL_CODES: dict[Signal, int] = {Signal.TRACES: 1, Signal.LOGS: 2, Signal.METRICS: 3}
CODE_SIGNALS: dict[int, Signal] = {v: k for k, v in SIGNAL_CODES.items()}
_CRC_TAG = b"\x7d"  # field 15, wire type 5 (fixed32)
_SEGMENT_SUFFIX = ".seg"


class WalError(RuntimeError):
    pass


class WalFull(WalError):
    """The WAL holds its configured maximum of bytes: refuse until the store catches up."""


class WalRecord(msgspec.Struct, frozen=True):
    seq: int
    signal: Signal
    project: str
    received_ns: int
    request: bytes


# -- encoding -----------------------------------------------------------------------------------

def encode_record(record: WalRecord) -> bytes:
    project = record.project.encode()
    body = b"".join((
        b"\x0a", varint(len(record.request)), record.request,
        b"\x10", varint(SIGNAL_CODES[record.signal]),
        b"\x1a", varint(len(project)), project,
        b"\x21", struct.pack("<Q", record.received_ns & 0xFFFFFFFFFFFFFFFF),
        b"\x28", varint(record.seq),
    ))
    body += _CRC_TAG + struct.pack("<I", zlib.crc32(body))
    return varint(len(body)) + body


def decode_record(body: bytes | memoryview) -> WalRecord:
    """Parse one record body (without its length prefix). Raises ValueError when corrupt."""
    if len(body) < 5 or body[-5:-4] != _CRC_TAG:
        raise ValueError("record has no checksum")
    (crc,) = struct.unpack("<I", body[-4:])
    if zlib.crc32(body[:-5]) != crc:
        raise ValueError("record checksum mismatch")
    pos, end = 0, len(body) - 5
    request = b""
    signal_code = seq = received = 0
    project = ""
    while pos < end:
        tag, pos = read_varint(body, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(body, pos)
            if field == 2:
                signal_code = value
            elif field == 5:
                seq = value
        elif wire == 2:
            length, pos = read_varint(body, pos)
            chunk = bytes(body[pos:pos + length])
            pos += length
            if field == 1:
                request = chunk
            elif field == 3:
                project = chunk.decode()
        elif wire == 1:
            (value,) = struct.unpack("<Q", body[pos:pos + 8])
            pos += 8
            if field == 4:
                received = value
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if signal_code not in CODE_SIGNALS:
        raise ValueError(f"unknown signal {signal_code}")
    return WalRecord(seq, CODE_SIGNALS[signal_code], project, received, request)


def iter_segment(data: bytes) -> Iterator[tuple[int, int, WalRecord | None]]:
    """(start offset, end offset, record) for each record; the record is None and iteration
    stops at the first torn or corrupt one."""
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        try:
            length, body_start = read_varint(view, pos)
            end = body_start + length
            if end > len(data):
                raise ValueError("torn record")
            record = decode_record(view[body_start:end])
        except ValueError:
            yield pos, len(data), None
            return
        yield pos, end, record
        pos = end


def salvage_segment(data: bytes, first_seq: int) -> tuple[bytes, int]:
    """The segment (whose first record is `first_seq`) without the records that are whole but
    corrupt (disk damage in the middle of a segment), each skipped only where the record after it
    reads and carries the very next number but one; and how many were skipped. Stops anywhere
    else (a torn tail, a damaged length that lands elsewhere): that part is left for the usual
    truncation."""
    view = memoryview(data)
    kept: list[memoryview] = []
    dropped = 0
    pos = 0
    expected = first_seq
    while pos < len(data):
        try:
            length, body_start = read_varint(view, pos)
        except ValueError:
            break
        end = body_start + length
        if end > len(data):
            break
        try:
            record = decode_record(view[body_start:end])
        except ValueError:
            nxt = next(iter_segment(data[end:]), None)
            if nxt is None or nxt[2] is None or nxt[2].seq != expected + 1:
                break  # nothing after it reads as its successor: a tail, or a damaged length
            dropped += 1
            expected += 1
        else:
            if record.seq < expected:
                break
            kept.append(view[pos:end])
            expected = record.seq + 1
        pos = end
    return b"".join(kept) + bytes(view[pos:]), dropped


# -- the log ------------------------------------------------------------------------------------

class WalStats(msgspec.Struct):
    appended_records: int = 0
    appended_bytes: int = 0
    fsyncs: int = 0
    truncated_tails: int = 0
    full_refusals: int = 0


class _Segment:
    __slots__ = ("first_seq", "last_seq", "path", "size")

    def __init__(self, first_seq: int, path: Path, size: int = 0, last_seq: int = 0) -> None:
        self.first_seq = first_seq
        self.last_seq = last_seq or first_seq - 1
        self.path = path
        self.size = size


class WriteAheadLog:
    """Append on the event loop (a write() into the page cache), fsync in a helper thread with
    group commit: appends that arrive within `fsync_ms` share one fsync. `fsync_ms=None` turns
    fsync off (unsafe: a power loss loses what the OS had not written yet)."""

    def __init__(self, directory: str | Path, *, fsync_ms: int | None, max_bytes: int,
                 segment_bytes: int = 64 * 1024 * 1024, cipher: WalCipher | None = None) -> None:
        self.dir = Path(directory)
        self.cipher = cipher
        self.fsync_ms = fsync_ms
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = WalStats()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._next_seq = 1
        self._checkpoint = 0
        self._durable_seq = 0
        self._written_seq = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._sync_wanted: asyncio.Event | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otelgw-wal")
        self._to_close: list[int] = []
        self.durable_changed: asyncio.Event | None = None
        self.id = ""
        self._lock_fd: int | None = None

    # -- start-up ------------------------------------------------------------------------------

    def recover(self) -> None:
        """Open the directory: read the checkpoint, check every segment, cut a torn or corrupt
        tail (logged), and continue the sequence after the last good record."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        id_file = self.dir / "id"
        cp_file = self.dir / "checkpoint"
        try:
            self._checkpoint = int(cp_file.read_text().strip() or 0) if cp_file.exists() else 0
        except (ValueError, UnicodeDecodeError) as exc:
            # Only disk damage does this (the file is replaced atomically). Everything kept is
            # replayed, under a new log id: sequence numbers may be handed out again (the cut log
            # names only pending cuts), and under the old id their tokens would match blocks
            # ClickHouse already has, dropping new data as a replay. Some rows may be stored twice.
            log.error("WAL checkpoint file is unreadable; replaying every segment kept under a new log id "
                      "(some rows may be stored twice)", extra={"path": str(cp_file), "error": str(exc)[:200]})
            self._checkpoint = 0
            _atomic_write(id_file, uuid.uuid4().hex.encode())
        if not id_file.exists():
            _atomic_write(id_file, uuid.uuid4().hex.encode())
        self.id = id_file.read_text().strip()
        last_seq = self._checkpoint
        paths = sorted(self.dir.glob(f"*{_SEGMENT_SUFFIX}"))
        for index, path in enumerate(paths):
            first = int(path.stem)
            data = path.read_bytes()
            good_end, seg_last = self._scan(data, first)
            if good_end < len(data):
                salvaged, dropped = salvage_segment(data, first)
                if dropped:
                    # Only those records are lost; the acknowledged ones after them are kept.
                    log.error("WAL segment has damaged records in the middle; dropping them and keeping the rest",
                              extra={"segment": path.name, "dropped_records": dropped})
                    _atomic_write(path, salvaged)
                    data = salvaged
                    good_end, seg_last = self._scan(data, first)
            if good_end < len(data):
                self.stats.truncated_tails += 1
                log.warning("WAL segment has a torn or corrupt tail; truncating it",
                            extra={"segment": path.name, "kept_bytes": good_end, "dropped_bytes": len(data) - good_end,
                                   "later_segments": len(paths) - index - 1})
                with open(path, "r+b") as fh:
                    fh.truncate(good_end)
                    os.fsync(fh.fileno())
            if good_end == 0 and seg_last < first:
                path.unlink()
                continue
            self._segments.append(_Segment(first, path, good_end, seg_last))
            last_seq = max(last_seq, seg_last)
        self._next_seq = last_seq + 1
        self._written_seq = self._durable_seq = last_seq
        self._drop_checkpointed()

    def _scan(self, data: bytes, first: int) -> tuple[int, int]:
        """(end of the last readable record, its number) of a segment's bytes."""
        good_end, seg_last = 0, first - 1
        for _, end, record in iter_segment(data):
            if record is None:
                break
            if record.seq > self._checkpoint:
                # Records to replay must be readable: refuse to start rather than skip them.
                self.unseal(record)
            good_end, seg_last = end, record.seq
        return good_end, seg_last

    def skip_to(self, seq: int) -> None:
        """Never hand out sequence numbers up to `seq` again. Used when the cut log names
        records the log no longer has (fsync off and a power loss): those numbers are already
        in deduplication tokens, and reusing them would make new data look like a replay."""
        if seq >= self._next_seq:
            log.warning("write-ahead log lost records it had handed out; skipping their numbers",
                        extra={"from_seq": self._next_seq, "to_seq": seq})
            self._next_seq = seq + 1

    def pending_records(self) -> int:
        return self._written_seq - self._checkpoint

    @property
    def checkpoint_seq(self) -> int:
        return self._checkpoint

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    async def start(self) -> None:
        self._sync_wanted = asyncio.Event()
        self.durable_changed = asyncio.Event()
        self._syncer = asyncio.create_task(self._sync_loop(), name="otelgw-wal-sync")

    # -- appending -----------------------------------------------------------------------------

    def unseal(self, record: WalRecord) -> WalRecord:
        """The record with its request in clear (raises WalError when it cannot be)."""
        if not is_sealed(record.request):
            return record
        if self.cipher is None:
            raise WalError(f"the write-ahead log in {self.dir} is encrypted: set OTELGW_WAL_ENCRYPTION_KEY to the key "
                           "it was written with (its records stay on disk until then)")
        try:
            return msgspec.structs.replace(record, request=self.cipher.open(record.seq, record.request))
        except WalDecryptError as exc:
            raise WalError(str(exc)) from exc

    def check_room(self, size: int) -> None:
        if self.size_bytes + size > self.max_bytes:
            self.stats.full_refusals += 1
            raise WalFull(f"write-ahead log is full ({self.size_bytes} of {self.max_bytes} bytes)")

    def append(self, signal: Signal, project: str, received_ns: int,
               request: bytes) -> tuple[int, asyncio.Future[None]]:
        """Write one record now; the future resolves once it is durable. Raises WalFull."""
        if self.cipher is not None:
            request = self.cipher.seal(self._next_seq, request)
        data = encode_record(WalRecord(self._next_seq, signal, project, received_ns, request))
        self.check_room(len(data))
        segment = self._current_segment(len(data))
        assert self._fd is not None
        written = 0
        while written < len(data):  # a regular file rarely writes short, but it may
            written += os.write(self._fd, data[written:] if written else data)
        seq = self._next_seq
        self._next_seq += 1
        segment.size += len(data)
        segment.last_seq = seq
        self._written_seq = seq
        self.stats.appended_records += 1
        self.stats.appended_bytes += len(data)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fsync_ms is None:
            self._durable_seq = seq
            future.set_result(None)
            if self.durable_changed is not None:
                self.durable_changed.set()
        else:
            self._waiters.append((seq, future))
            assert self._sync_wanted is not None
            self._sync_wanted.set()
        return seq, future

    def _current_segment(self, incoming: int) -> _Segment:
        segment = self._segments[-1] if self._segments else None
        if segment is None or self._fd is None or segment.size + incoming > self.segment_bytes and segment.size:
            if self._fd is not None:
                self._to_close.append(self._fd)
            # A new segment after a roll and after every start: recovered segments stay read-only.
            path = self.dir / f"{self._next_seq:020d}{_SEGMENT_SUFFIX}"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(self.dir)
            segment = _Segment(self._next_seq, path)
            self._segments.append(segment)
        return segment

    async def _sync_loop(self) -> None:
        assert self._sync_wanted is not None and self.durable_changed is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._sync_wanted.wait()
            if self.fsync_ms:
                await asyncio.sleep(self.fsync_ms / 1000)  # gather the group
            self._sync_wanted.clear()
            target = self._written_seq
            fds = [*self._to_close, self._fd]
            self._to_close = []
            try:
                await loop.run_in_executor(self._pool, _fsync_all, fds[:-1], fds[-1])
            except OSError as exc:
                # The data may not be on disk: fail every waiter so their clients retry.
                log.error("WAL fsync failed", extra={"error": str(exc)})
                waiters, self._waiters = self._waiters, []
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(WalError(f"fsync failed: {exc}"))
                continue
            self.stats.fsyncs += 1
            self._durable_seq = max(self._durable_seq, target)
            keep: list[tuple[int, asyncio.Future[None]]] = []
            for seq, future in self._waiters:
                if seq <= target:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((seq, future))
            self._waiters = keep
            self.durable_changed.set()

    # -- reading back --------------------------------------------------------------------------

    def cursor(self, after_seq: int) -> WalCursor:
        return WalCursor(self, after_seq)

    def segments_after(self, seq: int) -> list[_Segment]:
        return [s for s in self._segments if s.last_seq > seq]

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, seq: int) -> None:
        """Every record up to `seq` is committed in ClickHouse: remember it and delete the
        segments it covers."""
        if seq <= self._checkpoint:
            return
        _atomic_write(self.dir / "checkpoint", str(seq).encode())
        self._checkpoint = seq
        self._drop_checkpointed()

    def _drop_checkpointed(self) -> None:
        keep: list[_Segment] = []
        for index, segment in enumerate(self._segments):
            open_for_writing = self._fd is not None and index == len(self._segments) - 1
            if segment.last_seq <= self._checkpoint and not open_for_writing:
                segment.path.unlink(missing_ok=True)
            else:
                keep.append(segment)
        self._segments = keep

    def _lock(self) -> None:
        """One process a log: two gateways appending to one directory would hand out the same
        sequence numbers (`reuse_port` makes two gateways on one machine a normal sight). A
        record lock, so the kernel releases it when the process dies, however it dies."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 16, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            raise WalError(f"write-ahead log {self.dir} is in use by another process"
                           f"{f' (pid {holder})' if holder.isdigit() else ''}: each gateway needs its own "
                           "data_dir (or wal_dir)") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    async def close(self) -> None:
        if self._syncer is not None:
            # One last fsync for anything written, then stop.
            if self._waiters and self._sync_wanted is not None:
                self._sync_wanted.set()
                while self._waiters:
                    await asyncio.sleep(0.005)
            self._syncer.cancel()
            try:
                await self._syncer
            except asyncio.CancelledError:
                pass
        for fd in [*self._to_close, self._fd]:
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    pass
                os.close(fd)
        self._fd = None
        self._to_close = []
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class WalCursor:
    """Reads records back in order, from where it last stopped: only new bytes are read, so
    tailing the log costs a page-cache copy, not a re-scan."""

    def __init__(self, wal: WriteAheadLog, after_seq: int) -> None:
        self._wal = wal
        self.position = after_seq  # last seq handed out
        self._segment: _Segment | None = None
        self._fh: BinaryIO | None = None
        self._offset = 0
        self._pending = b""

    def _advance_segment(self) -> bool:
        for segment in self._wal.segments_after(self.position):
            if segment is self._segment:
                continue
            if self._segment is not None and segment.first_seq <= self._segment.first_seq:
                continue
            if self._fh is not None:
                self._fh.close()
            self._segment, self._offset, self._pending = segment, 0, b""
            self._fh = open(segment.path, "rb")  # noqa: SIM115  (kept open while tailing)
            return True
        return False

    def read(self, up_to_seq: int, max_bytes: int = 8 * 1024 * 1024) -> list[WalRecord]:
        """Records after the last one returned, up to `up_to_seq` (the durable end), in order."""
        out: list[WalRecord] = []
        size = 0
        while self.position < up_to_seq and size < max_bytes:
            if self._segment is None and not self._advance_segment():
                break
            assert self._segment is not None and self._fh is not None
            available = self._segment.size - self._offset
            chunk = b""
            if available > 0:
                self._fh.seek(self._offset)
                chunk = self._fh.read(min(available, max(max_bytes, 1 << 20)))
                self._offset += len(chunk)
            data = self._pending + chunk
            consumed = 0
            for _start, end, record in iter_segment(data):
                if record is None:  # a record that is not all here yet
                    break
                if record.seq > up_to_seq:
                    break  # durable only up to up_to_seq: hand the rest out next time
                consumed = end
                if record.seq <= self.position:
                    continue
                record = self._wal.unseal(record)
                out.append(record)
                self.position = record.seq
                size += len(record.request)
                if size >= max_bytes:
                    break
            self._pending = data[consumed:]
            if self.position >= up_to_seq or size >= max_bytes:
                break
            if self._offset < self._segment.size:
                continue  # more of this segment to read
            if self._pending or not self._advance_segment():
                break  # the rest is not written yet
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fsync_all(closing: list[int], current: int | None) -> None:
    for fd in closing:
        os.fsync(fd)
        os.close(fd)
    if current is not None:
        os.fsync(current)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CutNotLogged(OSError):
    """A cut log append that failed and was rolled back: the line is not in the file."""


class CutLog:
    """`cuts.log` in the WAL directory: one "first last" line per insert block, appended and
    fsynced before the block is inserted. A replay after a crash cuts the same blocks, so their
    deduplication tokens repeat and ClickHouse drops the copy it already has. (`chunks.log`: the
    same for the mapping chunks whose rows the workers insert themselves.)"""

    def __init__(self, directory: str | Path, name: str = "cuts.log") -> None:
        self.path = Path(directory) / name
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None
        self._last: tuple[int, int] = (0, 0)
        self._lines = 0

    def _ranges(self) -> list[tuple[int, int]]:
        if not self.path.exists():
            return []
        out = []
        # The last line without its newline was torn by a crash before its fsync returned, so
        # nothing was inserted under it; it is not a cut even if what is left reads as one ("10
        # 11" of "10 112"), and the next append cuts it off.
        for line in self.path.read_bytes().split(b"\n")[:-1]:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) <= int(parts[1]):
                out.append((int(parts[0]), int(parts[1])))
        return out

    def pending(self, checkpoint: int) -> list[tuple[int, int]]:
        """Cuts not yet checkpointed, in order (a last line without its newline is ignored). One the checkpoint
        stopped inside (the sampler's floor) is kept: its tail is rebuilt under its logged range.
        Of overlapping cuts the newest wins (records renumbered after a lost tail were cut
        again), except a shorter one with the same start (a rebuilt block flushed early at a
        stop: the next start rebuilds it under the original range) and a cut logged again as it
        was (a replay re-cutting it: it used to wipe every later cut, whose ranges a second
        crash then cut anew under new tokens, storing their rows twice)."""
        cuts: list[tuple[int, int]] = []
        listed: set[tuple[int, int]] = set()
        for first, last in self._ranges():
            if (first, last) in listed:
                continue  # the same cut logged again (a replay re-cuts it): not a renumbering
            if cuts and first <= cuts[-1][1]:
                if first == cuts[-1][0] and last <= cuts[-1][1]:
                    continue
                while cuts and first <= cuts[-1][1]:
                    listed.discard(cuts.pop())
            cuts.append((first, last))
            listed.add((first, last))
        return [c for c in cuts if c[1] > checkpoint]

    def highest(self) -> int:
        """The highest record number any cut names (whether or not still pending)."""
        return max((last for _, last in self._ranges()), default=0)

    def _open(self) -> BinaryIO:
        """Open for appending; a line torn by a crash is cut off first, or the next line would be
        glued to it (and read as another range, or as none)."""
        fh = open(self.path, "ab", buffering=0)  # noqa: SIM115  (kept open: appended every flush)
        try:
            data = self.path.read_bytes()  # the pending cuts (prune drops the rest)
            if data and not data.endswith(b"\n"):
                os.ftruncate(fh.fileno(), data.rfind(b"\n") + 1)
                os.fsync(fh.fileno())
        except OSError:
            fh.close()
            raise
        return fh

    def append(self, first: int, last: int) -> None:
        """Raises `CutNotLogged` when the line could not be written and was taken back out (the
        caller may do without it); any other OSError leaves it unknown whether the line is there."""
        with self._lock:
            if (first, last) == self._last:
                return
            if self._fh is None:
                self._fh = self._open()
            start = os.fstat(self._fh.fileno()).st_size
            try:
                line = f"{first} {last}\n".encode()
                if self._fh.write(line) != len(line):
                    raise OSError(f"short write to {self.path.name}")
                os.fsync(self._fh.fileno())
            except OSError as exc:
                fh, self._fh = self._fh, None
                try:
                    os.ftruncate(fh.fileno(), start)
                    os.fsync(fh.fileno())
                finally:
                    fh.close()
                raise CutNotLogged(f"{self.path.name}: {exc}") from exc
            self._last = (first, last)
            self._lines += 1

    def prune(self, checkpoint: int, every: int = 256) -> None:
        """Drop checkpointed cuts now and then, so the file stays small."""
        with self._lock:
            if self._lines < every:
                return
            keep = self.pending(checkpoint)
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            _atomic_write(self.path, b"".join(f"{a} {b}\n".encode() for a, b in keep))
            self._lines = len(keep)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
