"""A durable Engine: the data directory, its lock, recovery, snapshots and idempotency keys.

``<data-dir>/`` holds ``LOCK`` (an fcntl lock: one process at a time), ``wal/`` (the
write-ahead log, segd.wal) and ``snapshots/`` (segd.snapshot). ``open_engine`` is
``Engine.open``: lock, load the newest valid snapshot, replay the log after it (cutting a
torn tail off), then open the log for appending. See docs/storage.md.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segd import mutations as mut
from segd import wal as walmod
from segd.errors import CorruptLog, DataDirLocked, StorageError

log = logging.getLogger("segd.storage")

LOCK_FILE = "LOCK"
WAL_DIR = "wal"
SNAPSHOT_DIR = "snapshots"
# Idempotency keys are kept at least this long, and at least this many of them.
KEY_TTL_S = 24 * 3600
KEY_MIN_COUNT = 1_000_000


class IdempotencyTable:
    """Keys of applied idempotent calls -> (acknowledgement, log sequence, time).

    A key is forgotten only when it is both older than 24 h and not among the last 1M
    keys. It lives in the log records (and snapshots), so it survives restarts.
    """

    def __init__(self) -> None:
        self._keys: collections.OrderedDict[str, tuple[dict, int, float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> tuple[dict, int] | None:
        hit = self._keys.get(key)
        return None if hit is None else (hit[0], hit[1])

    def put(self, key: str, ack: dict, seq: int, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self._keys[key] = (dict(ack), seq, at)
        self._keys.move_to_end(key)
        cutoff = time.time() - KEY_TTL_S
        while len(self._keys) > KEY_MIN_COUNT:
            oldest = next(iter(self._keys.values()))
            if oldest[2] >= cutoff:
                break
            self._keys.popitem(last=False)

    def to_state(self) -> list:
        """Plain data for a snapshot's metadata (oldest first)."""
        return [[k, ack, at] for k, (ack, _, at) in self._keys.items()]

    def load_state(self, state: list) -> None:
        for key, ack, at in state:
            self._keys[key] = (dict(ack), 0, float(at))


class DirLock:
    """An exclusive fcntl lock on ``<data-dir>/LOCK`` holding the owner's pid.

    The kernel drops it when the process dies, so a SIGKILLed server never leaves a stale
    lock behind."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise DataDirLocked(str(directory), holder) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        # A forked child (the snapshot writer) must not keep the lock alive if this
        # process dies: its copy of the descriptor is closed at once.
        os.register_at_fork(after_in_child=self._close_in_child)

    def _close_in_child(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _prepare(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / WAL_DIR).mkdir(exist_ok=True)
        (path / SNAPSHOT_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the data directory {path}: {exc.strerror or exc}"
        ) from exc
    if not os.access(path, os.W_OK) or not os.access(path / WAL_DIR, os.W_OK):
        raise StorageError(f"the data directory {path} is not writable")


def _restore_snapshot(engine: Any, path: Path) -> int:
    """Load the newest valid snapshot into `engine`; the log sequence it covers.

    A snapshot that does not verify is reported in one log line and the one before it is
    used (with the longer log after it: segments are kept back to the oldest snapshot)."""
    from segd import snapshot as snap

    state, skipped = snap.latest_valid_snapshot(path / SNAPSHOT_DIR)
    for line in skipped:
        log.warning("snapshot skipped: %s", line)
    if state is None:
        return 0
    engine.store = state.store
    engine.segments = state.segments
    engine.recs.restore(state.recs_model)
    meta = (state.metadata or {}).get("durability") or {}
    if (
        meta.get("rfm") is not None
    ):  # RFM config, computation, transitions, daily counts
        from segd.rfm import RfmState

        engine.rfm_state = RfmState.from_bytes(meta["rfm"])
    if meta.get("live") is not None:  # the clock, dynamic members, change log
        from segd.live import LiveSegments

        engine.live = LiveSegments.from_bytes(engine, meta["live"])
    engine.idempotency.load_state(meta.get("idempotency", []))
    engine.events_sequence = int(meta.get("events_sequence", 0))
    return int(state.wal_seq)


def snapshot_meta(engine: Any) -> dict:
    """What a snapshot keeps besides the store and segments (see _restore_snapshot)."""
    return {
        "idempotency": engine.idempotency.to_state(),
        "events_sequence": engine.events_sequence,
        "rfm": engine.rfm_state.to_bytes(),
        "live": engine.live.to_bytes(),
    }


# Replay applies runs of consecutive event records together, up to this many rows (or
# bytes of Arrow data): their tables are read as one (segd.mutations.events_of_records)
# and applied as one batch, through the encode-then-append-once path of a bulk load:
# one hash pass over the group's ids, one append per event type, instead of a decode,
# a hash pass and an append per record.
REPLAY_GROUP_ROWS = 2_000_000
REPLAY_GROUP_BYTES = 256 << 20


def replay(engine: Any, wal_dir: Path, after_seq: int) -> walmod.ScanState:
    """Apply every committed record after `after_seq`; cut a torn tail off."""
    state = walmod.ScanState()
    pending: dict[str, list] = {}
    group: list[dict] = []
    where: list[tuple[Path | None, int, int]] = []  # (file, offset, seq) per record
    group_rows = group_bytes = 0

    def flush() -> None:
        nonlocal group_rows, group_bytes
        if not group:
            return
        try:
            batches = mut.events_of_records(group)
        except Exception:  # noqa: BLE001 - find the record at fault, one by one
            for rec, (file, offset, seq) in zip(group, where, strict=True):
                try:
                    mut.decode_record(rec)
                except Exception as exc:  # noqa: BLE001
                    raise CorruptLog(
                        str(file), offset, f"record {seq} cannot be read: {exc}"
                    ) from exc
            raise
        engine._apply_event_chunks(((0, b) for b in batches), shrink=False)
        group.clear()
        where.clear()
        group_rows = group_bytes = 0

    for seq, payload in walmod.scan(wal_dir, state, expect_after=after_seq):
        # A snapshot never falls between a bulk load's chunks and its commit (it waits
        # for running loads), so every record up to its sequence is in it.
        if seq <= after_seq:
            continue
        try:
            rec = mut.unpack(payload)
            # With live segments each record is applied on its own, as it was live:
            # the changes it logs depend on the state between records.
            if mut.is_plain_events(rec) and not engine.live.tracking:
                # The acknowledgement and key now (they need no table); the rows with
                # the group. Nothing reads them before the group is applied.
                engine._note_applied(
                    mut.EventsAppended(mut.NO_BATCH, rec.get("idem"), rec.get("ack"))
                )
                m = None
            else:
                m = mut.decode_record(rec)
        except Exception as exc:  # noqa: BLE001 - a newer kind, or a bug: stop, say where
            raise CorruptLog(
                str(state.file), state.offset, f"record {seq} cannot be read: {exc}"
            ) from exc
        if m is None:
            group.append(rec)
            where.append((state.file, state.offset, seq))
            ack = rec.get("ack") or {}
            group_rows += int(ack.get("rows") or len(rec["t"]) // 16)
            group_bytes += len(rec["t"])
            if group_rows >= REPLAY_GROUP_ROWS or group_bytes >= REPLAY_GROUP_BYTES:
                flush()
            continue
        flush()
        if isinstance(m, mut.LoadChunk):
            pending.setdefault(m.load_id, []).append(m)
        elif isinstance(m, mut.LoadCommitted):
            engine._apply_logged_load(pending.pop(m.load_id, []), m.identity)
        elif isinstance(m, mut.LoadAborted):
            pending.pop(m.load_id, None)
        else:
            engine._apply(m)
    flush()
    if state.torn is not None:
        t = state.torn
        log.warning(
            "torn write at the end of the log %s at offset %d: %d bytes truncated "
            "(that record was never acknowledged)",
            t.file,
            t.offset,
            t.size - t.offset,
        )
        walmod.truncate_torn(t)
    state.next_seq = max(state.next_seq, after_seq + 1)
    return state


def open_engine(
    cls: Any,
    path: Path,
    *,
    fsync: str,
    fsync_interval_ms: int,
    result_cache_size: int,
    segment_bytes: int | None,
) -> Any:
    if fsync not in walmod.FSYNC_MODES:
        raise ValueError(
            f"fsync must be one of {', '.join(walmod.FSYNC_MODES)}, got {fsync!r}"
        )
    t0 = time.perf_counter()
    _prepare(path)
    lock = DirLock(path)
    try:
        engine = cls(result_cache_size=result_cache_size)
        snap_seq = _restore_snapshot(engine, path)
        state = replay(engine, path / WAL_DIR, snap_seq)
        wal = walmod.Wal(
            path / WAL_DIR,
            next_seq=state.next_seq,
            fsync=fsync,
            interval_ms=fsync_interval_ms,
            segment_bytes=segment_bytes or walmod.DEFAULT_SEGMENT_BYTES,
        )
    except BaseException:
        lock.release()
        raise
    engine._wal = wal
    engine._data_dir = path
    engine._dir_lock = lock
    engine.recovery = {
        "snapshot_seq": snap_seq,
        "replayed_records": max(0, state.last_seq - snap_seq),
        "last_seq": state.next_seq - 1,
        "torn_bytes": 0 if state.torn is None else state.torn.size - state.torn.offset,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return engine


def take_snapshot(engine: Any) -> Any:
    """Write a snapshot (segd.snapshot holds the engine only for a fork), then delete the
    log segments every kept snapshot covers — only once the new one is durable.

    The log sequence and this module's metadata (idempotency keys, the event sequence)
    are read while write_snapshot holds the engine, so they agree with the state."""
    from segd import snapshot as snap

    wal = engine._wal
    held: dict = {}

    def seq_and_meta() -> int:
        held.update(snapshot_meta(engine))  # under the engine's read lock
        return wal.last_seq

    with engine._bulk:  # a bulk load's chunks and its commit stay on one side
        info = snap.write_snapshot(
            engine,
            engine._data_dir / SNAPSHOT_DIR,
            wal_seq=seq_and_meta,
            # write_snapshot copies the dict before taking the lock; the inner dict is
            # shared, so what seq_and_meta puts there is what gets written.
            metadata={"durability": held},
            background=engine.snapshot_background,
        )
    kept = snap.list_snapshots(engine._data_dir / SNAPSHOT_DIR)
    oldest = min((ref.wal_seq for ref in kept), default=info.wal_seq)
    wal.delete_through(min(oldest, info.wal_seq))
    return info


def close_engine(engine: Any) -> None:
    """Later writes fail with StorageError (the log is closed); reads keep working."""
    wal = engine._wal
    try:
        wal.close()
    finally:
        if engine._dir_lock is not None:
            engine._dir_lock.release()
            engine._dir_lock = None


@dataclass
class RepairPoint:
    """Where ``segctl repair`` would cut the log: the corrupt record and what goes."""

    file: Path
    offset: int
    reason: str
    dropped_files: list[Path]  # later segments, deleted whole
    dropped_bytes: int


def snapshot_seq(path: Path) -> int:
    """The log sequence the newest snapshot that verifies covers (0: none)."""
    from segd import snapshot as snap

    for ref in reversed(snap.list_snapshots(path / SNAPSHOT_DIR)):
        try:
            return int(snap.verify_snapshot(ref.path)["wal_seq"])
        except snap.CorruptSnapshot:
            continue
    return 0


def find_repair_point(path: Path) -> RepairPoint | None:
    """The first corrupt place of the log under `path` (None: the log reads clean)."""
    wal_dir = path / WAL_DIR
    try:
        for _ in walmod.scan(wal_dir, expect_after=snapshot_seq(path)):
            pass
    except CorruptLog as exc:
        bad = Path(exc.file)
        later = [p for p in walmod.segment_files(wal_dir) if p.name > bad.name]
        size = bad.stat().st_size
        return RepairPoint(
            bad,
            exc.offset,
            exc.reason,
            later,
            size - exc.offset + sum(p.stat().st_size for p in later),
        )
    return None


def repair(point: RepairPoint) -> None:
    """Cut the log at `point` (the caller holds the directory lock and asked first)."""
    for p in point.dropped_files:
        p.unlink()
    if point.offset < walmod.FILE_HEADER.size:
        point.file.unlink()
    else:
        fd = os.open(point.file, os.O_WRONLY)
        try:
            os.ftruncate(fd, point.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    walmod.fsync_dir(point.file.parent)
