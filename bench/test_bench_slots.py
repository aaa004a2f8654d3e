"""Micro-benchmarks of the contact index's slot table (contactindex.Slots), 1M contacts,
each checked against the plain CSR offsets (numpy):

- ``build``: the counting sort plus the table's compression (a view-like log of 12M rows:
  12 per contact on average, a heavy tail past the 254 rows of a narrow slot);
- ``Slots.starts_ends``: every slot decoded (one `slot_span` per contact);
- ``count_of_contacts`` over 20k random candidates: the candidate visit the table serves.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.native import contactindex

N_CONTACTS = 1_000_000


@pytest.fixture(scope="module")
def log_cids() -> np.ndarray:
    rng = np.random.default_rng(5)
    # Zipf-ish activity: most contacts a few rows, some hundreds (wide blocks)
    weights = rng.pareto(3.0, N_CONTACTS) + 0.05
    cid = rng.choice(N_CONTACTS, 12_000_000, p=weights / weights.sum())
    return cid.astype(np.uint32)  # rows in time order, contacts interleaved


def test_build(benchmark, log_cids: np.ndarray) -> None:
    slots, rows = benchmark.pedantic(
        contactindex.build, (log_cids, N_CONTACTS), rounds=3, iterations=1
    )
    offsets, plain_rows = contactindex.group_by_contact(log_cids, N_CONTACTS)
    assert np.array_equal(rows, plain_rows)
    starts, ends = slots.starts_ends()
    assert np.array_equal(starts, offsets[:-1]) and np.array_equal(ends, offsets[1:])
    assert slots.nbytes < 0.4 * offsets.nbytes  # the point of the table
    assert slots.n_wide > 0  # the heavy tail is exercised


def test_starts_ends(benchmark, log_cids: np.ndarray) -> None:
    slots, _ = contactindex.build(log_cids, N_CONTACTS)
    starts, ends = benchmark(slots.starts_ends)
    counts = np.bincount(log_cids, minlength=N_CONTACTS)
    assert np.array_equal(ends - starts, counts)


def test_count_of_contacts(benchmark, log_cids: np.ndarray) -> None:
    slots, rows = contactindex.build(log_cids, N_CONTACTS)
    n = len(log_cids)
    rng = np.random.default_rng(6)
    cands = np.sort(rng.choice(N_CONTACTS, 20_000, replace=False)).astype(np.uint32)
    r0, r1 = n // 3, n
    got = benchmark(
        contactindex.count_of_contacts, cands, slots, rows, n, log_cids, r0, r1
    )
    want = np.bincount(log_cids[r0:r1], minlength=N_CONTACTS)[cands]
    assert np.array_equal(got, want)
