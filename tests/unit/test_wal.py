"""The write-ahead log on real files: framing, torn tails at every byte, flipped bits,
gaps, repair, group commit, and a failed fsync (docs/storage.md)."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest

from segd import Engine, durability
from segd import wal as walmod
from segd.errors import CorruptLog, LogFailed, StorageError

BASE_TS = 1_735_689_600


def event(i: int) -> list[dict]:
    return [{"customer_id": f"c{i}", "ts": BASE_TS + i, "type": "view"}]


def write_engine(path: Path, n: int, **kw) -> None:
    with Engine.open(path, **kw) as eng:
        for i in range(n):
            eng.append_events(event(i))


def record_offsets(seg: Path) -> list[tuple[int, int]]:
    """(start, end) of every record in a segment, read independently of walmod.scan."""
    data = seg.read_bytes()
    off, out = walmod.FILE_HEADER.size, []
    while off < len(data):
        length = int.from_bytes(data[off : off + 4], "little")
        end = off + walmod.RECORD_HEADER.size + length
        out.append((off, end))
        off = end
    return out


def only_segment(path: Path) -> Path:
    files = walmod.segment_files(path / "wal")
    assert len(files) == 1, files
    return files[0]


def events_after_open(path: Path) -> int:
    with Engine.open(path, fsync="off") as eng:
        return eng.stats()["events"]


def test_records_round_trip_and_continue_after_reopen(tmp_path):
    write_engine(tmp_path, 5)
    with Engine.open(tmp_path) as eng:
        assert eng.recovery["replayed_records"] == 5
        assert eng.stats()["events"] == 5
        eng.append_events(event(5))
    seqs = [seq for seq, _ in walmod.scan(tmp_path / "wal")]
    assert seqs == [1, 2, 3, 4, 5, 6]
    # lexicographic order of the segment names is log order
    names = [p.name for p in walmod.segment_files(tmp_path / "wal")]
    assert names == sorted(names)


def test_segments_roll_and_are_read_in_order(tmp_path):
    write_engine(tmp_path, 30, segment_bytes=2_000)
    files = walmod.segment_files(tmp_path / "wal")
    assert len(files) > 3
    assert events_after_open(tmp_path) == 30


def test_torn_tail_at_every_byte_offset_of_the_last_records(tmp_path):
    """Truncate the newest segment at each byte of its last two records: scanning stops
    at the last whole record and reports the rest as torn, never as corruption."""
    src = tmp_path / "src"
    write_engine(src, 4)
    seg = only_segment(src)
    data = seg.read_bytes()
    spans = record_offsets(seg)
    first_cut = spans[-2][0]
    for cut in range(first_cut, len(data) + 1):
        d = tmp_path / "cut" / "wal"
        d.mkdir(parents=True, exist_ok=True)
        (d / seg.name).write_bytes(data[:cut])
        state = walmod.ScanState()
        whole = sum(1 for s, e in spans if e <= cut)
        assert len(list(walmod.scan(d, state))) == whole, cut
        if cut in (e for _, e in spans):
            assert state.torn is None, cut
        else:
            assert state.torn is not None and state.torn.offset == max(
                e for s, e in spans if e <= cut
            ), cut
        shutil.rmtree(d.parent)


@pytest.mark.parametrize("which", ["inside last", "inside last but one", "header"])
def test_engine_drops_exactly_the_torn_record_and_keeps_writing(tmp_path, which):
    write_engine(tmp_path, 4)
    seg = only_segment(tmp_path)
    spans = record_offsets(seg)
    cut = {
        "inside last": (spans[-1][0] + spans[-1][1]) // 2,
        "inside last but one": spans[-2][0] + 7,
        "header": spans[-1][0] + 3,
    }[which]
    os.truncate(seg, cut)
    expect = sum(1 for s, e in spans if e <= cut)
    with Engine.open(tmp_path) as eng:
        assert eng.stats()["events"] == expect
        assert eng.recovery["torn_bytes"] == cut - max(e for _, e in spans if e <= cut)
        eng.append_events(event(100))
    assert events_after_open(tmp_path) == expect + 1
    assert seg.stat().st_size == max(e for _, e in spans if e <= cut)


def test_zero_filled_tail_is_torn_not_corrupt(tmp_path):
    write_engine(tmp_path, 3)
    seg = only_segment(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)  # e.g. space allocated, data never written
    assert events_after_open(tmp_path) == 3


@pytest.mark.parametrize("where", ["payload", "header length", "sequence"])
def test_flipped_bit_mid_log_stops_startup_naming_file_and_offset(tmp_path, where):
    write_engine(tmp_path, 5)
    seg = only_segment(tmp_path)
    spans = record_offsets(seg)
    start, end = spans[2]
    pos = {"payload": start + 40, "header length": start + 1, "sequence": start + 4}[
        where
    ]
    data = bytearray(seg.read_bytes())
    data[pos] ^= 0x10
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as err:
        Engine.open(tmp_path)
    assert err.value.file == str(seg)
    assert err.value.offset == start
    assert str(seg) in str(err.value) and str(start) in str(err.value)
    # the failed open released the directory: repair can lock it
    point = durability.find_repair_point(tmp_path)
    assert point is not None and (point.file, point.offset) == (seg, start)
    durability.repair(point)
    assert events_after_open(tmp_path) == 2


def test_corruption_in_an_older_segment_is_never_skipped(tmp_path):
    write_engine(tmp_path, 20, segment_bytes=1_500)
    files = walmod.segment_files(tmp_path / "wal")
    assert len(files) >= 3
    data = bytearray(files[0].read_bytes())
    spans = record_offsets(files[0])
    data[spans[-1][1] - 1] ^= 1  # the *last* record of a non-last segment
    files[0].write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as err:
        Engine.open(tmp_path)
    assert err.value.file == str(files[0])
    assert err.value.offset == spans[-1][0]
    point = durability.find_repair_point(tmp_path)
    assert point.dropped_files == files[1:]


def test_missing_segment_is_a_gap_not_a_silent_skip(tmp_path):
    write_engine(tmp_path, 20, segment_bytes=1_500)
    files = walmod.segment_files(tmp_path / "wal")
    files[1].unlink()
    with pytest.raises(CorruptLog, match="expected"):
        Engine.open(tmp_path)
    files[0].unlink()  # now the log starts late: the records before are gone
    with pytest.raises(CorruptLog, match="records after 0 are needed"):
        Engine.open(tmp_path)


def test_group_commit_shares_fsyncs_between_concurrent_writers(tmp_path):
    wal = walmod.Wal(tmp_path, next_seq=1, fsync="always")
    n_threads, per_thread = 8, 40
    barrier = threading.Barrier(n_threads)

    def writer() -> None:
        barrier.wait()
        for _ in range(per_thread):
            seq = wal.append(b"x" * 100)
            wal.wait_durable(seq)
            assert wal.synced_seq >= seq

    threads = [threading.Thread(target=writer) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wal.close()
    total = n_threads * per_thread
    assert [s for s, _ in walmod.scan(tmp_path)] == list(range(1, total + 1))
    assert wal.fsyncs < total  # shared: fewer fsyncs than acknowledged writes


def test_interval_and_off_modes(tmp_path):
    wal = (
        walmod.Wal(tmp_path / "i", next_seq=1, fsync="interval", interval_ms=10)
        if ((tmp_path / "i").mkdir() is None)
        else None
    )
    seq = wal.append(b"a")
    wal.wait_durable(seq)  # returns at once; the ticker syncs soon after
    for _ in range(200):
        if wal.synced_seq >= seq:
            break
        threading.Event().wait(0.01)
    assert wal.synced_seq >= seq
    wal.close()
    (tmp_path / "o").mkdir()
    off = walmod.Wal(tmp_path / "o", next_seq=1, fsync="off")
    off.wait_durable(off.append(b"b"))
    assert off.fsyncs == 0
    off.close()
    assert [s for s, _ in walmod.scan(tmp_path / "o")] == [1]
    with pytest.raises(ValueError):
        Engine.open(tmp_path / "x", fsync="sometimes")


def test_failed_fsync_is_fatal_for_the_log(tmp_path, monkeypatch):
    eng = Engine.open(tmp_path)
    eng.append_events(event(0))
    real = os.fsync

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(walmod.os, "fsync", broken)
    with pytest.raises(LogFailed):
        eng.append_events(event(1))  # logged, then the fsync fails: not acknowledged
    monkeypatch.setattr(walmod.os, "fsync", real)
    # fsync works again, but what the kernel dropped cannot be known: still refused
    with pytest.raises(LogFailed, match="accepts no more writes"):
        eng.append_events(event(2))
    with pytest.raises(LogFailed):
        eng.create_segment("s", "view()")
    assert eng.count("view()") >= 1  # reads keep working
    eng.close()
    # restart recovers from what is on disk
    assert events_after_open(tmp_path) in (1, 2)


def test_failed_write_changes_nothing_and_writes_work_again(tmp_path, monkeypatch):
    eng = Engine.open(tmp_path)
    eng.append_events(event(0))
    size = eng._wal._size
    real = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data[:10]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(walmod.os, "write", half_then_full)
    from segd.errors import StorageFull

    with pytest.raises(StorageFull):
        eng.append_events(event(1))
    monkeypatch.setattr(walmod.os, "write", real)
    assert eng._wal._size == size == only_segment(tmp_path).stat().st_size
    assert eng.stats()["events"] == 1
    eng.append_events(event(2))
    eng.close()
    assert events_after_open(tmp_path) == 2


def test_second_open_of_a_directory_is_refused_with_the_holder(tmp_path):
    import subprocess
    import sys

    eng = Engine.open(tmp_path)
    code = (
        "import sys\n"
        "from segd import Engine\n"
        "from segd.errors import DataDirLocked\n"
        "try:\n"
        f"    Engine.open({str(tmp_path)!r})\n"
        "except DataDirLocked as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3, out.stderr
    assert "in use by another segd process" in out.stdout
    assert f"pid {os.getpid()}" in out.stdout
    eng.close()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_closed_engine_refuses_writes_but_reads(tmp_path):
    eng = Engine.open(tmp_path)
    eng.append_events(event(0))
    eng.close()
    eng.close()  # twice is fine
    with pytest.raises(StorageError):
        eng.append_events(event(1))
    assert eng.count("view()") == 1


def test_in_memory_engine_has_no_snapshot(tmp_path):
    from segd.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition):
        Engine().snapshot()


def test_a_record_kind_this_version_does_not_know_stops_startup(tmp_path):
    import msgpack

    write_engine(tmp_path, 2)
    wal = walmod.Wal(tmp_path / "wal", next_seq=3)
    wal.append(msgpack.packb({"k": "identity_merge", "into": "a", "from": ["b"]}))
    wal.close()
    with pytest.raises(CorruptLog, match="unknown record kind 'identity_merge'") as err:
        Engine.open(tmp_path)
    assert err.value.file.endswith(".wal") and err.value.offset >= 16
