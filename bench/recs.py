"""``python -m segd.bench recs``: offline quality and speed of the recommendations.

    python -m segd.bench recs quality --contacts 20k [--no-co-purchase] [--json]
    python -m segd.bench recs perf --contacts 100k [--lookups 20000] [--grpc]
    python -m segd.bench recs grpc --contacts 100k [--calls 200]
    python -m segd.bench recs build --contacts 1m [--repeat 1]

quality (BENCHMARKS.md, "Recommendations"): on the demo data, each contact with two or
more orders has its last order held out: its events from 3 days before that order on are
removed (the cart adds that preceded it would leak it), the model is built on what is
left (window 365 days, every item in stock: the purchases happened when the items were),
and four methods name 10 items, each leaving out what the contact bought before:

- popular: the bestsellers (distinct buyers), the baseline;
- related: ``related`` for the contact's 3 newest distinct items;
- personal: ``personal`` for the contact;
- item-kNN (``implicit.nearest_neighbours.CosineRecommender`` over the same weighted
  contact x item matrix), when ``implicit`` is installed.

hit rate@10 = share of contacts with at least one held-out item in their 10;
recall@10 = mean share of the held-out items found.

perf: model build time and size, in-process lookup latency (p50 / p99 of ``related`` for a
3-item cart and ``personal``), and with ``--grpc`` RecommendBatch of 1,000 contacts over
a real server on 127.0.0.1 in the same process (the handler's time and the GC pauses
recorded per call).

grpc: RecommendBatch of 1,000 contacts against ``python -m segd.server --demo N`` (its
default settings, a separate process, as a backend sees it): wall and client CPU per
call, the server process's CPU per call, GC pauses in the client, the slowest calls.

build: the model build on the cached bench dataset (``segd.bench.dataset``): wall and
CPU seconds, per-step timings, RSS before and peak during the build, model size.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd import Engine, datagen

WEIGHTS = {"order": 1.0, "add_to_cart": 0.5, "view": 0.25}
HOLDOUT_LEAD_S = 3 * 86_400


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _PeakRss:
    """Samples the current RSS every 20 ms (the build's own peak, not datagen's)."""

    def __init__(self) -> None:
        import threading

        self.peak = _current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _current_rss_mb())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_last_orders(
    events: pa.Table,
) -> tuple[pa.Table, dict[str, set[str]]]:
    """(training events, customer -> items of its held-out last order)."""
    cust = events.column("customer_id").cast(pa.string()).to_numpy(zero_copy_only=False)
    etype = events.column("type").cast(pa.string()).to_numpy(zero_copy_only=False)
    ts = events.column("ts").cast(pa.int64()).to_numpy()
    if events.schema.field("ts").type.unit == "ms":
        ts = ts // 1000
    item = events.column("item_id").cast(pa.string()).to_numpy(zero_copy_only=False)
    order_id = events.column("order_id").to_numpy(zero_copy_only=False)
    is_order = etype == "order"
    codes, cidx = np.unique(cust, return_inverse=True)
    # orders per contact (distinct order ids) and the time of the last one
    o_rows = np.flatnonzero(is_order)
    pairs = np.unique(
        np.stack([cidx[o_rows], np.unique(order_id[o_rows], return_inverse=True)[1]]),
        axis=1,
    )
    n_orders = np.bincount(pairs[0], minlength=len(codes))
    last_ts = np.full(len(codes), -1, dtype=np.int64)
    np.maximum.at(last_ts, cidx[o_rows], ts[o_rows])
    eligible = n_orders >= 2
    last_order = {}
    for r in o_rows[np.argsort(ts[o_rows], kind="stable")]:
        last_order[cidx[r]] = order_id[r]  # the last order id of each contact
    held: dict[str, set[str]] = {}
    for r in o_rows:
        c = cidx[r]
        if eligible[c] and order_id[r] == last_order[c]:
            held.setdefault(codes[c], set()).add(item[r])
    cutoff = np.where(eligible, last_ts - HOLDOUT_LEAD_S, np.iinfo(np.int64).max)
    keep = ts < cutoff[cidx]
    return events.filter(pa.array(keep)), held


def _history(events: pa.Table) -> dict[str, list[str]]:
    """customer -> its distinct items, newest first."""
    has = pc.is_valid(events.column("item_id"))
    ev = events.filter(has)
    cust = ev.column("customer_id").cast(pa.string()).to_numpy(zero_copy_only=False)
    item = ev.column("item_id").cast(pa.string()).to_numpy(zero_copy_only=False)
    out: dict[str, list[str]] = {}
    for c, i in zip(cust[::-1].tolist(), item[::-1].tolist(), strict=True):
        lst = out.setdefault(c, [])
        if i not in lst:
            lst.append(i)
    return out


def _knn(train: pa.Table, n_items: int, item_index: dict[str, int]):
    """implicit's item-kNN (cosine) over the weighted contact x item matrix, or None."""
    try:
        from implicit.nearest_neighbours import CosineRecommender
        from scipy.sparse import csr_matrix
    except ImportError:
        return None
    ev = train.filter(
        pc.is_in(train.column("type").cast(pa.string()), pa.array(list(WEIGHTS)))
    )
    ev = ev.filter(pc.is_valid(ev.column("item_id")))
    cust = ev.column("customer_id").cast(pa.string()).to_numpy(zero_copy_only=False)
    users, uidx = np.unique(cust, return_inverse=True)
    items = np.asarray(
        [item_index[i] for i in ev.column("item_id").cast(pa.string()).to_pylist()]
    )
    w = np.asarray(
        [WEIGHTS[t] for t in ev.column("type").cast(pa.string()).to_pylist()],
        dtype=np.float32,
    )
    mat = csr_matrix((w, (uidx, items)), shape=(len(users), n_items))
    mat.sum_duplicates()
    mat.data = np.minimum(mat.data, 1.0)
    model = CosineRecommender(K=40)
    model.fit(mat, show_progress=False)
    return model, {u: i for i, u in enumerate(users)}, mat


def quality(
    contacts: int, co_purchase: bool, sample: int, seed: int, config: dict | None = None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = datagen.generate(contacts, seed=seed, co_purchase=co_purchase)
    train, held = split_last_orders(data.events)
    _log(f"data: {data.events.num_rows:,} events, {len(held):,} contacts held out")
    engine = Engine(result_cache_size=0)
    items = data.items.set_column(
        data.items.schema.get_field_index("in_stock"),
        "in_stock",
        pa.array(np.ones(data.items.num_rows, dtype=bool)),
    )
    engine.load_items(items)
    engine.load_contacts(data.contacts)
    engine.load_events(train)
    stats = engine.rebuild_recommendations({"window_days": 365, **(config or {})})
    history = _history(train)
    rng = np.random.default_rng(seed)
    ids = sorted(c for c in held if c in history)
    chosen = [ids[i] for i in rng.permutation(len(ids))[:sample]]
    item_ids = data.items.column("item_id").to_pylist()
    item_index = {s: i for i, s in enumerate(item_ids)}
    knn = _knn(train, len(item_ids), item_index)
    bought = _bought(train)
    methods = {
        "popular": lambda c: engine.recommend("popular", customer_id=c),
        "related": lambda c: engine.recommend(
            "related", item_ids=history[c][:3], customer_id=c
        ),
        "personal": lambda c: engine.recommend("personal", customer_id=c),
    }
    if knn is not None:
        model, users, mat = knn

        def item_knn(c: str) -> list[tuple[str, float]]:
            u = users.get(c)
            if u is None:
                return []
            skip = bought.get(c, set())
            ids_, scores = model.recommend(
                u, mat[u], N=10 + len(skip), filter_already_liked_items=False
            )
            out = [(item_ids[i], float(s)) for i, s in zip(ids_, scores, strict=True)]
            return [x for x in out if x[0] not in skip][:10]

        methods["item-kNN (implicit)"] = item_knn
    results: dict[str, dict[str, float]] = {}
    for name, fn in methods.items():
        hits, recall = 0, 0.0
        t1 = time.perf_counter()
        for c in chosen:
            got = {i for i, _ in fn(c)}
            found = len(got & held[c])
            hits += found > 0
            recall += found / len(held[c])
        n = max(len(chosen), 1)
        results[name] = {
            "hit_rate@10": round(hits / n, 4),
            "recall@10": round(recall / n, 4),
            "ms_per_contact": round((time.perf_counter() - t1) * 1000 / n, 3),
        }
        _log(f"{name:22} {results[name]}")
    return {
        "bench": "recs-quality",
        "contacts": contacts,
        "co_purchase": co_purchase,
        "events": data.events.num_rows,
        "evaluated": len(chosen),
        "model": {k: stats[k] for k in ("related_pairs", "bytes", "build_seconds")},
        "results": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _bought(train: pa.Table) -> dict[str, set[str]]:
    orders = train.filter(pc.equal(train.column("type").cast(pa.string()), "order"))
    cust = orders.column("customer_id").cast(pa.string()).to_pylist()
    item = orders.column("item_id").cast(pa.string()).to_pylist()
    out: dict[str, set[str]] = {}
    for c, i in zip(cust, item, strict=True):
        out.setdefault(c, set()).add(i)
    return out


def _percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1e6
    return {
        "p50_us": round(float(np.percentile(arr, 50)), 1),
        "p99_us": round(float(np.percentile(arr, 99)), 1),
        "max_us": round(float(arr.max()), 1),
    }


def perf(contacts: int, lookups: int, use_grpc: bool, seed: int) -> dict[str, Any]:
    data = datagen.generate(contacts, seed=seed, co_purchase=True)
    engine = Engine(result_cache_size=0)
    engine.load_items(data.items)
    engine.load_contacts(data.contacts)
    engine.load_events(data.events)
    n_events = data.events.num_rows
    item_ids = data.items.column("item_id").to_pylist()
    customer_ids = data.contacts.column("customer_id").to_pylist()
    del data
    import gc

    gc.collect()
    rss0 = _current_rss_mb()
    with _PeakRss() as peak:
        t0 = time.perf_counter()
        stats = engine.rebuild_recommendations()
        build_s = time.perf_counter() - t0
    _log(
        f"build {build_s:.2f} s, model {stats['bytes'] / 1e6:.1f} MB: {stats['timings']}"
    )
    rng = np.random.default_rng(seed)
    carts = [
        [item_ids[j] for j in rng.integers(0, len(item_ids), 3)] for _ in range(lookups)
    ]
    people = [customer_ids[j] for j in rng.integers(0, len(customer_ids), lookups)]
    out: dict[str, Any] = {
        "bench": "recs-perf",
        "load_average": [round(x, 2) for x in __import__("os").getloadavg()],
        "contacts": contacts,
        "events": n_events,
        "items": len(item_ids),
        "build_seconds": round(build_s, 3),
        "build_timings": stats["timings"],
        "model_bytes": stats["bytes"],
        "rss_before_build_mb": round(rss0, 1),
        "rss_peak_during_build_mb": round(peak.peak, 1),
        "rss_after_build_mb": round(_current_rss_mb(), 1),
        "basket_entries": stats["basket_entries"],
    }
    for name, call in (
        ("related_3_items", lambda i: engine.recommend("related", item_ids=carts[i], customer_id=people[i])),
        ("personal", lambda i: engine.recommend("personal", customer_id=people[i])),
        ("popular_filtered", lambda i: engine.recommend("popular", filters='colour = "red", price < 5000', customer_id=people[i])),
    ):  # fmt: skip
        for i in range(min(lookups, 1000)):  # warm-up
            call(i)
        samples, cpu = [], []
        for i in range(lookups):
            c = time.thread_time()
            t = time.perf_counter()
            call(i)
            samples.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        # wall time, and the thread's CPU time (what a loaded shared machine cannot
        # inflate by descheduling us)
        out[name] = {
            **_percentiles(samples),
            **{f"cpu_{k}": v for k, v in _percentiles(cpu).items()},
        }
        _log(f"{name:18} {out[name]}")
    if use_grpc:
        out["grpc_batch_1000"] = _grpc_batch(engine, customer_ids, rng)
        _log(f"grpc batch 1000     {out['grpc_batch_1000']}")
    return out


class _GcPauses:
    """The garbage collector's pauses in this process (``gc.callbacks``): total and
    longest per call, and how many full (generation 2) collections ran."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.full = 0
        self._t = 0.0

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        pause = time.perf_counter() - self._t
        self.total += pause
        self.longest = max(self.longest, pause)
        self.full += info.get("generation") == 2

    def reset(self) -> None:
        self.total = self.longest = 0.0
        self.full = 0

    def __enter__(self) -> _GcPauses:
        import gc

        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._cb)


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms_stats(name: str, values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {
        f"{name}p50_ms": round(float(np.percentile(arr, 50)), 2),
        f"{name}p99_ms": round(float(np.percentile(arr, 99)), 2),
        f"{name}max_ms": round(float(arr.max()), 2),
    }


def _batch_calls(
    client, customer_ids: list[str], rng, calls: int, server_pid: int | None = None,
    server_time: list[float] | None = None, arrays: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``calls`` RecommendBatch calls of 1,000 random contacts (``personal``, limit 10)
    after 5 warm-up calls: wall, this process's CPU, GC pauses in this process, and the
    server's CPU (a server process) or its handler time (an in-process server)."""
    samples: dict[str, list[float]] = {
        k: [] for k in ("", "cpu_", "gc_", "server_cpu_", "server_")
    }
    full_gcs = 0
    with _GcPauses() as gcp:
        for n in range(calls + 5):
            batch = [customer_ids[j] for j in rng.integers(0, len(customer_ids), 1000)]
            gcp.reset()
            if server_time is not None:
                server_time.clear()
            s0 = _proc_cpu_s(server_pid) if server_pid else 0.0
            c = time.process_time()
            t = time.perf_counter()
            if arrays:
                got = client.recommend_batch_arrays("personal", batch, limit=10)[0]
            else:
                got = client.recommend_batch("personal", batch, limit=10)
            wall = time.perf_counter() - t
            cpu = time.process_time() - c
            s1 = _proc_cpu_s(server_pid) if server_pid else 0.0
            assert len(got) == (len(batch) if arrays else len(set(batch)))
            if n < 5:
                continue
            samples[""].append(wall)
            samples["cpu_"].append(cpu)
            samples["gc_"].append(gcp.total)
            full_gcs += gcp.full
            if server_pid:
                samples["server_cpu_"].append(s1 - s0)
            if server_time:
                samples["server_"].append(sum(server_time))
    out: dict[str, Any] = {"calls": calls, "full_gcs_in_client": full_gcs}
    for name, values in samples.items():
        if values:
            out.update(_ms_stats(name, values))
    slow = np.argsort(samples[""])[-max(1, calls // 100) :]
    out["slowest_calls"] = [
        {k or "wall": round(v[i] * 1000, 2) for k, v in samples.items() if v}
        for i in slow.tolist()
    ]
    return out


def _grpc_batch(
    engine: Engine, customer_ids: list[str], rng, calls: int = 200
) -> dict[str, Any]:
    """RecommendBatch against a server in this process (client and server share the
    interpreter: its CPU is the whole call's); the handler's own time is recorded."""
    from segd.server.app import build_app
    from segd.server.client import SegdClient
    from segd.server.settings import Settings

    app = build_app(
        Settings(address="127.0.0.1:0", in_memory=True), engine, serving=True
    )
    handler_s: list[float] = []
    encoded = engine.recs.recommend_batch_encoded

    def timed(*args: Any, **kwargs: Any) -> bytes:
        t = time.perf_counter()
        try:
            return encoded(*args, **kwargs)
        finally:
            handler_s.append(time.perf_counter() - t)

    engine.recs.recommend_batch_encoded = timed
    app.server.start()
    try:
        with SegdClient(f"127.0.0.1:{app.port}") as client:
            return _batch_calls(client, customer_ids, rng, calls, server_time=handler_s)
    finally:
        del engine.recs.recommend_batch_encoded
        app.stop(0).wait(5)


def grpc_server_process(contacts: int, calls: int, seed: int) -> dict[str, Any]:
    """RecommendBatch of 1,000 contacts against ``python -m segd.server --demo N`` with
    its default settings (what a backend talks to): client and server in separate
    processes; the server's CPU per call from /proc."""
    import gc
    import os
    import re
    import subprocess
    import tempfile

    from segd.server.client import SegdClient

    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "server.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
                 "--demo", str(contacts)],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
            )  # fmt: skip
        try:
            port = None
            end = time.monotonic() + 900
            while port is None and time.monotonic() < end:
                m = re.search(r"msg=ready .*\bport=(\d+)", open(log_path).read())
                if m:
                    port = int(m.group(1))
                elif proc.poll() is not None:
                    raise RuntimeError(open(log_path).read())
                time.sleep(0.2)
            if port is None:
                raise RuntimeError("server not ready")
            with SegdClient(f"127.0.0.1:{port}") as client:
                while not client.call(
                    client.recs_stub.Status, _status_request(), timeout=10
                ).built:  # the startup build runs in the background
                    time.sleep(0.5)
                ids = [f"c{i:08d}" for i in range(1, contacts + 1)]
                client.recommend("personal", customer_id=ids[-1])  # the ids are known
                rng = np.random.default_rng(seed)
                out: dict[str, Any] = {
                    "server": "python -m segd.server --demo N (default settings)",
                    "tracked_objects_in_client": len(gc.get_objects()),
                }
                # the dict API (a list and 10 tuples per contact), the flat arrays,
                # then the dict API again after the client froze its startup objects
                # out of the collector (what the server does after its load)
                out["dict"] = _batch_calls(client, ids, rng, calls, proc.pid)
                out["arrays"] = _batch_calls(
                    client, ids, rng, calls, proc.pid, None, True
                )
                gc.collect()
                gc.freeze()
                try:
                    out["dict_client_frozen"] = _batch_calls(
                        client, ids, rng, calls, proc.pid
                    )
                finally:
                    gc.unfreeze()
            out["server_log_tail"] = open(log_path).read().splitlines()[-3:]
            return out
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status_request() -> Any:
    from segd.v1 import recommendations_pb2

    return recommendations_pb2.RecsStatusRequest()


def build(contacts: int, seed: int, repeat: int) -> dict[str, Any]:
    """Model build time (wall and process CPU), per-step timings, RSS and model size on
    the cached bench dataset (``segd.bench.dataset``: the files every engine loads)."""
    import gc
    import os

    from segd.bench.dataset import ensure_dataset

    data, _ = ensure_dataset(contacts, seed)
    t0 = time.perf_counter()
    engine = Engine(result_cache_size=0)
    data.load_into(engine)
    load_s = time.perf_counter() - t0
    gc.collect()
    _log(f"loaded {data.contacts:,} contacts, {data.events:,} events in {load_s:.1f} s")
    runs = []
    for _ in range(repeat):
        engine.recs.model = None  # the previous model's memory goes first
        gc.collect()
        rss0 = _current_rss_mb()
        with _PeakRss() as peak:
            c0 = time.process_time()
            t1 = time.perf_counter()
            stats = engine.rebuild_recommendations()
            wall = time.perf_counter() - t1
            cpu = time.process_time() - c0
        runs.append(
            {
                "build_seconds": round(wall, 3),
                "build_cpu_seconds": round(cpu, 3),
                "timings": stats["timings"],
                "rss_before_build_mb": round(rss0, 1),
                "rss_peak_during_build_mb": round(peak.peak, 1),
                "build_peak_over_engine_mb": round(peak.peak - rss0, 1),
                "rss_after_build_mb": round(_current_rss_mb(), 1),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
        _log(f"build {runs[-1]}")
    return {
        "bench": "recs-build",
        "contacts": data.contacts,
        "events": data.events,
        "items": data.items,
        "load_seconds": round(load_s, 1),
        "model_bytes": stats["bytes"],
        "related_pairs": stats["related_pairs"],
        "alternative_pairs": stats["alternative_pairs"],
        "basket_entries": stats["basket_entries"],
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segd.bench recs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser(
        "quality", help="hit rate@10 / recall@10 on held-out last orders"
    )
    q.add_argument("--contacts", default="20k")
    q.add_argument("--sample", type=int, default=3000, help="contacts evaluated")
    q.add_argument("--no-co-purchase", action="store_true",
                   help="the demo data without its co-purchase structure")  # fmt: skip
    f = sub.add_parser("perf", help="build time, memory, lookup latency")
    f.add_argument("--contacts", default="100k")
    f.add_argument("--lookups", type=int, default=20_000)
    f.add_argument("--grpc", action="store_true", help="also RecommendBatch over gRPC")
    g = sub.add_parser(
        "grpc", help="RecommendBatch of 1,000 against a server process (--demo N)"
    )
    g.add_argument("--contacts", default="100k")
    g.add_argument("--calls", type=int, default=200)
    b = sub.add_parser(
        "build", help="model build time and memory on the cached bench dataset"
    )
    b.add_argument("--contacts", default="1m")
    b.add_argument("--repeat", type=int, default=1, help="builds, one after another")
    for s in (q, f, b, g):
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--json", action="store_true", help="the JSON record only")
    args = p.parse_args(argv)
    contacts = datagen.parse_scale(args.contacts)
    if args.what == "quality":
        record = quality(contacts, not args.no_co_purchase, args.sample, args.seed)
    elif args.what == "grpc":
        record = grpc_server_process(contacts, args.calls, args.seed)
        record["load_average"] = [round(x, 2) for x in __import__("os").getloadavg()]
    elif args.what == "build":
        record = build(contacts, args.seed, args.repeat)
    else:
        record = perf(contacts, args.lookups, args.grpc, args.seed)
    print(json.dumps(record, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
