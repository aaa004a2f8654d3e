"""Micro-benchmarks of RFM over the shared 100k-contact world (``pytest bench/
--benchmark-only``), and a stand-alone timing at any scale:

    python -m segd.bench.test_bench_rfm --contacts 1m

which generates (or reuses the cached Parquet of) a datagen dataset, loads it, and prints
the median time of ``rfm_compute``, the matrix, the pure ``rfm`` table and an
``rfm.segment`` condition. Issue 11's targets: rfm_compute for 10M contacts / 200M events
<= 1 s on one core; the matrix <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import pytest

from segd.bench.kernel_world import World, world


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def test_rfm_compute(benchmark, w: World) -> None:
    as_of = [w.now_s]

    def run() -> None:
        as_of[0] += 1  # rfm_compute never goes back in time
        w.engine.rfm_compute(as_of=as_of[0])

    benchmark(run)
    assert w.engine.rfm_status()["scored"] > 0


def test_rfm_matrix(benchmark, w: World) -> None:
    w.engine.rfm_compute(as_of=w.now_s + 10_000)
    cells = benchmark(lambda: w.engine.rfm_matrix(by="rf"))
    assert sum(cells.column("count").to_pylist()) == w.engine.rfm_status()["scored"]


def test_rfm_segment_condition(benchmark, w: World) -> None:
    w.engine.rfm_compute(as_of=w.now_s + 20_000)
    loyal = w.engine.rfm_status()["segments"]["Loyal"]
    count = benchmark(
        lambda: w.engine.segment('rfm.segment = "Loyal"', w.now_s, cache=False).count()
    )
    assert count == loyal > 0


def _order_log(w: World):
    from segd import rfm

    store = w.engine.store
    log = store.logs["order"]
    lo, hi, start = rfm.window_bounds(w.now_s, 365)
    r0, r1 = log.window(lo, hi)
    return store, log, r0, r1, start


def test_rfm_rollup_and_take_buyers(benchmark, w: World) -> None:
    """The order log into per-contact accumulators, then the buyers' records out."""

    from segd import rfm
    from segd.native import rfm as kernels

    store, log, r0, r1, _ = _order_log(w)
    n, n_codes = store.n_contacts, len(store.dim_maps["order_id"])
    ws = rfm.Workspace()

    def run():
        ws.ready(n, n_codes)
        nb = kernels.rollup(
            log.cid, log.ts, log.amount, log.dim("order_id"), r0, r1, n, n_codes,
            ws.acc, ws.owner, ws.state, ws.generation, ws.bits,
        )  # fmt: skip
        return kernels.take_buyers(ws.acc, n, ws.bits, nb)[1]

    dense = benchmark(run)
    assert len(dense) > 0 and not ws.acc.any()


def test_rfm_aggregate_buyers(benchmark, w: World) -> None:
    """The buyers' records and quantile inputs from the per-contact aggregates kept on
    ingest (what replaces the rollup for contacts whose orders all lie in the window)."""
    from segd import rfm
    from segd.native import rfm as kernels

    store, _, _, _, _ = _order_log(w)
    agg, n = store.aggregates, store.n_contacts
    lo, hi, _ = rfm.window_bounds(w.now_s, 365)
    ws = rfm.Workspace()
    ws.ready_buyers(n)

    def run():
        ws.mixed.fill(0)  # what patch_mixed clears after each computation
        return kernels.aggregate_buyers(
            agg.orders_count, agg.first_order_s, agg.last_order_s, agg.revenue, n,
            lo, hi, float(w.now_s), ws.buyers, ws.dense, ws.mixed_pos, ws.mixed,
            ws.days, ws.freq, ws.mon,
        )  # fmt: skip

    n_buyers, n_mixed, _, n_scored = benchmark(run)
    assert n_buyers > 0 and n_scored + n_mixed >= n_buyers


def test_rfm_select_positions(benchmark, w: World) -> None:
    """The monetary quantile cuts by radix selection (was np.partition)."""
    import numpy as np

    from segd.native import rfm as kernels

    values = np.random.default_rng(0).gamma(2.0, 50.0, 200_000).round(2)
    pos = [39_999, 79_999, 119_999, 159_999]
    got = benchmark(lambda: kernels.select_positions(values, pos))
    assert got.tolist() == np.sort(values)[pos].tolist()


def test_rfm_compute_values_pass(benchmark, w: World) -> None:
    """rollup, buyer passes and scoring without the window columns (what
    rfm_compute(table=False) runs before making the result current)."""
    from segd import rfm

    store = w.engine.store
    cfg = w.engine.rfm_state.config
    ws = rfm.Workspace()
    result = benchmark(
        lambda: rfm.compute(
            store, w.now_s, 365, 5, "quantile", None, cfg, ws, values=False
        )
    )
    assert result.scored() > 0


def test_rfm_transitions(benchmark, w: World) -> None:
    """apply_computed: transitions over the buyers of two computations, day counts."""
    from segd import rfm

    store = w.engine.store
    cfg = w.engine.rfm_state.config
    a = rfm.compute(store, w.now_s, 365, 5, "quantile", None, cfg, values=False)
    b = rfm.compute(store, w.now_s + 90 * 86400, 365, 5, "quantile", None, cfg)

    def run():
        state = rfm.RfmState()
        state.apply_computed(a.compact())
        return state.apply_computed(b.compact())

    rows = benchmark(run)
    assert len(rows["cid"]) > 0


CPU_MS: dict[str, float] = {}


def _median_ms(fn, rounds: int, name: str = "") -> float:
    """Median wall milliseconds; the median CPU milliseconds of this process go to
    ``CPU_MS[name]`` (on a shared machine the wall time includes waiting for a core)."""
    times, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    if name:
        CPU_MS[name] = round(statistics.median(cpu), 1)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from segd import Engine
    from segd.bench.dataset import ensure_dataset
    from segd.datagen import parse_scale

    p = argparse.ArgumentParser(prog="python -m segd.bench.test_bench_rfm")
    p.add_argument("--contacts", default="1m", type=parse_scale)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ds, _ = ensure_dataset(args.contacts, args.seed)
    eng = Engine()
    t0 = time.perf_counter()
    paths = ds.paths
    eng.load_items(paths["items"])
    eng.load_contacts(paths["contacts"])
    eng.load_events(paths["events"])
    load_s = time.perf_counter() - t0
    stats = eng.stats()
    as_of = [ds.now.timestamp()]

    def compute() -> None:
        as_of[0] += 1
        eng.rfm_compute(as_of=as_of[0])

    out = {
        "contacts": stats["contacts"],
        "events": stats["events"],
        "orders": stats["event_types"].get("order", 0),
        "load_s": round(load_s, 1),
        "rfm_compute_ms": round(_median_ms(compute, args.rounds, "rfm_compute"), 1),
        "rfm_pure_table_ms": round(
            _median_ms(lambda: eng.rfm(as_of=as_of[0]), args.rounds), 1
        ),
        "rfm_matrix_rf_ms": round(
            _median_ms(lambda: eng.rfm_matrix(by="rf"), args.rounds, "matrix_rf"), 2
        ),
        "rfm_matrix_segment_ms": round(
            _median_ms(lambda: eng.rfm_matrix(by="segment"), args.rounds), 2
        ),
        "rfm_segment_condition_ms": round(
            _median_ms(
                lambda: eng.segment('rfm.segment = "Loyal"', as_of[0], cache=False),
                args.rounds,
            ),
            2,
        ),
        "scored": eng.rfm_status()["scored"],
        "cpu_ms": CPU_MS,
        "load_average": list(os.getloadavg()),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
