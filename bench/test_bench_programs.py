"""Micro-benchmarks: a live segment's conjunction by the fused program
(``pairscan.PairProgram`` via ``segments.pairs.evaluate_conjunction``) against the
per-node walk (``fused=False``), for 10k contacts at one moment (what a live write asks)
over the shared 100k-contact world (``kernel_world``), for two of the live benchmark's
~10-condition segments (``segd.bench.live.templates``) whole (no static pass).

``build`` times compiling the program once (a live segment keeps it per plan and
re-links its event leaves when logs grow). Each benchmark checks its answer against
the walk. Run: ``pytest bench/test_bench_programs.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.bench.live import templates
from segd.segments.pairs import conjunction_program, evaluate_conjunction

PAIRS = 10_000
SEGMENTS = {"template0": 0, "template3": 3}


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _parts(w: World, segment: str) -> list:
    query = templates(int(w.now_s), SEGMENTS[segment])
    plan = w.engine._compiler(w.now_s).compile(w.engine.prepare(query).ast)
    node = plan
    while type(node).__name__ == "RefNode":
        node = node.inner
    return list(node.parts) if type(node).__name__ == "AndNode" else [plan]


@pytest.mark.parametrize("segment", sorted(SEGMENTS))
@pytest.mark.parametrize("path", ["fused", "walk", "build"])
def test_conjunction(benchmark, w: World, segment: str, path: str) -> None:
    parts = _parts(w, segment)
    store = w.engine.store
    rng = np.random.default_rng(7)
    cids = np.unique(rng.integers(0, store.n_contacts, PAIRS).astype(np.uint32))
    nows = np.full(len(cids), w.now_s)
    expected = evaluate_conjunction(parts, store, cids, nows, fused=False)
    if path == "build":
        program = benchmark(lambda: conjunction_program(parts, store, w.now_s))
        assert program is not None
        assert program.run(cids).view(bool).tolist() == expected.tolist()
        return
    program = conjunction_program(parts, store, w.now_s)
    assert program is not None  # every condition of the templates has a leaf kind
    if path == "fused":
        got = benchmark(lambda: program.run(cids).view(bool))
    else:
        got = benchmark(
            lambda: evaluate_conjunction(parts, store, cids, nows, fused=False)
        )
    assert got.tolist() == expected.tolist()
