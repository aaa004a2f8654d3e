"""Micro-benchmarks: ``evaluate_pairs`` (per-node pair kernels) against the reference.

10k (contact, moment) pairs over the shared 100k-contact world (``kernel_world``), for
two of the live benchmark's ~10-condition segments (``segd.bench.live.templates``):

- *one moment*: 10k contacts at the dataset's now (what a live write asks);
- *many moments*: 10k contacts at 96 moments of a day (what a time step asks); the
  reference runs the plan once per distinct moment.

The fast path costs ~ the pairs (no n-bit bitset, no whole-column scan), the reference a
restricted run of the plan per distinct moment. Each benchmark checks its answer against
the other path. Run: ``pytest bench/test_bench_pairs.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.bench.live import templates
from segd.segments.pairs import evaluate_pairs, evaluate_pairs_reference

PAIRS = 10_000
SEGMENTS = {"template0": 0, "template3": 3}


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _pairs(w: World, many: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    cids = rng.integers(0, w.engine.store.n_contacts, PAIRS).astype(np.uint32)
    if many:
        # 96 distinct moments in a day (every 15 minutes, plus a second)
        nows = w.now_s + 1 + 900 * rng.integers(0, 96, PAIRS).astype(np.float64)
    else:
        nows = np.full(PAIRS, w.now_s)
    return cids, nows


@pytest.mark.parametrize("many", [False, True], ids=["one_moment", "many_moments"])
@pytest.mark.parametrize("segment", sorted(SEGMENTS))
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_pairs(benchmark, w: World, segment: str, many: bool, path: str) -> None:
    if path == "reference" and many:
        benchmark.extra_info["note"] = "one plan run per distinct moment"
    query = templates(int(w.now_s), SEGMENTS[segment])
    plan = w.engine._compiler(w.now_s).compile(w.engine.prepare(query).ast)
    cids, nows = _pairs(w, many)
    run = evaluate_pairs if path == "fast" else evaluate_pairs_reference
    rounds = 1 if path == "reference" else 5
    got = benchmark.pedantic(
        lambda: run(plan, w.engine.store, cids, nows), rounds=rounds, iterations=1
    )
    other = evaluate_pairs_reference if path == "fast" else evaluate_pairs
    if not (path == "fast" and many):  # the many-moment reference is the slow one
        assert got.tolist() == other(plan, w.engine.store, cids, nows).tolist()
