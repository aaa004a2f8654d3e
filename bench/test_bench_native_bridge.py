"""Micro-benchmarks of the native bridges (IdMap, bitset <-> BitMap).

Run: ``pytest bench/test_bench_native_bridge.py --benchmark-only``. Inputs are built once
per module; each benchmark checks its result once so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import array

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from segd.native.bitset import bitset_to_bitmap, cids_to_bitmap, set_cids, words_for
from segd.native.idmap import IdMap

N_IDS = 1_000_000
N_BITS = 10_000_000


@pytest.fixture(scope="module")
def customer_ids() -> pa.LargeStringArray:
    """1M distinct 9-character ids in random order."""
    rng = np.random.default_rng(0)
    values = rng.permutation(3 * N_IDS)[:N_IDS]
    return pa.array([f"{v:09d}" for v in values], type=pa.large_string())


@pytest.fixture(scope="module")
def loaded(customer_ids: pa.LargeStringArray) -> IdMap:
    m = IdMap()
    m.get_or_add(customer_ids)
    return m


def test_get_or_add_1m(benchmark, customer_ids: pa.LargeStringArray) -> None:
    codes = benchmark(lambda: IdMap().get_or_add(customer_ids))
    assert np.array_equal(codes, np.arange(N_IDS, dtype=np.uint32))


def test_lookup_1m_shuffled(benchmark, loaded: IdMap, customer_ids) -> None:
    perm = np.random.default_rng(1).permutation(N_IDS)
    shuffled = customer_ids.take(pa.array(perm))
    codes = benchmark(loaded.lookup, shuffled)
    assert np.array_equal(codes, perm.astype(np.uint32))


@pytest.fixture(scope="module")
def half_full_bitset() -> np.ndarray:
    rng = np.random.default_rng(2)
    words = words_for(N_BITS)
    set_cids(words, np.flatnonzero(rng.random(N_BITS) < 0.5).astype(np.uint32))
    return words


def test_bitset_to_bitmap_10m_bits(benchmark, half_full_bitset: np.ndarray) -> None:
    bm = benchmark(bitset_to_bitmap, half_full_bitset)
    assert len(bm) == int(np.bitwise_count(half_full_bitset).sum())


@pytest.fixture(scope="module")
def sorted_cids() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.sort(rng.choice(20_000_000, 1_000_000, replace=False)).astype(np.uint32)


def test_cids_to_bitmap_1m(benchmark, sorted_cids: np.ndarray) -> None:
    bm = benchmark(cids_to_bitmap, sorted_cids)
    assert len(bm) == len(sorted_cids) and bm.max() == sorted_cids[-1]


def test_baseline_bitmap_from_array_1m(benchmark, sorted_cids: np.ndarray) -> None:
    """pyroaring's own fastest constructor, for comparison with cids_to_bitmap."""
    bm = benchmark(lambda: BitMap(array.array("I", sorted_cids.tobytes())))
    assert len(bm) == len(sorted_cids)
