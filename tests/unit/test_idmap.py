"""Unit tests of native.idmap.IdMap: codes, input kinds, nulls, decode, round trips, memory."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pyarrow as pa
import pytest

from segd.native.idmap import IdMap

NO_CODE = 0xFFFFFFFF


def test_codes_follow_first_appearance() -> None:
    m = IdMap()
    assert len(m) == 0
    codes = m.get_or_add(["b", "a", "b", "c", "a"])
    assert codes.dtype == np.uint32
    assert codes.tolist() == [0, 1, 0, 2, 1]
    assert len(m) == 3
    assert m.get_or_add(["c", "d"]).tolist() == [2, 3]
    assert m.to_arrow().to_pylist() == ["b", "a", "c", "d"]


def test_lookup_never_adds_and_marks_unknown() -> None:
    m = IdMap()
    m.get_or_add(["x", "y"])
    assert m.lookup(["y", "nope", "x", ""]).tolist() == [1, NO_CODE, 0, NO_CODE]
    assert len(m) == 2
    assert m.lookup_one("x") == 0
    assert m.lookup_one("nope") == -1


def test_scalar_methods() -> None:
    m = IdMap()
    assert m.get_or_add_one("ä€😀") == 0
    assert m.get_or_add_one("") == 1
    assert m.get_or_add_one("ä€😀") == 0
    assert m.decode_one(0) == "ä€😀"
    assert m.decode_one(1) == ""
    assert m.lookup(["", "ä€😀"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="code 2 out of range"):
        m.decode_one(2)
    with pytest.raises(ValueError, match="out of range"):
        m.decode_one(-1)


def test_empty_and_unicode_strings_are_distinct() -> None:
    values = ["", "a", "a\x00", "\x00", "é", "e\u0301", "日本", "😀" * 40, "a" * 1000]
    m = IdMap()
    codes = m.get_or_add(values)
    assert codes.tolist() == list(range(len(values)))
    assert m.decode(codes).to_pylist() == values


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string(), pa.string_view()])
def test_arrow_types(typ: pa.DataType) -> None:
    values = ["p", "q", "", "p", "rr"]
    m = IdMap()
    assert m.get_or_add(pa.array(values, type=typ)).tolist() == [0, 1, 2, 0, 3]
    assert m.lookup(pa.array(["rr", "zz"], type=typ)).tolist() == [3, NO_CODE]


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_sliced_array_honours_offset(typ: pa.DataType) -> None:
    arr = pa.array(["skip", None, "a", "bb", None, "a", "tail"], type=typ)
    sliced = arr.slice(2, 4)  # ["a", "bb", None, "a"]
    assert sliced.offset == 2
    m = IdMap()
    assert m.lookup(sliced).tolist() == [NO_CODE] * 4
    m.get_or_add(["bb"])
    assert m.lookup(sliced).tolist() == [NO_CODE, 0, NO_CODE, NO_CODE]
    m.get_or_add(arr.slice(2, 2))
    assert m.lookup(sliced).tolist() == [1, 0, NO_CODE, 1]


def test_chunked_array() -> None:
    chunked = pa.chunked_array(
        [pa.array(["a", "b"]), pa.array([], pa.string()), pa.array(["b", "c", "a"])]
    )
    m = IdMap()
    assert m.get_or_add(chunked).tolist() == [0, 1, 1, 2, 0]
    unknowns = pa.chunked_array([["c"], [None, "zz"]])
    assert m.lookup(unknowns).tolist() == [2, NO_CODE, NO_CODE]
    assert m.get_or_add(pa.chunked_array([], pa.string())).tolist() == []


def test_null_in_get_or_add_adds_nothing() -> None:
    m = IdMap()
    m.get_or_add(["keep"])
    with pytest.raises(ValueError, match=r"^null at position 3$"):
        m.get_or_add(["new1", "keep", "new2", None, "new3"])
    assert len(m) == 1
    chunked = pa.chunked_array([pa.array(["n1", "n2"]), pa.array(["n3", None])])
    with pytest.raises(ValueError, match=r"^null at position 3$"):
        m.get_or_add(chunked)
    # ["x", None], whose validity bits start at bit 1 of the bitmap.
    sliced = pa.array([None, "x", None]).slice(1)
    with pytest.raises(ValueError, match=r"^null at position 1$"):
        m.get_or_add(sliced)
    assert m.to_arrow().to_pylist() == ["keep"]


def test_lookup_nulls() -> None:
    m = IdMap()
    m.get_or_add([""])
    # A null's slot in the offsets is empty, like "": it must still come back as NO_CODE.
    assert m.lookup(pa.array(["", None, ""])).tolist() == [0, NO_CODE, 0]


def test_input_type_errors() -> None:
    m = IdMap()
    with pytest.raises(TypeError, match="expected string or large_string"):
        m.get_or_add(pa.array([1, 2]))
    with pytest.raises(TypeError, match="got set"):
        m.lookup({"a"})
    with pytest.raises(TypeError):
        m.get_or_add([1, 2])
    assert len(m) == 0


def test_decode_nulls_and_errors() -> None:
    m = IdMap()
    m.get_or_add(["a", "b"])
    out = m.decode(np.array([1, NO_CODE, 0, 1], dtype=np.uint32))
    assert isinstance(out, pa.LargeStringArray)
    assert out.to_pylist() == ["b", None, "a", "b"]
    assert out.null_count == 1
    out.validate(full=True)
    assert m.decode(np.array([], dtype=np.uint32)).to_pylist() == []
    with pytest.raises(ValueError, match="code 2 at position 1 out of range"):
        m.decode(np.array([0, 2], dtype=np.uint32))
    with pytest.raises(ValueError):
        m.decode(np.array([0, 1], dtype=np.int64))  # dtype must be uint32


def test_decode_accepts_read_only_codes() -> None:
    m = IdMap()
    m.get_or_add(["a", "b", "c"])
    codes = np.frombuffer(np.array([2, 0], dtype=np.uint32).tobytes(), dtype=np.uint32)
    assert not codes.flags.writeable
    assert m.decode(codes).to_pylist() == ["c", "a"]


def test_arrow_round_trip_and_pickle() -> None:
    m = IdMap()
    values = [f"id{i}" for i in range(1000)] + ["", "ß"]
    m.get_or_add(values)
    arr = m.to_arrow()
    assert isinstance(arr, pa.LargeStringArray)
    arr.validate(full=True)
    m2 = IdMap.from_arrow(arr)
    assert len(m2) == len(values)
    assert m2.lookup(values).tolist() == list(range(len(values)))
    m3 = pickle.loads(pickle.dumps(m))
    assert m3.to_arrow().equals(arr)
    assert m3.get_or_add_one("new") == len(values)


def test_to_arrow_is_a_copy() -> None:
    m = IdMap()
    m.get_or_add(["a"])
    arr = m.to_arrow()
    m.get_or_add([f"x{i}" for i in range(10_000)])  # reallocates the buffers
    assert arr.to_pylist() == ["a"]


def test_from_arrow_rejects_duplicates_and_nulls() -> None:
    with pytest.raises(ValueError, match="duplicate string at position 2"):
        IdMap.from_arrow(pa.array(["a", "b", "a"]))
    with pytest.raises(ValueError, match="null at position 1"):
        IdMap.from_arrow(pa.array(["a", None]))


def test_capacity_hint() -> None:
    with pytest.raises(ValueError, match="capacity_hint"):
        IdMap(-1)
    m = IdMap(1000)
    before = m.nbytes()
    m.get_or_add([f"{i:09d}" for i in range(1000)])
    assert len(m) == 1000
    assert m.nbytes() - before == 9000 - 64  # only the string bytes had to grow


def test_large_batch_matches_dict_and_memory_budget() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    values = [f"{v:09d}" for v in rng.integers(0, 150_000, n)]
    model: dict[str, int] = {}
    expected = [model.setdefault(v, len(model)) for v in values]
    m = IdMap()
    codes = m.get_or_add(pa.array(values))
    assert codes.tolist() == expected
    assert len(m) == len(model)
    # 9 bytes + 8 (offset) + 4 (tag) + table (<= 16 at load 0.25) + growth slack (1.5x).
    assert m.nbytes() / len(m) < 50
    perm = rng.permutation(n)
    shuffled = [values[i] for i in perm]
    assert m.lookup(shuffled).tolist() == [expected[i] for i in perm]
    assert m.decode(codes).to_pylist() == values


def test_bulk_load_of_distinct_ids_has_no_slack() -> None:
    n = 100_000
    m = IdMap()
    m.get_or_add(pa.array([f"{i:09d}" for i in range(n)]))
    # data 9 + offsets 8 + tags 4 exactly, table 2^18 slots * 4 bytes.
    assert m.nbytes() == n * 9 + (n + 1) * 8 + n * 4 + (1 << 18) * 4


def test_small_batches_into_a_full_map_grow_it_geometrically() -> None:
    """A live batch of new ids into a map a bulk load left without slack grows it by
    at least 1/8, so the next batches add without copying the map again."""
    n = 100_000
    m = IdMap()
    m.get_or_add(pa.array([f"{i:09d}" for i in range(n)]))
    full = m.nbytes()
    m.get_or_add(pa.array([f"new-a{i}" for i in range(100)]))
    grown = m.nbytes()
    assert grown - full >= (n // 8) * (8 + 4)  # offsets + tags of >= n/8 more codes
    for b in range(10):
        m.get_or_add(pa.array([f"new-b{b}-{i}" for i in range(100)]))
    assert m.nbytes() == grown
    assert len(m) == n + 1_100


def test_concurrent_writers_and_readers_stay_consistent() -> None:
    m = IdMap()
    batches = [[f"t{t}-{i % 3000}" for i in range(20_000)] for t in range(4)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            results[t] = m.get_or_add(batches[t] + batches[(t + 1) % 4])
            m.lookup(batches[(t + 2) % 4])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(m) == 4 * 3000
    for t in range(4):
        assert m.decode(results[t]).to_pylist() == batches[t] + batches[(t + 1) % 4]
    assert sorted(m.to_arrow().to_pylist()) == sorted({s for b in batches for s in b})


def test_take_from_moves_every_entry_and_leaves_the_other_empty() -> None:
    staged = IdMap(capacity_hint=100)
    staged.get_or_add([f"id{i}" for i in range(1000)])
    target = IdMap()
    target.take_from(staged)
    assert len(target) == 1000 and len(staged) == 0
    assert target.lookup([f"id{i}" for i in range(1000)]).tolist() == list(range(1000))
    assert target.get_or_add(["new", "id5"]).tolist() == [1000, 5]
    # the emptied map works as a fresh one
    assert staged.get_or_add(["b", "a", "b"]).tolist() == [0, 1, 0]
    assert staged.lookup(["id5"]).tolist() == [NO_CODE]


def test_take_from_needs_an_empty_map_and_changes_nothing_otherwise() -> None:
    target, other = IdMap(), IdMap()
    target.get_or_add(["x"])
    other.get_or_add(["y", "z"])
    with pytest.raises(ValueError, match="empty"):
        target.take_from(other)
    assert target.to_arrow().to_pylist() == ["x"]
    assert other.to_arrow().to_pylist() == ["y", "z"]
    target.take_from(target)  # itself: a no-op
    assert len(target) == 1


def test_take_from_a_borrowed_map_keeps_its_arrays_alive() -> None:
    src = IdMap()
    src.get_or_add([f"s{i}" for i in range(50)])
    borrowed = IdMap.from_arrays(**src.to_arrays(copy=True))
    target = IdMap()
    target.take_from(borrowed)
    del borrowed
    assert target.decode(np.arange(50, dtype=np.uint32)).to_pylist() == [
        f"s{i}" for i in range(50)
    ]
    assert target.get_or_add(["s3", "t"]).tolist() == [3, 50]
