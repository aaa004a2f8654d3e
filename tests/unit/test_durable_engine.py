"""Engine.open end to end on real files: every mutation kind survives a restart, bulk
loads are all-or-nothing across a crash, idempotency keys, snapshots + the log after
them, corrupt and missing snapshot files (docs/storage.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from segd import Engine, mutations
from segd import wal as walmod
from segd.errors import CorruptLog

BASE_TS = 1_735_689_600
QUERIES = [
    'city = "Kazan"',
    "age >= 30",
    'tags contains "x"',
    "view()",
    "order(amount >= 5)",
    'in segment "kz"',
    'in segment "st"',
]


def populate(eng: Engine) -> None:
    eng.upsert_contacts(
        [
            {"customer_id": "a", "city": "Kazan", "age": 30, "tags": ["x"]},
            {"customer_id": "b", "city": "Omsk", "age": 41, "tags": ["x", "y"]},
            {"customer_id": "c", "city": "Kazan", "age": 22},
        ]
    )
    eng.upsert_items([{"item_id": "i1", "brand": "b1", "price": 3.5}])
    eng.append_events(
        [
            {"customer_id": "a", "ts": BASE_TS, "type": "view", "item_id": "i1"},
            {"customer_id": "b", "ts": BASE_TS + 1, "type": "order", "amount": 7.0},
            {"customer_id": "d", "ts": BASE_TS + 2, "type": "search", "phrase": "cat"},
        ]
    )
    eng.create_segment("kz", 'city = "Kazan"')
    eng.create_segment("st", 'city = "Omsk"', static=True)
    eng.update_segment("kz", 'city = "Kazan" or age >= 40')
    eng.create_segment("tmp", "view()")
    eng.delete_segment("tmp")
    eng.upsert_contact(
        "c", city="Omsk"
    )  # changes a dynamic segment, not the static one
    eng.load_events(
        [
            {"customer_id": f"z{i}", "ts": BASE_TS + i, "type": "view"}
            for i in range(25)
        ],
        rows_per_chunk=7,
    )


def fingerprint(eng: Engine) -> dict:
    s = eng.stats()
    return {
        "contacts": s["contacts"],
        "events": s["events"],
        "items": s["items"],
        "types": s["event_types"],
        "segments": [(g.name, g.version, g.dsl, g.static) for g in eng.list_segments()],
        "counts": {q: eng.count(q, now=BASE_TS + 86_400) for q in QUERIES},
    }


def test_every_mutation_kind_survives_a_restart(tmp_path):
    memory = Engine()
    populate(memory)
    with Engine.open(tmp_path) as eng:
        populate(eng)
        live = fingerprint(eng)
        created = {g.name: g.created_ms for g in eng.list_segments()}
    assert live == fingerprint(memory)
    with Engine.open(tmp_path) as again:
        assert fingerprint(again) == live
        assert {g.name: g.created_ms for g in again.list_segments()} == created


def test_restart_after_snapshot_and_more_log(tmp_path):
    with Engine.open(tmp_path) as eng:
        populate(eng)
        info = eng.snapshot()
        assert info.wal_seq == eng._wal.last_seq
        eng.append_events([{"customer_id": "late", "ts": BASE_TS, "type": "view"}])
        eng.create_segment("late", "view()")
        live = fingerprint(eng)
    with Engine.open(tmp_path) as again:
        assert again.recovery["snapshot_seq"] == info.wal_seq
        assert again.recovery["replayed_records"] == 2
        assert fingerprint(again) == live
        again.snapshot()
    with Engine.open(tmp_path) as third:  # from the second snapshot, log empty
        assert third.recovery["replayed_records"] == 0
        assert fingerprint(third) == live


def _two_snapshots(path: Path) -> tuple[dict, list[Path]]:
    with Engine.open(path) as eng:
        populate(eng)
        eng.snapshot()
        eng.append_events([{"customer_id": "x1", "ts": BASE_TS, "type": "view"}])
        second = eng.snapshot()
        eng.append_events([{"customer_id": "x2", "ts": BASE_TS, "type": "view"}])
        live = fingerprint(eng)
    snaps = sorted((path / "snapshots").iterdir())
    assert snaps[-1] == second.path
    return live, snaps


@pytest.mark.parametrize("damage", ["flipped bit", "missing manifest", "missing file"])
def test_corrupt_newest_snapshot_falls_back_to_the_previous_and_longer_log(
    tmp_path, damage, caplog
):
    live, snaps = _two_snapshots(tmp_path)
    newest = snaps[-1]
    if damage == "missing manifest":
        (newest / "MANIFEST").unlink()
    else:
        victim = max(
            (p for p in newest.iterdir() if p.name != "MANIFEST"),
            key=lambda p: p.stat().st_size,
        )
        if damage == "missing file":
            victim.unlink()
        else:
            data = bytearray(victim.read_bytes())
            data[len(data) // 2] ^= 0x04
            victim.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="segd.storage"):
        with Engine.open(tmp_path) as eng:
            assert fingerprint(eng) == live
            assert eng.recovery["snapshot_seq"] < int(newest.name.split("-")[1])
    skipped = [r for r in caplog.records if "snapshot skipped" in r.getMessage()]
    assert len(skipped) == 1 and str(newest) in skipped[0].getMessage()


def test_snapshot_older_than_the_first_log_segment_stops_startup(tmp_path):
    with Engine.open(tmp_path, segment_bytes=1_500) as eng:
        populate(eng)
        first = eng.snapshot()
        for i in range(10):
            eng.append_events([{"customer_id": f"x{i}", "ts": BASE_TS, "type": "view"}])
        second = eng.snapshot()
        eng.append_events([{"customer_id": "y", "ts": BASE_TS, "type": "view"}])
    segments = walmod.segment_files(tmp_path / "wal")
    assert walmod.first_seq_of(segments[0]) == first.wal_seq + 1  # kept for fallback
    shutil.rmtree(second.path)  # only the older snapshot is left ...
    segments[0].unlink()  # ... and the start of the log it needs is gone
    with pytest.raises(CorruptLog, match="older than the oldest log segment"):
        Engine.open(tmp_path)


def test_bulk_load_cut_by_a_crash_is_wholly_absent(tmp_path):
    """Chunk records without their commit (the process died mid-load) are ignored."""
    with Engine.open(tmp_path) as eng:
        eng.append_events([{"customer_id": "a", "ts": BASE_TS, "type": "view"}])
        eng.load_events(
            [
                {"customer_id": f"z{i}", "ts": BASE_TS + i, "type": "view"}
                for i in range(20)
            ],
            rows_per_chunk=6,
        )
    seg = walmod.segment_files(tmp_path / "wal")[-1]
    kinds = []
    for _, payload in walmod.scan(tmp_path / "wal"):
        kinds.append(type(mutations.decode(bytes(payload))).__name__)
    assert kinds == ["EventsAppended", *["LoadChunk"] * 4, "LoadCommitted"]
    # cut the commit off: as if the process died before writing it
    data = seg.read_bytes()
    spans = []
    off = walmod.FILE_HEADER.size
    while off < len(data):
        end = (
            off
            + walmod.RECORD_HEADER.size
            + int.from_bytes(data[off : off + 4], "little")
        )
        spans.append((off, end))
        off = end
    os.truncate(seg, spans[-1][0])
    with Engine.open(tmp_path) as eng:
        assert eng.stats()["events"] == 1
        assert eng.stats()["contacts"] == 1


def test_bad_chunk_aborts_the_load_and_replay_ignores_it(tmp_path):
    from segd.errors import InvalidInput

    rows = [
        {"customer_id": f"z{i}", "ts": BASE_TS + i, "type": "view"} for i in range(20)
    ]
    table = pa.Table.from_pylist(rows)
    bad = table.set_column(
        2, "type", pa.array(["view"] * 15 + ["Bad Type"] + ["view"] * 4)
    )
    with Engine.open(tmp_path) as eng:
        with pytest.raises(InvalidInput, match=r"events\[15\]\.type"):
            eng.load_events(bad, rows_per_chunk=6)
        assert eng.stats()["events"] == 0
        eng.load_events(table, rows_per_chunk=6)
    with Engine.open(tmp_path) as eng:
        assert eng.stats()["events"] == 20


def test_idempotency_keys_survive_restart_and_snapshot(tmp_path):
    batch = [{"customer_id": "a", "ts": BASE_TS, "type": "view"}]
    with Engine.open(tmp_path) as eng:
        first = eng.append_events(batch, idempotency_key="k1", count_in_sequence=True)
        again = eng.append_events(batch, idempotency_key="k1", count_in_sequence=True)
        assert not first.duplicate and again.duplicate
        assert (again.rows, again.sequence) == (first.rows, first.sequence) == (1, 1)
        eng.upsert_contacts([{"customer_id": "a", "n": 1}], idempotency_key="c1")
        assert eng.upsert_contacts(
            [{"customer_id": "a", "n": 2}], idempotency_key="c1"
        ).duplicate
        assert eng.stats()["events"] == 1
    with Engine.open(tmp_path) as eng:
        assert eng.append_events(batch, idempotency_key="k1").duplicate
        assert eng.count("n = 1") == 1
        eng.snapshot()
    with Engine.open(tmp_path) as eng:
        assert eng.recovery["replayed_records"] == 0
        assert eng.append_events(batch, idempotency_key="k1").duplicate
        assert eng.events_sequence == 1
        assert eng.stats()["events"] == 1
        assert (
            eng.append_events(batch, idempotency_key="k2").sequence == 1
        )  # not counted


def test_idempotency_key_is_checked(tmp_path):
    from segd.errors import InvalidInput

    with pytest.raises(InvalidInput, match="idempotency_key"):
        Engine().append_events([], idempotency_key="x" * 300)


def test_interval_and_off_engines_recover_after_clean_close(tmp_path):
    for mode in ("interval", "off"):
        d = tmp_path / mode
        with Engine.open(d, fsync=mode, fsync_interval_ms=5) as eng:
            populate(eng)
            live = fingerprint(eng)
        with Engine.open(d) as eng:
            assert fingerprint(eng) == live


def test_idempotency_keys_are_kept_24h_or_the_last_million(monkeypatch):
    from segd import durability

    monkeypatch.setattr(durability, "KEY_MIN_COUNT", 3)
    table = durability.IdempotencyTable()
    now = 1_000_000.0
    monkeypatch.setattr(durability.time, "time", lambda: now)
    for i in range(5):  # all young: kept although over the count
        table.put(f"k{i}", {"rows": i}, i, at=now - 10)
    assert len(table) == 5
    table.put("old", {"rows": 9}, 9, at=now - 25 * 3600)  # the newest, though old
    assert table.get("old") == ({"rows": 9}, 9)
    # the oldest entries are dropped only while they are both old and beyond the count
    stale = durability.IdempotencyTable()
    for i in range(5):
        stale.put(f"s{i}", {}, i, at=now - 30 * 3600)
    assert len(stale) == 3 and stale.get("s0") is None and stale.get("s4") is not None
    state = stale.to_state()
    restored = durability.IdempotencyTable()
    restored.load_state(state)
    assert [k for k, _, _ in restored.to_state()] == ["s2", "s3", "s4"]
