"""Property tests of the native bridges: IdMap vs a dict model, bitsets vs BitMap(set).

Oracles are plain Python (pyroaring's habit): a ``dict`` for IdMap, ``BitMap(set)`` and a
``set`` for the bitset conversions. Profiles (example counts) come from conftest.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pyroaring import BitMap

from segd.native import NO_CODE  # noqa: E402
from segd.native.bitset import (
    bitmap_to_bitset,
    bitset_to_bitmap,
    bitset_to_cids,
    cids_to_bitmap,
    clear_cids,
    popcount,
    set_cids,
    words_for,
)
from segd.native.idmap import IdMap

# ==================================================================================
# IdMap
# ==================================================================================

# A small alphabet makes duplicates and shared prefixes common; a few fixed tricky values.
texts = st.one_of(
    st.text(alphabet="ab\x00é😀", max_size=6),
    st.sampled_from(["", "a", "A", "a ", "日本語", "x" * 70, "\ud7ff", "\U0010ffff"]),
)
batches = st.lists(texts, max_size=40)


@st.composite
def arrow_batch(draw, values: list[str | None]):
    """`values` as one of the accepted input kinds: list, string, large_string, chunked,
    or a slice (non-zero offset) of a bigger array."""
    kind = draw(st.sampled_from(["list", "string", "large", "chunked", "sliced"]))
    if kind == "list":
        return values
    typ = draw(st.sampled_from([pa.string(), pa.large_string()]))
    if kind in ("string", "large"):
        return pa.array(values, type=pa.string() if kind == "string" else typ)
    if kind == "chunked":
        cut = draw(st.integers(0, len(values)))
        return pa.chunked_array(
            [pa.array(values[:cut], type=typ), pa.array(values[cut:], type=typ)],
            type=typ,
        )
    before = draw(st.lists(st.one_of(st.none(), texts), max_size=5))
    after = draw(st.lists(st.one_of(st.none(), texts), max_size=5))
    arr = pa.array(before + values + after, type=typ)
    return arr.slice(len(before), len(values))


class IdMapMachine(RuleBasedStateMachine):
    """Every rule runs on IdMap and on the dict model; invariants compare them."""

    def __init__(self) -> None:
        super().__init__()
        self.m = IdMap()
        self.model: dict[str, int] = {}

    def _model_add(self, s: str) -> int:
        return self.model.setdefault(s, len(self.model))

    @rule(data=st.data(), values=batches)
    def get_or_add(self, data, values: list[str]) -> None:
        codes = self.m.get_or_add(data.draw(arrow_batch(values)))
        assert codes.dtype == np.uint32
        assert codes.tolist() == [self._model_add(s) for s in values]

    @rule(data=st.data(), values=batches, null_at=st.integers(0, 40))
    def get_or_add_with_null_adds_nothing(self, data, values, null_at: int) -> None:
        with_null: list[str | None] = list(values)
        pos = min(null_at, len(with_null))
        with_null.insert(pos, None)
        before = len(self.m)
        try:
            self.m.get_or_add(data.draw(arrow_batch(with_null)))
        except ValueError as e:
            assert str(e) == f"null at position {pos}"
        else:
            raise AssertionError("null accepted")
        assert len(self.m) == before

    @rule(data=st.data(), values=st.lists(st.one_of(st.none(), texts), max_size=40))
    def lookup(self, data, values: list[str | None]) -> None:
        codes = self.m.lookup(data.draw(arrow_batch(values)))
        expected = [
            NO_CODE if s is None else self.model.get(s, NO_CODE) for s in values
        ]
        assert codes.tolist() == expected

    @rule(s=texts)
    def one(self, s: str) -> None:
        assert self.m.lookup_one(s) == self.model.get(s, -1)
        assert self.m.get_or_add_one(s) == self._model_add(s)
        assert self.m.decode_one(self.model[s]) == s

    @rule(data=st.data())
    def decode(self, data) -> None:
        n = len(self.model)
        codes = data.draw(
            st.lists(
                st.one_of(st.just(NO_CODE), st.integers(0, max(n - 1, 0))), max_size=30
            )
        )
        codes = [c for c in codes if c == NO_CODE or c < n]
        inverse = list(self.model)
        arr = np.frombuffer(np.array(codes, dtype=np.uint32).tobytes(), dtype=np.uint32)
        out = self.m.decode(arr)  # read-only input
        out.validate(full=True)
        assert out.to_pylist() == [None if c == NO_CODE else inverse[c] for c in codes]

    @invariant()
    def same_contents(self) -> None:
        assert len(self.m) == len(self.model)
        assert self.m.to_arrow().to_pylist() == list(self.model)


TestIdMapMachine = IdMapMachine.TestCase
# 30 examples locally, 60 under CI=true (not the ci profile's 150): 60 x 50 steps.
TestIdMapMachine.settings = settings(
    settings.default, max_examples=min(settings.default.max_examples, 60)
)


@given(values=st.lists(texts, max_size=300, unique=True))
def test_from_arrow_round_trip(values: list[str]) -> None:
    m = IdMap.from_arrow(pa.array(values, type=pa.large_string()))
    assert m.to_arrow().to_pylist() == values
    assert m.lookup(values).tolist() == list(range(len(values)))


# ==================================================================================
# Bitsets <-> BitMap
# ==================================================================================

CHUNK = 65536


@st.composite
def cid_sets(draw, max_chunks: int = 6) -> set[int]:
    """Sets of cids below max_chunks * 65536 built chunk by chunk, so the container kinds
    get hit exactly: empty, a few, exactly 4096 / 4097 (array/bitmap boundary), dense, full."""
    out: set[int] = set()
    for key in range(draw(st.integers(0, max_chunks))):
        kind = draw(
            st.sampled_from(["empty", "few", "4096", "4097", "dense", "full", "edges"])
        )
        base = key * CHUNK
        if kind == "few":
            out.update(
                base + v for v in draw(st.sets(st.integers(0, CHUNK - 1), max_size=20))
            )
        elif kind in ("4096", "4097", "dense"):
            card = {"4096": 4096, "4097": 4097}.get(kind) or draw(
                st.integers(4098, CHUNK - 1)
            )
            seed = draw(st.integers(0, 2**32 - 1))
            low = np.random.default_rng(seed).choice(CHUNK, card, replace=False)
            out.update((base + low).tolist())
        elif kind == "full":
            out.update(range(base, base + CHUNK))
        elif kind == "edges":
            out.update([base, base + 63, base + 64, base + CHUNK - 1])
    return out


def as_array(cids: set[int]) -> np.ndarray:
    """Sorted cids as a read-only uint32 array (as np.frombuffer over received bytes)."""
    return np.frombuffer(
        np.array(sorted(cids), dtype=np.uint32).tobytes(), dtype=np.uint32
    )


@given(cids=cid_sets(), extra_bits=st.integers(0, 3 * CHUNK))
def test_bitset_to_bitmap_matches_set(cids: set[int], extra_bits: int) -> None:
    n_bits = (max(cids) + 1 if cids else 0) + extra_bits
    words = words_for(n_bits)
    set_cids(words, as_array(cids))
    ro_words = np.frombuffer(words.tobytes(), dtype=np.uint64)
    expected = BitMap(cids)
    assert bitset_to_bitmap(ro_words) == expected
    assert bitset_to_cids(ro_words).tolist() == sorted(cids)
    assert popcount(ro_words) == len(cids)
    assert np.array_equal(bitmap_to_bitset(expected, n_bits), words)


@given(cids=cid_sets())
def test_cids_to_bitmap_matches_set(cids: set[int]) -> None:
    assert cids_to_bitmap(as_array(cids)) == BitMap(cids)


@given(
    cids=st.sets(st.integers(2**32 - 3 * CHUNK, 2**32 - 1), max_size=200),
    full_top=st.booleans(),
)
def test_cids_to_bitmap_near_uint32_max(cids: set[int], full_top: bool) -> None:
    if full_top:
        cids = cids | set(range(2**32 - CHUNK, 2**32))
    assert cids_to_bitmap(as_array(cids)) == BitMap(cids)


@given(cids=cid_sets(max_chunks=3), run_optimize=st.booleans())
def test_bitmap_to_bitset_matches_set(cids: set[int], run_optimize: bool) -> None:
    bm = BitMap(cids)
    if run_optimize:
        bm.run_optimize()
    n_bits = 3 * CHUNK
    words = bitmap_to_bitset(bm, n_bits)
    assert bitset_to_cids(words).tolist() == sorted(cids)


@given(
    start=st.sets(st.integers(0, 5000), max_size=100),
    add=st.lists(st.integers(0, 5000), max_size=100),
    remove=st.lists(st.integers(0, 5000), max_size=100),
)
def test_set_and_clear_match_set_ops(
    start: set[int], add: list[int], remove: list[int]
):
    words = words_for(5001)
    set_cids(words, as_array(start))
    set_cids(words, np.array(add, dtype=np.uint32))  # unsorted, with duplicates
    clear_cids(words, np.array(remove, dtype=np.uint32))
    assert bitset_to_cids(words).tolist() == sorted((start | set(add)) - set(remove))
