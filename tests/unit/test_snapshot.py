"""Snapshots (segd.snapshot): a restored engine answers like the original, keeps working
after writes, and a damaged snapshot is refused naming the file and passed over.

Real files in a temporary directory, the real fork of the background writer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segd.snapshot as snapshot
from segd import Engine
from segd.bench import queries as bench_queries
from segd.datagen import generate
from segd.errors import SegdError
from segd.native.idmap import IdMap
from segd.native.postings import Postings
from segd.snapshot import (
    MANIFEST,
    PACK,
    STATE,
    CorruptSnapshot,
    SnapshotError,
    latest_valid_snapshot,
    list_snapshots,
    prune_snapshots,
    read_snapshot,
    verify_snapshot,
    write_snapshot,
)
from tests.differential.test_engine_vs_duckdb import SAVED, _strategy

# Memory figures differ legitimately: a restored engine has no growth slack and builds
# its contact-major indexes on first use.
VOLATILE_STATS = {
    "memory_bytes",
    "bytes_per_contact",
    "bytes_per_event",
    "index_bytes_per_event",
    "index_bytes",
    "uptime_s",
}


def _stable_stats(eng: Engine) -> dict:
    return {k: v for k, v in eng.stats().items() if k not in VOLATILE_STATS}


def _build(n: int = 400, seed: int = 11) -> tuple:
    data = generate(n, seed=seed)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    # Half the events first, the older half late (the merge path), as in differential.
    half = data.events.num_rows // 2
    eng.load_events(data.events.slice(half))
    eng.append_events(data.events.slice(0, half))
    for name, ast in SAVED.items():
        eng.create_segment(name, ast)
    eng.create_segment("frozen_men", 'gender = "m" and rating >= 5', static=True)
    for q in bench_queries.suite(data.now):
        for name, dsl in q.segments:
            if name not in {s.name for s in eng.list_segments()}:
                eng.create_segment(name, dsl)
    # Build the lazy indexes the snapshot saves when present (category bitmaps).
    eng.count('city = "Kazan" or gender = "f"', now=data.now)
    return data, eng


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data, eng = _build()
    directory = tmp_path_factory.mktemp("snapshots")
    with pytest.MonkeyPatch.context() as mp:
        # At this small scale most arrays would be packed: map them, as at real scale.
        mp.setattr(snapshot, "MMAP_MIN_BYTES", 4096)
        info = write_snapshot(eng, directory, wal_seq=42, metadata={"shard": "s1"})
        state = read_snapshot(info.path)
    return data, eng, state.engine(), info, state


def test_state_and_metadata(world):
    data, eng, restored, info, state = world
    assert state.wal_seq == 42 == info.wal_seq
    assert state.metadata == {"shard": "s1"}
    assert info.bytes > 0 and info.files > 5
    assert info.pause_seconds < info.seconds
    assert _stable_stats(restored) == _stable_stats(eng)
    assert restored.stats()["segments"] == len(eng.list_segments())


def _mapped(arr: np.ndarray) -> bool:
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
    return False


def test_arrays_are_memory_mapped_not_parsed(world):
    data, eng, restored, info, state = world
    biggest = max(restored.store.logs.values(), key=lambda log: log.n)
    assert _mapped(biggest.cid) and _mapped(biggest.ts)
    assert not restored.store.contacts.ids.owns_memory()
    assert not biggest.postings["item"].owns_memory()


def test_saved_segments_survive(world):
    data, eng, restored, info, state = world
    for seg in eng.list_segments():
        got = restored.get_segment(seg.name)
        assert (got.ast, got.dsl, got.static, got.version) == (
            seg.ast,
            seg.dsl,
            seg.static,
            seg.version,
        )
        assert (got.created_ms, got.updated_ms) == (seg.created_ms, seg.updated_ms)
        assert got.members == seg.members
    frozen = restored.get_segment("frozen_men")
    assert frozen.static and len(frozen.members) > 0


def _runnable(now):
    """The bench suite's queries that run on these engines as they are: not skipped,
    and not the RFM cell, which needs an ``rfm_compute`` first (the bench runs one in
    its timed call; RFM state round trips are tested in test_rfm)."""
    return [q for q in bench_queries.suite(now) if not q.skip and not q.rfm_as_of_now]


def test_bench_queries_agree(world):
    data, eng, restored, info, state = world
    for q in _runnable(data.now):
        want = eng.segment(q.dsl, now=data.now, cache=False)
        got = restored.segment(q.dsl, now=data.now, cache=False)
        assert got.bitmap == want.bitmap, q.name


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(draw=st.data())
def test_random_segments_agree(world, draw):
    data, eng, restored, info, state = world
    ast = draw.draw(_strategy(data))
    want = eng.segment(ast, now=data.now, cache=False).bitmap
    assert restored.segment(ast, now=data.now, cache=False).bitmap == want, ast


def test_profiles_and_explain_agree(world):
    data, eng, restored, info, state = world
    cid = data.contacts["customer_id"][7].as_py()
    q = 'gender = "m" and order() in last 90 days'
    want = eng.explain(q, cid, now=data.now)
    got = restored.explain(q, cid, now=data.now)
    assert (got.attributes, got.member, got.count) == (
        want.attributes,
        want.member,
        want.count,
    )


# -- writes after a restore ------------------------------------------------------------


def _writes(eng: Engine, data) -> None:
    """Upserts of old and new contacts and items, tail and late events, a new segment."""
    old_ids = data.contacts["customer_id"].to_pylist()[:5]
    eng.upsert_contacts(
        [
            {"customer_id": old_ids[0], "city": "Nowhere", "rating": 99, "tags": ["x"]},
            {"customer_id": old_ids[1], "gender": None, "email_subscribed": False},
            {"customer_id": "brand-new", "city": "Kazan", "rating": 3, "tags": ["vip"]},
        ]
    )
    eng.upsert_items([{"item_id": "new-item", "category": "Pets/Cats", "price": 10.0}])
    now = int(data.now.timestamp())
    events = data.events.slice(0, 50).to_pylist()
    for i, e in enumerate(events):  # late rows (old times) for existing contacts
        e["customer_id"] = old_ids[i % 5]
    events.append(
        {
            "customer_id": "brand-new",
            "type": "order",
            "ts": now - 60,
            "item_id": "new-item",
            "amount": 123.0,
            "order_id": "o-new",
        }
    )
    eng.append_events(events)
    eng.append_events(
        [
            {
                "customer_id": old_ids[2],
                "type": "view",
                "ts": now - 5,
                "item_id": "new-item",
            }
        ]
    )
    eng.create_segment("after", 'city = "Nowhere" or in segment "frozen_men"')


def test_writes_after_restore_match_the_original(tmp_path):
    data, eng = _build(300, seed=5)
    n_before = eng.store.n_contacts
    info = write_snapshot(eng, tmp_path, wal_seq=1, background=False)
    restored = read_snapshot(info.path).engine()
    _writes(eng, data)
    _writes(restored, data)
    assert _stable_stats(restored) == _stable_stats(eng)
    queries = [q.dsl for q in _runnable(data.now)] + [
        'city = "Nowhere"',
        "order() in last 1 days",
        'view(item = "new-item") in last 1 days',
        'tags contains_any ("vip", "x")',
        "rating >= 99",
        "gender is null",
        'in segment "after"',
        "orders_count >= 1 and revenue >= 123",
    ]
    for q in queries:
        want = eng.segment(q, now=data.now, cache=False).bitmap
        assert restored.segment(q, now=data.now, cache=False).bitmap == want, q
    # The writes went to copies: the snapshot's files are untouched and still verify.
    verify_snapshot(info.path)
    assert read_snapshot(info.path).store.n_contacts == n_before < eng.store.n_contacts


def test_snapshot_of_a_restored_engine(tmp_path):
    data, eng = _build(200, seed=8)
    first = write_snapshot(eng, tmp_path / "a", wal_seq=3)
    restored = read_snapshot(first.path).engine()
    _writes(restored, data)
    second = write_snapshot(restored, tmp_path / "b", wal_seq=9)
    again = read_snapshot(second.path).engine()
    assert _stable_stats(again) == _stable_stats(restored)
    for q in _runnable(data.now):
        assert (
            again.segment(q.dsl, now=data.now, cache=False).bitmap
            == restored.segment(q.dsl, now=data.now, cache=False).bitmap
        )


def test_empty_engine_round_trips(tmp_path):
    info = write_snapshot(Engine(), tmp_path, wal_seq=0)
    eng = read_snapshot(info.path).engine()
    assert eng.stats()["contacts"] == 0
    eng.upsert_contact("a", city="X")
    eng.append_events([{"customer_id": "a", "type": "view", "ts": 1_700_000_000}])
    assert eng.count('city = "X" and view() in last 1000 days', now=1_700_000_100) == 1


# -- random datasets (hypothesis) ------------------------------------------------------

contact_rows = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from([f"c{i}" for i in range(12)]),
            "city": st.one_of(st.none(), st.sampled_from(["A", "B", "C"])),
            "rating": st.one_of(st.none(), st.integers(-3, 3)),
            "vip": st.one_of(st.none(), st.booleans()),
            "tags": st.one_of(st.none(), st.lists(st.sampled_from(["t1", "t2", "t3"]))),
        }
    ),
    min_size=1,
    max_size=15,
)
event_rows = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from([f"c{i}" for i in range(15)]),
            "type": st.sampled_from(["view", "order", "custom_event"]),
            "ts": st.integers(1_700_000_000, 1_700_100_000),
            "item_id": st.one_of(st.none(), st.sampled_from(["i1", "i2", "i3"])),
            "channel": st.one_of(st.none(), st.sampled_from(["email", "sms"])),
        }
    ),
    max_size=40,
)
SCHEMA = {"city": "category", "rating": "int", "vip": "bool", "tags": "tags"}
ATTR_QUERIES = [
    'city = "A"',
    "city is null",
    "rating >= 0",
    "rating is null",
    "vip = true",
    'tags contains_any ("t1", "t3")',
    "tags is null",
    'view(item = "i1") in last 200 days',
    'order(channel = "sms") count >= 2 in last 200 days',
    "custom_event() in last 200 days",
    "orders_count >= 1",
    "not view() in last 200 days",
]


@settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    contacts=contact_rows,
    batches=st.lists(event_rows, min_size=1, max_size=3),
    more=event_rows,
)
def test_random_datasets_round_trip(tmp_path_factory, contacts, batches, more):
    eng = Engine()
    eng.upsert_contacts(contacts, schema=SCHEMA)
    for batch in batches:
        if batch:
            eng.append_events(batch)
    directory = tmp_path_factory.mktemp("hyp")
    info = write_snapshot(eng, directory, wal_seq=7, background=False)
    restored = read_snapshot(info.path).engine()
    now = 1_700_200_000
    assert _stable_stats(restored) == _stable_stats(eng)
    for e in (eng, restored):  # the same writes on both
        if more:
            e.append_events(more)
        e.upsert_contacts(contacts[:3], schema=SCHEMA)
    assert _stable_stats(restored) == _stable_stats(eng)
    for q in ATTR_QUERIES:
        assert _answer(restored, q, now) == _answer(eng, q, now), q


def _answer(eng: Engine, query: str, now: int):
    """Members, or the error (an event type not seen yet is unknown on both sides)."""
    try:
        return eng.segment(query, now=now, cache=False).bitmap
    except SegdError as exc:
        return type(exc), str(exc)


# -- native borrow / export --------------------------------------------------------------


def test_idmap_from_arrays_borrows_then_copies_on_growth():
    m = IdMap()
    m.get_or_add([f"id{i}" for i in range(100)])
    arrays = m.to_arrays()
    snapshot_copy = {k: v.copy() for k, v in arrays.items()}
    r = IdMap.from_arrays(**arrays)
    assert not r.owns_memory()
    assert r.lookup(["id5", "nope"]).tolist() == [5, 0xFFFFFFFF]
    assert r.get_or_add([f"id{i}" for i in range(100, 400)]).tolist() == list(
        range(100, 400)
    )
    assert r.owns_memory()  # the table had to grow too
    assert r.to_arrow().to_pylist() == [f"id{i}" for i in range(400)]
    for k in ("data", "offsets", "tags"):
        assert np.array_equal(arrays[k], snapshot_copy[k]), k  # grown into copies


def test_idmap_from_arrays_rejects_bad_arrays():
    arrays = IdMap.from_arrow(["a", "b", "c"]).to_arrays()
    bad_table = arrays["table"].copy()
    bad_table[bad_table != 0xFFFFFFFF] = 1  # one code three times
    with pytest.raises(ValueError, match="table"):
        IdMap.from_arrays(arrays["data"], arrays["offsets"], arrays["tags"], bad_table)
    bad_offsets = arrays["offsets"].copy()
    bad_offsets[1] = 99
    with pytest.raises(ValueError, match="offsets"):
        IdMap.from_arrays(arrays["data"], bad_offsets, arrays["tags"], arrays["table"])
    with pytest.raises(ValueError, match="power of two"):
        IdMap.from_arrays(
            arrays["data"], arrays["offsets"], arrays["tags"], arrays["table"][:12]
        )


def test_postings_from_arrays_borrow_and_copy_on_growth():
    p = Postings()
    codes = np.array([0, 1, 0, 2, 2, 2, 0, 1, 5, 0], dtype=np.uint32)
    p.append_rows(np.arange(10, dtype=np.uint32), codes)
    rows = np.empty(p.postings, dtype=np.uint32)
    p.copy_rows_into(rows)
    saved = rows.copy()
    q = Postings.from_arrays(p.sizes(), rows)
    assert q.nbytes() == p.nbytes() and not q.owns_memory()
    assert q.rows_of(0).tolist() == [0, 2, 6, 9]
    q.append_rows(np.array([10], np.uint32), np.array([0], np.uint32))
    assert q.rows_of(0).tolist() == [0, 2, 6, 9, 10]
    assert np.array_equal(rows, saved)  # the list grew into its own memory
    q.remap_and_insert(
        3,
        np.arange(4, 12, dtype=np.uint32),
        np.array([3], np.uint32),
        np.array([2], np.uint32),
    )
    assert q.rows_of(2).tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="ascending"):
        Postings.from_arrays(p.sizes(), saved[::-1].copy())
    with pytest.raises(ValueError, match="add up"):
        Postings.from_arrays(p.sizes(), saved[:-1].copy())


# -- corruption, fallback, listing -------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_pair(tmp_path_factory):
    """Two snapshots (wal_seq 10, then 11) of one engine, written once per module."""
    directory = tmp_path_factory.mktemp("pair")
    with pytest.MonkeyPatch.context() as mp:
        # Small arrays get files of their own too, so every kind of file exists.
        mp.setattr(snapshot, "MMAP_MIN_BYTES", 256)
        data, eng = _build(150, seed=2)
        write_snapshot(eng, directory, wal_seq=10)
        eng.upsert_contact("late-comer", city="Z")
        write_snapshot(eng, directory, wal_seq=11)
    return directory


@pytest.fixture
def two_snapshots(pristine_pair, tmp_path, monkeypatch):
    """A fresh copy of the pair, free to damage: (directory, old, new)."""
    monkeypatch.setattr(snapshot, "MMAP_MIN_BYTES", 256)
    directory = tmp_path / "snapshots"
    shutil.copytree(pristine_pair, directory)
    old, new = list_snapshots(directory)
    return directory, old, new


def _flip(path: Path, offset: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    i = len(raw) // 2 if offset is None else offset
    raw[i] ^= 0x10
    path.write_bytes(bytes(raw))


def _kinds(snapshot: Path) -> dict[str, str]:
    """One file of each kind in a snapshot."""
    names = sorted(p.name for p in snapshot.iterdir())
    big = [n for n in names if n.endswith(".npy")]
    return {
        "manifest": MANIFEST,
        "state": STATE,
        "pack": PACK,
        "column": next(n for n in big if n.startswith("log") and ".d" not in n),
        "postings": next(n for n in big if n.endswith(".postings.rows.npy")),
        "idmap": next(n for n in big if n.startswith("contacts.ids.")),
        "roaring": next(n for n in names if n.endswith(".roaring")),
    }


@pytest.mark.parametrize(
    "kind", ["manifest", "state", "pack", "column", "postings", "idmap", "roaring"]
)
def test_flipped_bit_is_named_and_the_previous_snapshot_used(two_snapshots, kind):
    directory, old, new = two_snapshots
    fname = _kinds(new.path)[kind]
    _flip(new.path / fname)
    with pytest.raises(CorruptSnapshot) as err:
        read_snapshot(new.path)
    assert err.value.file == fname
    assert err.value.path == new.path
    assert fname in str(err.value)
    state, skipped = latest_valid_snapshot(directory)
    assert state is not None and state.path == old.path and state.wal_seq == 10
    assert len(skipped) == 1 and fname in skipped[0]


def test_flipped_header_byte_of_an_array(two_snapshots):
    directory, old, new = two_snapshots
    fname = _kinds(new.path)["column"]
    _flip(new.path / fname, offset=20)
    with pytest.raises(CorruptSnapshot, match="checksum") as err:
        read_snapshot(new.path)
    assert err.value.file == fname


def test_missing_and_truncated_files(two_snapshots):
    directory, old, new = two_snapshots
    kinds = _kinds(new.path)
    (new.path / kinds["postings"]).unlink()
    with pytest.raises(CorruptSnapshot, match="missing") as err:
        read_snapshot(new.path)
    assert err.value.file == kinds["postings"]
    with open(old.path / kinds["column"], "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptSnapshot, match="size"):
        read_snapshot(old.path)
    state, skipped = latest_valid_snapshot(directory)
    assert state is None and len(skipped) == 2


def test_missing_manifest(two_snapshots):
    directory, old, new = two_snapshots
    (new.path / MANIFEST).unlink()
    with pytest.raises(CorruptSnapshot, match="manifest is missing"):
        read_snapshot(new.path)
    state, skipped = latest_valid_snapshot(directory)
    assert state.path == old.path and "MANIFEST" in skipped[0]


def test_manifest_of_a_newer_format(two_snapshots):
    directory, old, new = two_snapshots
    outer = msgpack.unpackb((new.path / MANIFEST).read_bytes())
    body = msgpack.unpackb(outer["body"])
    body["format"] = 99
    import crc32c

    raw = msgpack.packb(body)
    (new.path / MANIFEST).write_bytes(
        msgpack.packb({"body": raw, "crc32c": crc32c.crc32c(raw)})
    )
    with pytest.raises(CorruptSnapshot, match="format version 99"):
        read_snapshot(new.path)


def test_list_and_prune(tmp_path):
    eng = Engine()
    eng.upsert_contact("a", city="X")
    infos = [write_snapshot(eng, tmp_path, wal_seq=s, keep=None) for s in (5, 3, 9)]
    (tmp_path / ".tmp-snapshot-leftover").mkdir()
    (tmp_path / "unrelated").mkdir()
    assert [r.wal_seq for r in list_snapshots(tmp_path)] == [3, 5, 9]
    removed = prune_snapshots(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == sorted(
        [infos[1].path.name, ".tmp-snapshot-leftover"]
    )
    assert [r.wal_seq for r in list_snapshots(tmp_path)] == [5, 9]
    assert (tmp_path / "unrelated").is_dir()
    write_snapshot(eng, tmp_path, wal_seq=12)  # keeps 2 by default
    assert [r.wal_seq for r in list_snapshots(tmp_path)] == [9, 12]
    assert list_snapshots(tmp_path / "none") == []
    assert latest_valid_snapshot(tmp_path / "none") == (None, [])


# -- the background writer -------------------------------------------------------------


def test_background_and_inline_writes_are_identical(tmp_path):
    data, eng = _build(150, seed=4)
    a = write_snapshot(eng, tmp_path / "a", wal_seq=1, background=True)
    b = write_snapshot(eng, tmp_path / "b", wal_seq=1, background=False)
    files_a = sorted(p.name for p in a.path.iterdir())
    assert files_a == sorted(p.name for p in b.path.iterdir())
    for name in files_a:
        if name != MANIFEST:  # the manifest holds the creation time
            assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name


def test_wal_seq_callable_is_read_while_the_engine_is_held(tmp_path):
    eng = Engine()
    seen = []

    def seq():
        seen.append(eng._lock._readers)
        return 77

    info = write_snapshot(eng, tmp_path, wal_seq=seq)
    assert info.wal_seq == 77 and seen == [1]


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_write_leaves_nothing(tmp_path, background):
    eng = Engine()
    eng.upsert_contact("a", city="X")
    with pytest.raises(
        SnapshotError, match="can not serialize|cannot serialize|object"
    ):
        write_snapshot(
            eng, tmp_path, wal_seq=1, metadata={"bad": object()}, background=background
        )
    assert list(tmp_path.iterdir()) == []
    # the engine is not held afterwards
    eng.upsert_contact("b", city="Y")
    assert eng.count('city = "Y"') == 1


def test_a_killed_writer_child_is_reported(tmp_path, monkeypatch):
    def die(*args, **kwargs):
        os._exit(9)

    monkeypatch.setattr(snapshot, "_write_files", die)
    with pytest.raises(SnapshotError, match="status 9"):
        write_snapshot(Engine(), tmp_path, wal_seq=1, background=True)
    assert list(tmp_path.iterdir()) == []
