"""Snapshots: the whole store written out as files, memory-mapped back on start.

A snapshot is one directory under ``<data-dir>/snapshots/``, named
``snapshot-<wal_seq:020>-<unix_ns:020>`` so that name order is age order. It holds

- one ``.npy`` file per array (event columns, postings in CSR form, attribute columns,
  id-map arrays, aggregates): numpy's format, so ``np.load(mmap_mode="c")`` maps it back
  without parsing: pages are read on first touch and copied on first write;
- ``*.roaring`` files: the portable serialisation of roaring bitmaps (tag and category
  bitmaps), with an ``.offsets.npy`` per file;
- ``state.msgpack``: how the arrays fit together (columns, kinds, dimensions), the saved
  segments (static members as portable roaring bitmaps) and the caller's metadata;
- ``MANIFEST`` (written last): format version, the WAL sequence the snapshot covers, and
  every file with its size and CRC32C; the manifest carries its own CRC32C.

Writing goes to ``.tmp-<name>/``; every file is fsynced, then the directory, then it is
renamed to its final name and the parent directory is fsynced: a snapshot directory either
exists whole or not at all. By default the files are written by a forked child (as Redis'
BGSAVE): the engine is held (read lock: readers go on, writers wait) only for the
``fork()``, and the child writes from its copy-on-write view of memory. See
docs/storage.md, section "Snapshots".
"""

from __future__ import annotations

import builtins
import gc
import io
import os
import re
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import crc32c
import msgpack
import numpy as np
from pyroaring import BitMap

import segd
from segd._version import __version__
from segd.errors import SegdError
from segd.native.idmap import IdMap
from segd.native.postings import Postings
from segd.segments.registry import SegmentRegistry
from segd.store import Store

if TYPE_CHECKING:
    from segd.core import Engine

FORMAT_VERSION = 1
MANIFEST = "MANIFEST"
STATE = "state.msgpack"
PACK = "small-arrays.bin"
TMP_PREFIX = ".tmp-"
NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})$")
KEEP = 2  # snapshots kept by prune_snapshots (the newest, and one to fall back to)
# Arrays below this size are read into memory: a mapping costs a page and a syscall.
MMAP_MIN_BYTES = 1 << 16
CHUNK = 8 << 20  # bytes per write / checksum step


class SnapshotError(SegdError):
    """Writing a snapshot failed (disk full, I/O error, the writer child died)."""


class CorruptSnapshot(SegdError):
    """A snapshot does not verify: a missing or damaged file, or a bad manifest.

    ``path`` is the snapshot directory, ``file`` the file at fault (None when the
    snapshot as a whole is), ``reason`` what is wrong.
    """

    def __init__(self, path: Path | str, reason: str, file: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.file = file
        where = f"{self.path}/{file}" if file else str(self.path)
        super().__init__(f"corrupt snapshot {where}: {reason}")


@dataclass(frozen=True)
class SnapshotInfo:
    """One written snapshot: where, which WAL sequence it covers, its size in bytes, the
    whole time it took and ``pause_seconds``, how long the engine was held (the fork)."""

    path: Path
    wal_seq: int
    bytes: int
    seconds: float
    pause_seconds: float = 0.0
    files: int = 0


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot directory found by ``list_snapshots`` (not verified)."""

    path: Path
    wal_seq: int
    created_ns: int


@dataclass
class RestoredState:
    """What ``read_snapshot`` gives back: the store (its arrays memory-mapped), the saved
    segments, the WAL sequence the snapshot covers and the metadata it was written with."""

    path: Path
    store: Store
    segments: SegmentRegistry
    wal_seq: int
    metadata: dict = field(default_factory=dict)
    created_ns: int = 0
    bytes: int = 0
    seconds: float = 0.0
    recs_model: Any = None  # segd.recs.RecsModel, when the snapshot has one
    # The live segments' clock, dynamic memberships and change log
    # (``LiveSegments.to_bytes``); None in snapshots written before they were kept here.
    live_state: builtins.bytes | None = None

    def engine(self, **engine_args: Any) -> Engine:
        """An in-memory ``Engine`` over this state (``engine_args`` go to Engine()),
        live segments included: its clock, dynamic members and change log are the
        snapshot's, and they move on from there."""
        from segd.core import Engine

        eng = Engine(**engine_args)
        eng.store = self.store
        eng.segments = self.segments
        eng.recs.restore(self.recs_model)
        self.restore_live(eng)
        return eng

    def restore_live(self, eng: Engine) -> None:
        """Give `eng` the snapshot's live segments (when it has them)."""
        data = self.live_state
        if data is None:  # older snapshots: the durable engine's copy, if any
            data = (self.metadata.get("durability") or {}).get("live")
        if data is not None:
            from segd.live import LiveSegments

            eng.live = LiveSegments.from_bytes(eng, data)


# -- writing -------------------------------------------------------------------------


def _npy_header(dtype: np.dtype, n: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (n,),
        },
    )
    return buf.getvalue()


class _Writer:
    """Writes a snapshot's files into one directory and records size and CRC32C of each.

    The engine's modules call ``array``, ``idmap``, ``bitmaps`` and ``postings`` from
    their ``to_snapshot`` methods (duck-typed: they never import this module).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[int]] = {}
        # Small arrays go into one file (PACK): a file each would cost an fsync each.
        self.packed: dict[str, list] = {}  # name -> [offset, dtype descr, length]
        self._pack: list[bytes] = []
        self._pack_size = 0

    def _create(self, fname: str, *, readable: bool = False):
        """A new file (never an existing one); `readable` for a read-write mapping."""
        if fname in self.files:
            raise ValueError(f"snapshot file {fname!r} written twice")
        flags = os.O_CREAT | os.O_EXCL | (os.O_RDWR if readable else os.O_WRONLY)
        fd = os.open(self.root / fname, flags, 0o644)
        return os.fdopen(fd, "r+b" if readable else "wb")

    def _finish(self, f, fname: str, size: int, crc: int) -> None:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self.files[fname] = [size, crc]

    def _stream(self, fname: str, parts) -> None:
        f = self._create(fname)
        size, crc = 0, 0
        try:
            for part in parts:
                mv = memoryview(part).cast("B")
                for i in range(0, len(mv), CHUNK):
                    piece = mv[i : i + CHUNK]
                    crc = crc32c.crc32c(piece, crc)
                    f.write(piece)
                    size += len(piece)
        except BaseException:
            f.close()
            raise
        self._finish(f, fname, size, crc)

    def blob(self, name: str, data: bytes) -> None:
        self._stream(name, [data])

    def array(self, name: str, arr: np.ndarray) -> None:
        """A 1-D array as ``<name>.npy`` (only rows in use: callers slice to n), or in
        the pack of small arrays when it is too small to be worth a mapping."""
        arr = np.ascontiguousarray(arr)
        if arr.ndim != 1:
            raise ValueError(f"{name}: snapshot arrays are 1-D, got shape {arr.shape}")
        if arr.nbytes < MMAP_MIN_BYTES:
            if name in self.packed:
                raise ValueError(f"snapshot array {name!r} written twice")
            pad = -self._pack_size % 8  # every packed array starts 8-byte aligned
            self._pack.append(bytes(pad) + arr.tobytes())
            self.packed[name] = [
                self._pack_size + pad,
                np.lib.format.dtype_to_descr(arr.dtype),
                len(arr),
            ]
            self._pack_size += pad + arr.nbytes
            return
        self._stream(f"{name}.npy", [_npy_header(arr.dtype, len(arr)), arr])

    def close_pack(self) -> None:
        self._stream(PACK, self._pack)
        self._pack = []

    def idmap(self, name: str, m: IdMap) -> None:
        """The map's own arrays (no rehash on restore). Views, not copies: the caller
        holds the engine (read lock or a forked child), so the map cannot change."""
        for key, arr in m.to_arrays(copy=False).items():
            self.array(f"{name}.{key}", arr)

    def bitmaps(self, name: str, bitmaps: list[BitMap]) -> None:
        parts = [bm.serialize() for bm in bitmaps]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        self.array(f"{name}.offsets", offsets)
        self._stream(f"{name}.roaring", parts)

    def postings(self, name: str, p: Postings) -> None:
        """CSR form: rows per code, then every list's rows, copied by the native code
        straight into the file's mapping (no buffer the size of the postings)."""
        self.array(f"{name}.sizes", p.sizes())
        total = int(p.postings)
        fname = f"{name}.rows.npy"
        header = _npy_header(np.dtype(np.uint32), total)
        if total == 0:
            self._stream(fname, [header])
            return
        f = self._create(fname, readable=True)
        try:
            f.write(header)
            f.truncate(len(header) + 4 * total)
            f.flush()
            mm = np.memmap(
                f, dtype=np.uint32, mode="r+", offset=len(header), shape=(total,)
            )
            p.copy_rows_into(mm)
            mm.flush()
            # numpy declares the buffer protocol to typing only on Python 3.12+
            crc = crc32c.crc32c(mm, crc32c.crc32c(header))  # type: ignore[arg-type]
            del mm
        except BaseException:
            f.close()
            raise
        self._finish(f, fname, len(header) + 4 * total, crc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(
    engine: Engine, tmp: Path, wal_seq: int, created_ns: int, metadata: dict
) -> int:
    """Every file of the snapshot into `tmp` (manifest last, all fsynced); total bytes."""
    tmp.mkdir()
    w = _Writer(tmp)
    state = {
        "store": engine.store.to_snapshot(w),
        "segments": engine.segments.to_snapshot(),
        "metadata": metadata,
        # the recommendation model (derived data, kept so a restart need not rebuild it)
        "recs": engine.recs.to_snapshot(w) if hasattr(engine, "recs") else None,
        # the clock, dynamic memberships and change log (segd.live)
        "live": engine.live.to_bytes() if hasattr(engine, "live") else None,
    }
    w.close_pack()
    state["packed"] = w.packed
    w.blob(STATE, msgpack.packb(state, use_bin_type=True))
    total = sum(size for size, _ in w.files.values())
    body = msgpack.packb(
        {
            "format": FORMAT_VERSION,
            "segd_version": __version__,
            "wal_seq": wal_seq,
            "created_ns": created_ns,
            "bytes": total,
            "files": w.files,
        },
        use_bin_type=True,
    )
    manifest = msgpack.packb({"body": body, "crc32c": crc32c.crc32c(body)})
    with open(tmp / MANIFEST, "xb") as f:
        f.write(manifest)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    return total + len(manifest)


def _name(wal_seq: int, created_ns: int) -> str:
    return f"snapshot-{wal_seq:020d}-{created_ns:020d}"


_IN_PROGRESS: set[str] = set()  # temporary directories this process is writing


def fork_is_default() -> bool:
    """Whether ``write_snapshot(background=None)`` forks: where ``os.fork`` exists and
    gRPC's fork handlers are off (``import segd`` turns them off unless gRPC was imported
    first with them on, or ``GRPC_ENABLE_FORK_SUPPORT`` asks for them; see segd/__init__).
    Otherwise snapshots are written in process, and writers wait for the whole write."""
    return hasattr(os, "fork") and segd._GRPC_FORK_SAFE


def write_snapshot(
    engine: Engine,
    directory: Path,
    *,
    wal_seq: int | Callable[[], int],
    metadata: dict | None = None,
    background: bool | None = None,
    keep: int | None = KEEP,
) -> SnapshotInfo:
    """Write a new snapshot of `engine` under `directory` (``<data-dir>/snapshots``).

    `wal_seq`: the last WAL sequence number the engine's state contains. Pass a callable
    to have it read while the engine is held, so no write can fall between the number and
    the state. `metadata`: msgpack-able data stored with the snapshot (returned by
    ``read_snapshot``). `background`: write from a forked child (default where
    ``os.fork`` exists) so the engine is held only for the fork; False writes in this
    process under the engine's read lock. `keep`: snapshots to keep afterwards
    (``prune_snapshots``), None keeps all. Raises SnapshotError when writing fails
    (nothing is left behind then).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    if background is None:
        background = fork_is_default()
    use_fork = background
    t0 = time.perf_counter()
    held: dict[str, Any] = {}

    def hold_and_write() -> None:
        """Under the read lock (no writer runs: the state and wal_seq agree): fork the
        writer, or write here."""
        with engine._lock.read():
            t_held = time.perf_counter()
            seq = int(wal_seq() if callable(wal_seq) else wal_seq)
            created_ns = time.time_ns()
            name = _name(seq, created_ns)
            tmp = directory / f"{TMP_PREFIX}{name}"
            held.update(seq=seq, name=name, tmp=tmp)
            _IN_PROGRESS.add(tmp.name)
            if use_fork:
                rfd, wfd = os.pipe()
                # No garbage collection in the child: it would traverse objects of
                # threads that do not exist there (gRPC's, mid-call).
                gc_was_enabled = gc.isenabled()
                gc.disable()
                try:
                    pid = os.fork()
                except OSError as exc:  # EAGAIN / ENOMEM: no child, nothing written
                    if gc_was_enabled:
                        gc.enable()
                    os.close(rfd)
                    os.close(wfd)
                    _IN_PROGRESS.discard(tmp.name)
                    raise SnapshotError(
                        f"cannot fork the snapshot writer: {exc}"
                    ) from exc
                if pid == 0:  # the child: write, report, never return
                    os.close(rfd)
                    _child(engine, tmp, seq, created_ns, metadata, wfd)
                if gc_was_enabled:  # (the child keeps it off)
                    gc.enable()
                os.close(wfd)
                held.update(pid=pid, rfd=rfd)
            else:
                try:
                    held["total"] = _write_files(engine, tmp, seq, created_ns, metadata)
                except BaseException as exc:
                    _discard(tmp)
                    _IN_PROGRESS.discard(tmp.name)
                    raise SnapshotError(
                        f"writing snapshot {name} failed: {exc}"
                    ) from exc
            held["pause"] = time.perf_counter() - t_held

    if use_fork:
        # Fork from a thread of our own: forking from a gRPC handler thread crashes the
        # child in CPython's after-fork code (threading._after_fork), one started
        # here does not.
        forker = threading.Thread(
            target=_capture(hold_and_write, held), name="snapshot-fork"
        )
        forker.start()
        forker.join()
        if "error" in held:
            raise held["error"]
    else:
        hold_and_write()
    seq, name, tmp, pause = held["seq"], held["name"], held["tmp"], held["pause"]
    try:
        if use_fork:
            total = _wait_child(held["pid"], held["rfd"], tmp, name)
        else:
            total = held["total"]
        final = directory / name
        os.rename(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        _discard(tmp)
        raise
    finally:
        _IN_PROGRESS.discard(tmp.name)
    info = SnapshotInfo(
        path=final,
        wal_seq=seq,
        bytes=total,
        seconds=time.perf_counter() - t0,
        pause_seconds=pause,
        files=len(list(final.iterdir())),
    )
    if keep is not None:
        prune_snapshots(directory, keep=keep)
    return info


def _capture(fn: Callable[[], None], into: dict) -> Callable[[], None]:
    """`fn` for a thread: an exception is kept in ``into["error"]`` for the joiner."""

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the joiner)
            into["error"] = exc

    return run


def _child(engine, tmp: Path, seq: int, created_ns: int, metadata: dict, wfd: int):
    """Body of the forked writer: only this thread exists here, so nothing is locked."""
    code = 1
    try:
        try:
            total = _write_files(engine, tmp, seq, created_ns, metadata)
            report: dict[str, Any] = {"ok": True, "bytes": total}
            code = 0
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            report = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
        data = msgpack.packb(report)
        view = memoryview(data)
        while view:
            view = view[os.write(wfd, view) :]
        os.close(wfd)
    finally:
        os._exit(code)


def _wait_child(pid: int, rfd: int, tmp: Path, name: str) -> int:
    """Collect the child's report (the pipe closes when it exits) and its exit status."""
    chunks = []
    with os.fdopen(rfd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    report = None
    if chunks:
        try:
            report = msgpack.unpackb(b"".join(chunks))
        except (ValueError, msgpack.UnpackException):
            report = None
    if report is None or not report.get("ok") or os.waitstatus_to_exitcode(status):
        why = (
            report["error"]
            if report and "error" in report
            else f"writer process exited with status {os.waitstatus_to_exitcode(status)}"
        )
        raise SnapshotError(f"writing snapshot {name} failed: {why}")
    return int(report["bytes"])


def _discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- listing and pruning ---------------------------------------------------------------


def list_snapshots(directory: Path) -> list[SnapshotRef]:
    """Snapshot directories under `directory`, oldest first (by WAL sequence, then time).
    Temporary directories of unfinished writes are not listed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    refs = []
    for entry in directory.iterdir():
        m = NAME.match(entry.name)
        if m and entry.is_dir():
            refs.append(SnapshotRef(entry, int(m.group(1)), int(m.group(2))))
    refs.sort(key=lambda r: (r.wal_seq, r.created_ns))
    return refs


def prune_snapshots(directory: Path, *, keep: int = KEEP) -> list[Path]:
    """Delete all but the newest `keep` snapshots, and leftovers of writes that died
    (temporary directories no write of this process is using). Returns what was removed.

    A WAL segment may only be deleted when the oldest kept snapshot covers it: that one
    is the fallback when the newest does not verify."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    directory = Path(directory)
    removed = [r.path for r in list_snapshots(directory)[:-keep]]
    if directory.is_dir():
        removed += [
            e
            for e in directory.iterdir()
            if e.name.startswith(TMP_PREFIX) and e.name not in _IN_PROGRESS
        ]
    for path in removed:
        _discard(path)
    if removed:
        _fsync_dir(directory)
    return removed


# -- reading ----------------------------------------------------------------------------


def _read_manifest(path: Path) -> dict:
    try:
        raw = (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise CorruptSnapshot(path, "the manifest is missing", MANIFEST) from None
    except OSError as exc:
        raise CorruptSnapshot(path, f"cannot read: {exc}", MANIFEST) from None
    try:
        outer = msgpack.unpackb(raw)
        body = outer["body"]
        if crc32c.crc32c(body) != outer["crc32c"]:
            raise CorruptSnapshot(path, "checksum mismatch", MANIFEST)
        manifest = msgpack.unpackb(body)
        files = manifest["files"]
        wal_seq = manifest["wal_seq"]
        fmt = manifest["format"]
    except CorruptSnapshot:
        raise
    except Exception as exc:  # noqa: BLE001 (any malformed content)
        raise CorruptSnapshot(path, f"unreadable: {exc}", MANIFEST) from None
    if fmt != FORMAT_VERSION:
        raise CorruptSnapshot(
            path, f"format version {fmt}, this segd reads {FORMAT_VERSION}", MANIFEST
        )
    if not isinstance(files, dict) or not isinstance(wal_seq, int):
        raise CorruptSnapshot(path, "malformed file list or WAL sequence", MANIFEST)
    return manifest


def _verify_file(path: Path, fname: str, size: int, crc: int, buf: bytearray) -> None:
    """Size and CRC32C of one file, read in chunks through one buffer (not mapped, so the
    check adds nothing to the process's resident memory)."""
    try:
        with open(path / fname, "rb", buffering=0) as f:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                raise CorruptSnapshot(
                    path, f"size {actual} bytes, the manifest says {size}", fname
                )
            value, view = 0, memoryview(buf)
            while n := f.readinto(buf):
                value = crc32c.crc32c(view[:n], value)
    except FileNotFoundError:
        raise CorruptSnapshot(path, "missing", fname) from None
    except OSError as exc:
        raise CorruptSnapshot(path, f"cannot read: {exc}", fname) from None
    if value != crc:
        raise CorruptSnapshot(path, "checksum mismatch", fname)


class _Reader:
    """Gives the modules' ``from_snapshot`` methods their arrays back (see _Writer)."""

    def __init__(self, root: Path, files: dict[str, list[int]], packed: dict) -> None:
        self.root = root
        self.files = files
        self.packed = packed
        self._size(PACK)
        self.pack = (root / PACK).read_bytes()

    def _size(self, fname: str) -> int:
        entry = self.files.get(fname)
        if entry is None:
            raise CorruptSnapshot(self.root, "not in the manifest", fname)
        return entry[0]

    def array(self, name: str, dtype, n: int | None = None) -> np.ndarray:
        """The array of ``<name>.npy``: memory-mapped copy-on-write (writable, the file
        never changes) when large, read into memory when small."""
        if name in self.packed:
            return self._unpack(name, dtype, n)
        fname = f"{name}.npy"
        size = self._size(fname)
        try:
            if size >= MMAP_MIN_BYTES:
                arr = np.asarray(np.load(self.root / fname, mmap_mode="c"))
            else:
                arr = np.load(self.root / fname)
        except (OSError, ValueError) as exc:
            raise CorruptSnapshot(
                self.root, f"not a numpy array: {exc}", fname
            ) from None
        if (
            arr.dtype != np.dtype(dtype)
            or arr.ndim != 1
            or (n is not None and len(arr) != n)
        ):
            raise CorruptSnapshot(
                self.root,
                f"holds {arr.dtype}{list(arr.shape)}, expected {np.dtype(dtype)}"
                + (f"[{n}]" if n is not None else "[n]"),
                fname,
            )
        return arr

    def _unpack(self, name: str, dtype, n: int | None) -> np.ndarray:
        try:
            offset, descr, length = self.packed[name]
            packed_dtype = np.lib.format.descr_to_dtype(descr)
            if packed_dtype != np.dtype(dtype) or (n is not None and length != n):
                raise ValueError(f"holds {packed_dtype}[{length}], expected {dtype}")
            # A copy: writable, and the pack's bytes can go.
            return np.frombuffer(self.pack, packed_dtype, length, offset).copy()
        except (ValueError, TypeError) as exc:
            raise CorruptSnapshot(self.root, f"array {name}: {exc}", PACK) from None

    def idmap(self, name: str) -> IdMap:
        arrays = {
            "data": self.array(f"{name}.data", np.uint8),
            "offsets": self.array(f"{name}.offsets", np.int64),
            "tags": self.array(f"{name}.tags", np.uint32),
            "table": self.array(f"{name}.table", np.uint32),
        }
        try:
            return IdMap.from_arrays(**arrays)
        except ValueError as exc:
            raise CorruptSnapshot(self.root, str(exc), f"{name}.*") from None

    def bitmaps(self, name: str) -> list[BitMap]:
        offsets = self.array(f"{name}.offsets", np.int64).tolist()
        fname = f"{name}.roaring"
        self._size(fname)
        data = (self.root / fname).read_bytes()
        if offsets[-1] != len(data):
            raise CorruptSnapshot(self.root, "offsets do not match the data", fname)
        try:
            return [
                BitMap.deserialize(data[a:b])
                for a, b in zip(offsets[:-1], offsets[1:], strict=True)
            ]
        except Exception as exc:  # noqa: BLE001 (pyroaring's errors vary)
            raise CorruptSnapshot(self.root, f"bad bitmap: {exc}", fname) from None

    def postings(self, name: str) -> Postings:
        sizes = self.array(f"{name}.sizes", np.uint32)
        rows = self.array(f"{name}.rows", np.uint32)
        try:
            return Postings.from_arrays(sizes, rows)
        except ValueError as exc:
            raise CorruptSnapshot(self.root, str(exc), f"{name}.rows.npy") from None


def verify_snapshot(path: Path) -> dict:
    """Check the manifest and every file's size and checksum; returns the manifest.
    Raises CorruptSnapshot naming the first file at fault."""
    path = Path(path)
    manifest = _read_manifest(path)
    buf = bytearray(CHUNK)
    for fname, (size, crc) in sorted(manifest["files"].items()):
        _verify_file(path, fname, size, crc, buf)
    return manifest


def read_snapshot(path: Path) -> RestoredState:
    """Verify a snapshot and restore it: arrays memory-mapped, nothing parsed but the
    metadata. Raises CorruptSnapshot (with the file at fault) when it does not verify."""
    t0 = time.perf_counter()
    path = Path(path)
    manifest = verify_snapshot(path)
    try:
        if STATE not in manifest["files"]:
            raise CorruptSnapshot(path, "not in the manifest", STATE)
        state = msgpack.unpackb((path / STATE).read_bytes(), strict_map_key=False)
        reader = _Reader(path, manifest["files"], state["packed"])
        store = Store.from_snapshot(reader, state["store"])
        segments = SegmentRegistry.from_snapshot(state["segments"])
        metadata = state.get("metadata") or {}
        recs_model = None
        if state.get("recs"):
            from segd.recs import RecsModel

            recs_model = RecsModel.from_snapshot(reader, "recs", state["recs"])
    except CorruptSnapshot:
        raise
    except Exception as exc:  # noqa: BLE001 (inconsistent content that checksummed)
        raise CorruptSnapshot(
            path, f"inconsistent content: {type(exc).__name__}: {exc}", STATE
        ) from exc
    return RestoredState(
        path=path,
        store=store,
        segments=segments,
        wal_seq=manifest["wal_seq"],
        metadata=metadata,
        created_ns=manifest.get("created_ns", 0),
        bytes=manifest.get("bytes", 0),
        seconds=time.perf_counter() - t0,
        recs_model=recs_model,
        live_state=state.get("live"),
    )


def latest_valid_snapshot(directory: Path) -> tuple[RestoredState | None, list[str]]:
    """The newest snapshot under `directory` that verifies, and one line for each newer
    one that did not (skipped). (None, lines) when none verifies or there is none."""
    skipped: list[str] = []
    for ref in reversed(list_snapshots(directory)):
        try:
            return read_snapshot(ref.path), skipped
        except CorruptSnapshot as exc:
            skipped.append(f"skipped {exc}")
    return None, skipped
