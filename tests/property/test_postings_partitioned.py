"""``Postings.append_rows`` with a batch partitioned by code (``PARTITIONED_APPEND``:
pairs bucketed by ``code >> shift`` a block of rows at a time, then appended bucket by
bucket) against a plain Python oracle and against the row-order path: for any batch
(NULL codes, skewed or uniform codes, several appends, lists borrowed from
``from_arrays``), every list holds exactly the rows of its code, ascending, and the
sizes and totals agree. The thresholds are shrunk so small batches take the path, over
one bucket or many and one block or many."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd.native import postings
from segd.native.postings import Postings

NO_CODE = 0xFFFFFFFF


@pytest.fixture
def partition_small():
    saved = {
        name: getattr(postings, name)
        for name in (
            "PARTITIONED_APPEND",
            "PARTITION_MIN_ROWS",
            "PARTITION_MIN_CODES",
            "PARTITION_BUCKETS",
            "PARTITION_ROWS_PER_CODE",
        )
    }
    yield
    for name, value in saved.items():
        setattr(postings, name, value)


@st.composite
def batches(draw):
    n_codes = draw(st.integers(1, 300))
    out = []
    start = 0
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(0, 500))
        skew = draw(st.booleans())
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        if skew:
            codes = (rng.zipf(1.5, n) - 1) % n_codes
        else:
            codes = rng.integers(0, n_codes, n)
        codes = codes.astype(np.uint32)
        codes[rng.random(n) < draw(st.floats(0, 1))] = NO_CODE
        gap = draw(st.integers(1, 3))
        rows = (start + np.arange(n, dtype=np.uint32) * gap).astype(np.uint32)
        start += n * gap + 1
        out.append((rows, codes))
    return out


def oracle(parts) -> dict[int, list[int]]:
    lists: dict[int, list[int]] = {}
    for rows, codes in parts:
        for r, c in zip(rows.tolist(), codes.tolist(), strict=True):
            if c != NO_CODE:
                lists.setdefault(c, []).append(r)
    return lists


def build(parts, *, partitioned: bool, borrowed: bool = False) -> Postings:
    postings.PARTITIONED_APPEND = partitioned
    p = Postings()
    if borrowed:  # a snapshot's lists, then appends: they are copied on growth
        # code 0: row 0, code 2: rows 1, 2
        p = Postings.from_arrays(
            np.array([1, 0, 2], np.uint32), np.array([0, 1, 2], np.uint32)
        )
    for rows, codes in parts:
        if borrowed:
            rows = rows + np.uint32(3)
        p.append_rows(rows, codes)
    return p


# The fixture only restores the module's settings at the end: every example sets them.
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches(),
    st.integers(1, 64),  # buckets
    st.integers(1, 8),  # rows per code in a block
    st.booleans(),
)
def test_partitioned_append_matches_oracle(
    partition_small, parts, buckets, per_code, borrowed
) -> None:
    postings.PARTITION_MIN_ROWS = 1
    postings.PARTITION_MIN_CODES = 0
    postings.PARTITION_BUCKETS = buckets
    postings.PARTITION_ROWS_PER_CODE = per_code
    got = build(parts, partitioned=True, borrowed=borrowed)
    plain = build(parts, partitioned=False, borrowed=borrowed)
    shifted = [(r + np.uint32(3), c) for r, c in parts] if borrowed else parts
    want = oracle(shifted)
    if borrowed:
        want.setdefault(0, []).insert(0, 0)
        want.setdefault(2, [])[:0] = [1, 2]
    n_codes = max(len(got), len(plain))
    for c in range(n_codes):
        expect = want.get(c, [])
        assert got.rows_of(c).tolist() == expect
        assert plain.rows_of(c).tolist() == expect
    assert got.postings == plain.postings == sum(len(v) for v in want.values())
    assert got.sizes().tolist()[: len(plain)] == plain.sizes().tolist()[: len(got)]


def test_partitioned_append_large_batch(partition_small) -> None:
    """The default thresholds: a batch of 2M rows over 40k codes is partitioned (more
    than one block), and equals row order."""
    rng = np.random.default_rng(7)
    n = 2_000_000
    codes = rng.integers(0, 40_000, n).astype(np.uint32)
    codes[rng.random(n) < 0.1] = NO_CODE
    rows = np.arange(n, dtype=np.uint32)
    postings.PARTITION_ROWS_PER_CODE = 8  # 320k rows a block: several blocks
    got = build([(rows, codes)], partitioned=True)
    plain = build([(rows, codes)], partitioned=False)
    assert np.array_equal(got.sizes(), plain.sizes())
    for c in rng.integers(0, 40_000, 200).tolist():
        assert np.array_equal(got.rows_of(c), plain.rows_of(c))
        assert np.array_equal(got.rows_of(c), np.flatnonzero(codes == c))
