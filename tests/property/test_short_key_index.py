"""``ShortKeyIndex`` (issue 15, `load7`) against a plain ``IdMap``: the same codes call
after call, whatever the mix of short (inline) and long keys, repeats, empty strings,
string / large_string / chunked input, and the same error for a null."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native.idmap import IdMap, ShortKeyIndex

# Keys around the inline limit (11 UTF-8 bytes), multi-byte characters, the empty key.
KEY = st.one_of(
    st.text(alphabet="ab\u00e9\u4e2d", min_size=0, max_size=6),
    st.text(alphabet="xyz01", min_size=7, max_size=14),
    st.sampled_from(["", "a", "abcdefgh", "abcdefghi", "abcdefghijk", "abcdefghijkl"]),
)


def _arrow(keys: list[str], kind: int):
    if kind == 0:
        return keys
    if kind == 1:
        return pa.array(keys, pa.string())
    if kind == 2:
        return pa.array(keys, pa.large_string())
    half = len(keys) // 2  # chunked, and sliced (an offset into the buffers)
    padded = pa.array(["pad", *keys], pa.string()).slice(1)
    return pa.chunked_array([padded[:half], padded[half:]], pa.string())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(KEY, max_size=60), min_size=1, max_size=6),
    st.lists(st.integers(0, 3), min_size=6, max_size=6),
    st.integers(0, 40),
    st.booleans(),
)
def test_codes_equal_the_maps_own(batches, kinds, hint, reserve):
    plain = IdMap()
    ids = IdMap()
    index = ShortKeyIndex(ids, hint, reserve=reserve)
    for keys, kind in zip(batches, kinds, strict=False):
        want = plain.get_or_add(_arrow(keys, kind))
        got = index.get_or_add(_arrow(keys, kind))
        assert got.dtype == np.uint32
        assert got.tolist() == want.tolist()
    assert ids.to_arrow().to_pylist() == plain.to_arrow().to_pylist()
    short = {k for k in plain.to_arrow().to_pylist() if len(k.encode()) <= 11}
    assert len(index) <= len(short)
    if not index.bypass:
        assert len(index) == len(short)


@pytest.mark.parametrize("reserve", [False, True])
def test_growth_keeps_every_code(reserve):
    """Many keys through a small table (several 4x rehashes), asked again in another
    order: every code found in the index, none added twice."""
    ids = IdMap()
    index = ShortKeyIndex(ids, reserve=reserve)
    keys = [f"k{i}" for i in range(50_000)]
    first = index.get_or_add(pa.array(keys))
    assert first.tolist() == list(range(50_000))
    order = np.random.default_rng(0).permutation(50_000)
    again = index.get_or_add(pa.array([keys[i] for i in order]))
    assert again.tolist() == order.tolist()
    assert len(ids) == 50_000 and len(index) == 50_000
    assert index.nbytes() >= 16 * 50_000 * 4 // 3


def test_a_null_raises_like_the_map_and_adds_nothing():
    ids = IdMap()
    index = ShortKeyIndex(ids)
    index.get_or_add(["a"])
    with pytest.raises(ValueError, match="null at position 2"):
        index.get_or_add(pa.array(["b", "c", None]))
    assert ids.to_arrow().to_pylist() == ["a"]
    assert index.get_or_add(["b", "a"]).tolist() == [1, 0]


def test_mostly_long_keys_go_straight_to_the_map():
    ids = IdMap()
    index = ShortKeyIndex(ids)
    longs = [f"user-{i:020d}@example.com" for i in range(10)]
    assert index.get_or_add(longs).tolist() == list(range(10))
    assert index.bypass
    assert index.get_or_add(["x", longs[3]]).tolist() == [10, 3]
    assert IdMap().get_or_add(longs + ["x"]).tolist()[-1] == 10


def test_bad_hint():
    with pytest.raises(ValueError, match="capacity_hint"):
        ShortKeyIndex(IdMap(), -1)


def test_reserve_grows_each_array_at_least_twofold():
    """``IdMap.reserve``: room for what is asked, each array grown >= 2x when it grows
    (so batches of new ids reallocate O(log n) times), the table at most half full;
    the codes and strings are untouched."""
    ids = IdMap()
    ids.get_or_add(pa.array(["a", "bb"]))
    ids.reserve(100, 1_000)
    codes, nbytes, slots = ids.capacity()
    assert codes >= 100 and nbytes >= 1_000 and slots >= 200
    ids.reserve(codes + 1)
    assert ids.capacity()[0] >= 2 * codes
    ids.reserve(10)  # already room: nothing changes
    assert ids.capacity()[0] >= 2 * codes
    assert ids.get_or_add(pa.array(["bb", "c", "a"])).tolist() == [1, 2, 0]
    with pytest.raises(ValueError):
        ids.reserve(-1)
