"""Micro-benchmark of ``groupscan.count_groups`` (issue 15, `med3`): `stress_or`'s shape
at 1M contacts, a 30-day window of 1.4M view rows, ten groups of ~9.5k candidates each
(95k of 1M contacts, ~20% of the window's rows theirs), each group's filter a category
of ~16% of 50k items and a minimum count of 1-3. Checked against numpy.

Run: ``pytest bench/test_bench_groupscan.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import numpy as np

from segd.native import groupscan

N = 1_000_000
ROWS = 1_408_013
ITEMS = 50_000
GROUPS = 10


def _case():
    rng = np.random.default_rng(15)
    cid = rng.integers(0, N, ROWS).astype(np.uint32)
    codes = rng.integers(0, ITEMS, ROWS).astype(np.uint32)
    category = rng.integers(0, 6, ITEMS)  # six categories, ~16% of the items each
    code_groups = np.zeros(ITEMS, dtype=np.uint32)
    for g in range(GROUPS):
        code_groups |= (category == g % 6).astype(np.uint32) << np.uint32(g)
    members = np.array_split(rng.permutation(N)[:95_000].astype(np.uint32), GROUPS)
    flat = np.concatenate(members)
    ends = np.cumsum([len(m) for m in members]).astype(np.intp)
    lo = np.array([1 + g % 3 for g in range(GROUPS)], dtype=np.uint32)
    hi = np.full(GROUPS, 2**32 - 1, dtype=np.uint32)
    return cid, codes, code_groups, members, flat, ends, lo, hi


def test_count_groups_stress_or_shape(benchmark) -> None:
    cid, codes, code_groups, members, flat, ends, lo, hi = _case()
    got = benchmark(
        groupscan.count_groups, cid, codes, 0, ROWS, code_groups, 0, flat, ends, lo, hi
    )
    want = set()
    row_groups = code_groups[codes]
    for g, mem in enumerate(members):
        hit = ((row_groups >> np.uint32(g)) & np.uint32(1)).astype(bool)
        counts = np.bincount(cid[hit], minlength=N)[mem]
        want.update(mem[counts >= lo[g]].tolist())
    assert got.tolist() == sorted(want)
