"""Unit tests of native.bitset: dense bitsets <-> sorted cids <-> pyroaring BitMap."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap, FrozenBitMap

from segd.native.bitset import (
    bitmap_to_bitset,
    bitset_to_bitmap,
    bitset_to_cids,
    cids_to_bitmap,
    clear_cids,
    distinct_to_bitmap,
    popcount,
    set_cids,
    words_for,
)


def u32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)


def read_only(a: np.ndarray) -> np.ndarray:
    """Same contents, read-only (as np.frombuffer over gRPC bytes or an mmap gives)."""
    out = np.frombuffer(a.tobytes(), dtype=a.dtype)
    assert not out.flags.writeable
    return out


def bitset_of(cids, n_bits: int) -> np.ndarray:
    w = words_for(n_bits)
    set_cids(w, u32(cids))
    return w


def test_words_for() -> None:
    assert words_for(0).shape == (0,)
    w = words_for(65)
    assert w.dtype == np.uint64 and w.shape == (2,) and not w.any()
    with pytest.raises(ValueError, match="n_bits"):
        words_for(-1)
    with pytest.raises(ValueError, match="n_bits"):
        words_for(2**32 + 1)


def test_set_clear_popcount_layout() -> None:
    w = words_for(200)
    set_cids(w, u32([0, 63, 64, 199, 63]))
    assert w.tolist() == [1 | (1 << 63), 1, 0, 1 << 7]
    assert popcount(w) == 4
    clear_cids(w, u32([63, 5]))
    assert w.tolist() == [1, 1, 0, 1 << 7]
    assert popcount(w) == 3
    assert popcount(words_for(0)) == 0
    set_cids(w, u32([]))
    clear_cids(w, u32([]))


def test_set_out_of_range_changes_nothing() -> None:
    w = words_for(128)
    with pytest.raises(ValueError, match="cid 128 >= n_bits 128"):
        set_cids(w, u32([1, 2, 128]))
    assert not w.any()
    w[:] = np.uint64(2**64 - 1)
    with pytest.raises(ValueError, match="cid 500"):
        clear_cids(w, u32([0, 500]))
    assert popcount(w) == 128


def test_writes_need_writable_words_and_exact_dtypes() -> None:
    w = read_only(words_for(64))
    with pytest.raises(ValueError, match="read-only"):
        set_cids(w, u32([1]))
    with pytest.raises(ValueError, match="dtype"):
        set_cids(words_for(64), np.array([1], dtype=np.int64))


def test_bitset_to_cids() -> None:
    cids = [0, 1, 63, 64, 65535, 65536, 1_000_000]
    w = bitset_of(cids, 1_000_001)
    out = bitset_to_cids(w)
    assert out.dtype == np.uint32
    assert out.tolist() == cids
    assert bitset_to_cids(read_only(w)).tolist() == cids
    assert bitset_to_cids(words_for(0)).tolist() == []
    assert bitset_to_cids(words_for(1000)).tolist() == []


def test_bitset_to_bitmap_small_and_empty() -> None:
    assert bitset_to_bitmap(words_for(0)) == BitMap()
    assert bitset_to_bitmap(words_for(10_000)) == BitMap()
    w = bitset_of([3, 150, 65535, 65536, 200_000], 200_001)
    bm = bitset_to_bitmap(read_only(w))
    assert isinstance(bm, BitMap)
    assert bm == BitMap([3, 150, 65535, 65536, 200_000])


@pytest.mark.parametrize("card", [1, 4095, 4096, 4097, 30_000, 65_535, 65_536])
def test_container_kind_boundary(card: int) -> None:
    """Cardinality <= 4096 must be written as an array container, above as a bitmap."""
    rng = np.random.default_rng(card)
    low = np.sort(rng.choice(65536, card, replace=False))
    cids = (low + 3 * 65536).astype(np.uint32)  # key 3, after two empty chunks
    expected = BitMap(cids)
    w = bitset_of(cids, 5 * 65536)
    assert bitset_to_bitmap(w) == expected
    assert cids_to_bitmap(cids) == expected
    assert bitmap_to_bitset(expected, 5 * 65536).tolist() == w.tolist()
    # Byte-for-byte what CRoaring writes for the same set, unless it chose a run container
    # (BitMap(array) does for a nearly full chunk; our format has none).
    theirs = expected.serialize()
    if struct.unpack_from("<I", theirs)[0] == 12346:
        assert bitset_to_bitmap(w).serialize() == theirs
        assert cids_to_bitmap(cids).serialize() == theirs


def test_serialization_header_matches_spec() -> None:
    bm = cids_to_bitmap(u32([1, 2, 70000]))
    raw = bm.serialize()
    cookie, k = struct.unpack_from("<II", raw)
    assert (cookie, k) == (12346, 2)
    # (key, cardinality - 1) per container
    assert struct.unpack_from("<HHHH", raw, 8) == (0, 1, 1, 0)
    assert struct.unpack_from("<II", raw, 16) == (24, 28)  # container offsets
    assert struct.unpack_from("<HHH", raw, 24) == (1, 2, 70000 - 65536)


def test_partial_last_chunk() -> None:
    n_bits = 65536 + 100  # the second chunk is only 2 words long
    cids = list(range(65536 - 10, n_bits))
    w = bitset_of(cids, n_bits)
    assert bitset_to_bitmap(w) == BitMap(cids)
    dense_tail = list(range(65536, 65536 + 100)) + list(range(0, 10_000))
    assert bitset_to_bitmap(bitset_of(dense_tail, n_bits)) == BitMap(dense_tail)


def test_cids_to_bitmap_validates_order() -> None:
    assert cids_to_bitmap(u32([])) == BitMap()
    with pytest.raises(ValueError, match="position 2: 7 then 7"):
        cids_to_bitmap(u32([1, 7, 7]))
    with pytest.raises(ValueError, match="position 1: 9 then 4"):
        cids_to_bitmap(u32([9, 4]))


def test_cids_to_bitmap_near_uint32_max() -> None:
    top = 2**32 - 1
    cids = u32([0, 2**31, top - 5000, top - 1, top])
    assert cids_to_bitmap(read_only(cids)) == BitMap(cids.tolist())
    dense_top = np.arange(top - 5000, top + 1, dtype=np.uint64).astype(np.uint32)
    assert cids_to_bitmap(dense_top) == BitMap(dense_top)
    full_top = np.arange(2**32 - 65536, 2**32, dtype=np.uint64).astype(np.uint32)
    bm = cids_to_bitmap(full_top)
    assert len(bm) == 65536 and bm.min() == 2**32 - 65536 and bm.max() == top


def test_bitmap_to_bitset_variants() -> None:
    cids = list(range(100, 9000)) + [70_000, 70_002] + list(range(131_072, 196_608))
    n_bits = 300_000
    expected = bitset_of(cids, n_bits)
    bm = BitMap(cids)
    assert bitmap_to_bitset(bm, n_bits).tolist() == expected.tolist()
    frozen = FrozenBitMap(cids)
    assert bitmap_to_bitset(frozen, n_bits).tolist() == expected.tolist()
    runs = BitMap(cids)
    runs.run_optimize()  # serialize() now uses cookie 12347 with run containers
    assert struct.unpack_from("<H", runs.serialize())[0] == 12347
    assert bitmap_to_bitset(runs, n_bits).tolist() == expected.tolist()
    assert bitmap_to_bitset(BitMap(), 0).tolist() == []
    assert bitmap_to_bitset(BitMap(), 100).tolist() == [0, 0]


def test_bitmap_to_bitset_run_with_few_containers() -> None:
    """With cookie 12347 and < 4 containers there is no offset header."""
    bm = BitMap(range(10, 5000))
    bm.run_optimize()
    expected = bitset_of(range(10, 5000), 5000)
    assert bitmap_to_bitset(bm, 5000).tolist() == expected.tolist()


def test_bitmap_to_bitset_range_errors() -> None:
    with pytest.raises(ValueError, match="cid 64 >= n_bits 64"):
        bitmap_to_bitset(BitMap([1, 64]), 64)
    # n_bits that is not a multiple of 64 still gets whole words
    assert bitmap_to_bitset(BitMap([64]), 65).tolist() == [0, 1]


def test_round_trip_large_random() -> None:
    rng = np.random.default_rng(3)
    n_bits = 3_000_000
    for density in (0.5, 0.03, 0.0004):
        cids = np.flatnonzero(rng.random(n_bits) < density).astype(np.uint32)
        w = bitset_of(cids, n_bits)
        bm = bitset_to_bitmap(w)
        assert bm == BitMap(cids)
        assert cids_to_bitmap(cids) == bm
        assert np.array_equal(bitset_to_cids(w), cids)
        assert np.array_equal(bitmap_to_bitset(bm, n_bits), w)
        assert popcount(w) == len(cids)


@pytest.mark.slow
def test_pxd_inline_kernels_cimportable(tmp_path: Path) -> None:
    """Another .pyx can cimport bit_set / bit_clear / bit_test from native/bitset.pxd."""
    from segd.native import get_include

    include = get_include()
    (tmp_path / "use_bitset.pyx").write_text(
        textwrap.dedent(
            """
            from segd.native.bitset cimport bit_clear, bit_set, bit_test
            from segd.native._types cimport cid_t, word_t

            def run(word_t[::1] w, cid_t i):
                bit_set(&w[0], i)
                was_set = bit_test(&w[0], i)
                bit_clear(&w[0], i)
                return was_set, bit_test(&w[0], i), w[i >> 6]
            """
        )
    )
    build = (
        "import sys; from Cython.Build import cythonize; "
        "from setuptools import setup, Extension; "
        "sys.argv = ['setup', 'build_ext', '--inplace', '-q']; "
        "setup(ext_modules=cythonize([Extension('use_bitset', ['use_bitset.pyx'])], "
        f"include_path=[{include!r}], quiet=True, language_level=3))"
    )
    subprocess.run([sys.executable, "-c", build], cwd=tmp_path, check=True)
    check = (
        "import numpy as np, use_bitset; "
        "w = np.full(3, 1, dtype=np.uint64); "
        "print(use_bitset.run(w, 130), w.tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, check=True, capture_output=True
    )
    assert out.stdout.decode().strip() == "(True, False, 1) [1, 1, 1]"


@settings(max_examples=300, deadline=None)
@given(
    cids=st.lists(
        st.one_of(
            st.integers(0, 300_000),
            st.integers(65_536 * 2, 65_536 * 2 + 63),  # dense words: many bits each
        ),
        max_size=400,
    ),
    spare=st.integers(0, 70_000),
)
def test_distinct_to_bitmap_matches_numpy(cids, spare) -> None:
    """The BitMap of np.unique(cids), whatever the order and repeats; the scratch is
    all zero again afterwards, and one too small raises without being touched."""
    c = u32(cids)
    top = int(c.max()) + 1 if len(c) else 0
    scratch = words_for(top + spare)
    got = distinct_to_bitmap(c, scratch)
    assert isinstance(got, BitMap)
    assert list(got) == np.unique(c).tolist()
    assert not scratch.any()
    assert list(distinct_to_bitmap(read_only(c), scratch)) == np.unique(c).tolist()
    if len(c) and top > 64:
        small = words_for(top - 64)
        with pytest.raises(ValueError, match="scratch"):
            distinct_to_bitmap(c, small)
        assert not small.any()


def test_distinct_to_bitmap_dense_chunk_and_reuse() -> None:
    """A chunk above 4,096 contacts (a bitmap container) beside sparse ones; the same
    scratch serves the next call."""
    rng = np.random.default_rng(7)
    dense = rng.choice(65_536, 30_000, replace=False) + 65_536
    sparse = rng.integers(0, 1_000_000, 5_000)
    c = np.concatenate([dense, sparse, dense[:100]]).astype(np.uint32)
    rng.shuffle(c)
    scratch = words_for(1_000_000)
    for _ in range(2):
        assert list(distinct_to_bitmap(c, scratch)) == np.unique(c).tolist()
        assert not scratch.any()
    assert distinct_to_bitmap(u32([]), scratch) == BitMap()


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.one_of(
            st.just(0), st.integers(0, 2**64 - 1), st.sampled_from([1, 2**63, 3])
        ),
        max_size=2_100,
    )
)
def test_extract_matches_numpy(words) -> None:
    """bitset_to_cids / bitset_to_bitmap (the branch-free two-per-word extraction) list
    exactly the set bits, in order, for words of 0, 1, 2 and many bits."""
    w = np.array(words, dtype=np.uint64)
    bits = np.unpackbits(w.view(np.uint8), bitorder="little")
    want = np.flatnonzero(bits).astype(np.uint32)
    got = bitset_to_cids(w)
    assert got.dtype == np.uint32
    assert got.tolist() == want.tolist()
    assert list(bitset_to_bitmap(w)) == want.tolist()
