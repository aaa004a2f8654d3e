"""Micro-benchmarks: a live segment's conjunction by the fused program
(``pairscan.PairProgram`` via ``segments.pairs.evaluate_conjunction``) against the
per-node walk (``fused=False``), for 10k contacts at one moment (what a live write asks)
over the shared 100k-contact world (``kernel_world``), for two of the live benchmark's
~10-condition segments (``segd.bench.live.templates``) whole (no static pass).

``build`` times compiling the program once (a live segment keeps it per plan and
re-links its event leaves when logs grow). Each benchmark checks its answer against
the walk. ``test_flush`` times the programs of all 100 templates over 10k contacts, each
asked about a random ~3.5% of them (the survivors of a live flush's static passes):
in one ``run_fused`` pass contact by contact with the memo of shared event leaves
(``one_pass``) against one ``PairProgram.run`` per segment (``each``). Run:
``pytest bench/test_bench_programs.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.bench.live import templates
from segd.segments.pairs import (
    _Conjunction,
    _ProgramBuilder,
    conjunction_program,
    evaluate_conjunction,
    run_fused,
)

PAIRS = 10_000
SEGMENTS = {"template0": 0, "template3": 3}


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _parts(w: World, segment: str | int) -> list:
    k = segment if isinstance(segment, int) else SEGMENTS[segment]
    query = templates(int(w.now_s), k)
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


@pytest.mark.parametrize("path", ["one_pass", "each"])
def test_flush(benchmark, w: World, path: str) -> None:
    store = w.engine.store
    built = [
        _ProgramBuilder(store, w.now_s).build(_Conjunction(_parts(w, k)))
        for k in range(100)
    ]
    fused = [f for f in built if f is not None]
    assert len(fused) == 100
    rng = np.random.default_rng(11)
    cids = np.unique(rng.integers(0, store.n_contacts, PAIRS).astype(np.uint32))
    todo = (rng.random((len(cids), len(fused))) < 0.035).astype(np.uint8)
    asked = [np.ascontiguousarray(cids[todo[:, s].astype(bool)]) for s in range(100)]
    expected = [f.program.run(a).view(bool) for f, a in zip(fused, asked, strict=True)]
    if path == "one_pass":
        out = benchmark(lambda: run_fused(fused, store, cids, todo))
        for s in range(100):
            assert out[s][todo[:, s].astype(bool)].tolist() == expected[s].tolist()
            assert not out[s][~todo[:, s].astype(bool)].any()
    else:
        got = benchmark(
            lambda: [f.program.run(a) for f, a in zip(fused, asked, strict=True)]
        )
        assert [g.view(bool).tolist() for g in got] == [e.tolist() for e in expected]
