"""The write-ahead log: framed, checksummed, numbered records in segment files.

Layout (docs/storage.md, format version 1): ``<data-dir>/wal/<first-seq:020d>.wal``, so
lexicographic order is log order. A segment starts with a 16-byte header (``SEGDWAL\\0``,
format version, reserved) followed by records::

    u32 payload length | u64 sequence | u32 CRC32C(payload) | u32 CRC32C(first 16 bytes)
    payload (msgpack, see segd.mutations)

The header has its own checksum so a damaged length is never trusted. Sequence numbers
start at 1 and grow by one per record across segments.

Reading (``scan``): a record cut short at the end of the newest segment, or a tail of
zeros there, is a torn write — the process died inside ``write()`` — and is reported
so the writer truncates it: it was never acknowledged. Anything else that does not check
(a bad checksum with bytes after it, a gap in the sequence, a damaged segment in the
middle) raises ``CorruptLog`` naming the file and offset: never a silent skip.

Writing (``Wal``): ``append`` writes a record (into the page cache) and returns its
sequence; ``wait_durable(seq)`` returns once it is on disk. In ``always`` mode the waiting
writers share fsyncs (group commit, leader/follower): the first waiter fsyncs everything
written so far while the others wait, so N concurrent writers cost about one fsync per
round, not N. ``interval`` fsyncs from a background thread every ``interval_ms``; ``off``
only on close. A failed write is cut back off the file (the call fails, the log stays
valid); a failed fsync is fatal for the log (``LogFailed``).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c

from segd.errors import CorruptLog, LogFailed, StorageError, StorageFull

FORMAT_VERSION = 1
MAGIC = b"SEGDWAL\x00"
FILE_HEADER = struct.Struct("<8sII")  # magic, format version, reserved
RECORD_HEADER = struct.Struct("<IQII")  # length, seq, payload crc, header crc
SEGMENT_SUFFIX = ".wal"
DEFAULT_SEGMENT_BYTES = 64 << 20
FSYNC_MODES = ("always", "interval", "off")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

log = logging.getLogger("segd.storage")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_files(wal_dir: Path) -> list[Path]:
    """The segment files in log order."""
    if not wal_dir.is_dir():
        return []
    return sorted(
        p for p in wal_dir.iterdir() if p.name.endswith(SEGMENT_SUFFIX) and p.is_file()
    )


def first_seq_of(path: Path) -> int:
    try:
        return int(path.name[: -len(SEGMENT_SUFFIX)])
    except ValueError:
        raise CorruptLog(
            str(path), 0, "the file name is not a sequence number"
        ) from None


def encode_record(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<IQI", len(payload), seq, crc32c.crc32c(payload))
    return head + struct.pack("<I", crc32c.crc32c(head)) + payload


@dataclass
class TornTail:
    """Where the newest segment stops holding whole records (to truncate on open)."""

    file: Path
    offset: int  # first byte not part of a whole, valid record
    size: int  # the file's size when scanned


@dataclass
class ScanState:
    """Filled in while ``scan`` runs: the last sequence seen and any torn tail."""

    last_seq: int = 0
    next_seq: int = 1  # the sequence the next record written gets
    torn: TornTail | None = None
    files: int = 0
    records: int = 0
    file: Path | None = None  # where the record last yielded is
    offset: int = 0


def _is_zeros(data: memoryview) -> bool:
    return not any(data)


def scan(
    wal_dir: Path, state: ScanState | None = None, *, expect_after: int | None = None
) -> Iterator[tuple[int, memoryview]]:
    """(sequence, payload) of every record in log order; see the module docstring.

    ``expect_after``: the sequence a snapshot covers; the log must continue from there
    (the first segment may start earlier, records up to it are yielded too — callers skip
    what the snapshot holds). A gap raises ``CorruptLog``.
    """
    state = state if state is not None else ScanState()
    files = segment_files(wal_dir)
    prev = None
    for i, path in enumerate(files):
        last_file = i == len(files) - 1
        name_seq = first_seq_of(path)
        if prev is None:
            floor = 0 if expect_after is None else expect_after
            if name_seq > floor + 1:
                raise CorruptLog(
                    str(path),
                    0,
                    f"the log starts at record {name_seq} but records after "
                    f"{floor} are needed (a segment is missing, or the snapshot is "
                    "older than the oldest log segment)",
                )
        elif name_seq != prev + 1:
            raise CorruptLog(
                str(path),
                0,
                f"segment starts at record {name_seq}, expected {prev + 1} "
                "(a segment is missing or misnamed)",
            )
        data = memoryview(path.read_bytes())
        state.files += 1
        size = len(data)
        if size < FILE_HEADER.size:
            if last_file:
                state.next_seq = name_seq
                state.torn = TornTail(path, 0, size)
                break
            raise CorruptLog(str(path), 0, "segment header is cut short")
        magic, version, _ = FILE_HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise CorruptLog(str(path), 0, "not a segd log segment (bad magic)")
        if version != FORMAT_VERSION:
            raise CorruptLog(
                str(path), 0, f"log format version {version} (this segd reads 1)"
            )
        off = FILE_HEADER.size
        expected = name_seq
        while off < size:
            rest = size - off
            torn_here = TornTail(path, off, size)
            if rest < RECORD_HEADER.size:
                if last_file:
                    state.torn = torn_here
                    break
                raise CorruptLog(str(path), off, "record header cut short")
            length, seq, pcrc, hcrc = RECORD_HEADER.unpack_from(data, off)
            if crc32c.crc32c(data[off : off + 16]) != hcrc:
                if last_file and _is_zeros(data[off:]):
                    state.torn = torn_here
                    break
                raise CorruptLog(str(path), off, "record header checksum mismatch")
            end = off + RECORD_HEADER.size + length
            if end > size:
                if last_file:
                    state.torn = torn_here
                    break
                raise CorruptLog(str(path), off, "record cut short")
            payload = data[off + RECORD_HEADER.size : end]
            if crc32c.crc32c(payload) != pcrc:
                if last_file and end == size:
                    # The last record of the log, whole by its length, but not its
                    # bytes: a write that did not reach the disk completely.
                    state.torn = torn_here
                    break
                raise CorruptLog(str(path), off, "record checksum mismatch")
            if seq != expected:
                raise CorruptLog(
                    str(path), off, f"record {seq} where {expected} was expected"
                )
            state.last_seq = seq
            state.records += 1
            state.file, state.offset = path, off
            yield seq, payload
            expected = seq + 1
            off = end
        prev = expected - 1
        state.next_seq = expected
        if state.torn is not None:
            break


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in FULL_ERRNOS:
        return StorageFull(f"{what}: the disk is full ({exc.strerror})")
    return StorageError(f"{what}: {exc.strerror or exc}")


class Wal:
    """The append side of the log (see module docstring). Thread-safe."""

    def __init__(
        self,
        wal_dir: Path,
        *,
        next_seq: int,
        fsync: str = "always",
        interval_ms: int = 100,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        """Open for appending at ``next_seq``; recovery (scan + truncation of a torn
        tail, see ``truncate_torn``) must have happened before."""
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        self.dir = Path(wal_dir)
        self.fsync_mode = fsync
        self.interval_ms = interval_ms
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()  # appends, rolls, closing
        self._cv = threading.Condition()  # sync state
        self._written = next_seq - 1  # last sequence written to the file
        self._synced = next_seq - 1  # last sequence known on disk
        self._syncing = False
        self._failed: str | None = None
        self._closed = False
        self.fsyncs = 0
        self._fd = -1
        self._size = 0
        self.current: Path | None = None
        self._open_segment(next_seq)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if fsync == "interval":
            self._ticker = threading.Thread(
                target=self._tick, name="segd-wal-fsync", daemon=True
            )
            self._ticker.start()

    # -- segments -------------------------------------------------------------------
    def _open_segment(self, first_seq: int) -> None:
        path = self.dir / segment_name(first_seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, FILE_HEADER.pack(MAGIC, FORMAT_VERSION, 0))
                os.fsync(fd)
                fsync_dir(self.dir)
            except OSError:
                os.close(fd)
                try:
                    path.unlink()
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise _storage_error(exc, f"cannot create log segment {path}") from exc
        self._fd, self._size, self.current = fd, FILE_HEADER.size, path

    def _roll(self) -> None:
        """Start a new segment (under ``_lock``): the old one is fsynced and closed."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(f"fsync of {self.current} failed: {exc.strerror or exc}")
            raise LogFailed(self._failed) from exc
        with self._cv:
            self._synced = max(self._synced, self._written)
            self._cv.notify_all()
        old = self._fd
        self._open_segment(self._written + 1)
        os.close(old)

    # -- writing --------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._written

    @property
    def synced_seq(self) -> int:
        return self._synced

    @property
    def failed(self) -> str | None:
        """Why the log accepts no more writes (a failed fsync), or None."""
        return self._failed

    def _fail(self, why: str) -> None:
        with self._cv:
            if self._failed is None:
                self._failed = why
                log.error(
                    "write-ahead log failed, accepting no more writes (restart to "
                    "recover from the log): %s",
                    why,
                )
            self._cv.notify_all()

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise LogFailed(
                f"the write-ahead log accepts no more writes: {self._failed}; "
                "restart segd to recover from the log"
            )
        if self._closed:
            raise StorageError("the write-ahead log is closed")

    def append(self, payload: bytes) -> int:
        """Write one record; its sequence number. Nothing of it remains on failure."""
        with self._lock:
            self._check_usable()
            if self._size >= self.segment_bytes:
                self._roll()
            seq = self._written + 1
            data = encode_record(seq, payload)
            start = self._size
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError as exc:
                try:
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                except OSError as exc2:
                    self._fail(
                        f"cannot cut a failed write off {self.current}: "
                        f"{exc2.strerror or exc2}"
                    )
                raise _storage_error(
                    exc, f"cannot write to the log {self.current}"
                ) from exc
            self._size += len(data)
            self._written = seq
            return seq

    def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` is on disk (``always``); at once otherwise."""
        if self.fsync_mode != "always" or seq <= 0:
            return
        with self._cv:
            while True:
                if self._synced >= seq:
                    return
                if self._failed is not None:
                    self._check_usable()
                if not self._syncing:
                    self._syncing = True
                    break
                self._cv.wait()
        self._sync_as_leader()
        with self._cv:
            if self._synced < seq:
                self._check_usable()

    def _sync_as_leader(self) -> None:
        """fsync everything written so far (the caller set ``_syncing``)."""
        target = -1
        try:
            with self._lock:
                target = self._written
                fd = os.dup(self._fd) if not self._closed else -1
            if fd >= 0:
                try:
                    os.fsync(fd)
                    self.fsyncs += 1
                finally:
                    os.close(fd)
        except OSError as exc:
            self._fail(f"fsync of {self.current} failed: {exc.strerror or exc}")
            target = -1
        finally:
            with self._cv:
                self._syncing = False
                if target >= 0:
                    self._synced = max(self._synced, target)
                self._cv.notify_all()

    def sync(self) -> None:
        """fsync everything written so far, whatever the mode."""
        with self._cv:
            while self._syncing:
                self._cv.wait()
            if self._synced >= self._written:
                return
            self._syncing = True
        self._sync_as_leader()
        if self._failed is not None:
            self._check_usable()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_ms / 1000):
            if self._synced < self._written and self._failed is None:
                with self._cv:
                    if self._syncing:
                        continue
                    self._syncing = True
                self._sync_as_leader()

    # -- after a snapshot -------------------------------------------------------------
    def delete_through(self, seq: int) -> list[Path]:
        """Delete segments whose every record is ≤ ``seq`` (a durable snapshot covers
        them). The current segment is rolled first if it is covered whole."""
        with self._lock:
            if self._written <= seq and self._size > FILE_HEADER.size:
                self._roll()
            files = segment_files(self.dir)
            gone: list[Path] = []
            for path, nxt in zip(files, files[1:], strict=False):
                if path == self.current:
                    break
                if first_seq_of(nxt) - 1 <= seq:
                    path.unlink()
                    gone.append(path)
                else:
                    break
            if gone:
                fsync_dir(self.dir)
            return gone

    def close(self) -> None:
        """fsync and close (any mode); later appends fail."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self._closed:
                return
            if self._failed is None:
                try:
                    os.fsync(self._fd)
                    with self._cv:
                        self._synced = self._written
                except OSError as exc:
                    self._fail(f"fsync of {self.current} failed: {exc.strerror or exc}")
            os.close(self._fd)
            self._closed = True


def truncate_torn(torn: TornTail) -> None:
    """Cut a torn tail off the newest segment (it was never acknowledged)."""
    if torn.offset < FILE_HEADER.size:
        torn.file.unlink()  # not even a whole segment header: the segment never began
    else:
        fd = os.open(torn.file, os.O_WRONLY)
        try:
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(torn.file.parent)
