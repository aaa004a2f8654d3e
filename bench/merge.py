"""``python -m segd.bench merge``: identity merges and ingest by link (issue 12).

    python -m segd.bench merge --contacts 2m            # the three measurements
    python -m segd.bench merge --contacts 200k --json   # the JSON record only

1. *Merge latency*: pairs of contacts with ``--events-per-contact`` events each (views,
   carts and orders with order ids) in an engine of ``--contacts`` contacts with
   ``--background`` events per contact; each ``Engine.merge`` timed (median, p95, max).
2. *Merges per second* of small contacts (the background's ~5 events each), merged one
   after another (one ``Engine.merge`` each), then as many again by ``merge_many`` in
   batches of 1,000 pairs; wall and CPU time of this process.
3. *Ingest by link vs by customer_id*: the same batches of live events, once naming
   contacts by customer_id, once by a ``device_id`` linked to them beforehand; then new
   contacts: by customer_ids never seen, and by device ids never seen (each new device
   creates a contact ``device_id:<value>`` and its link).

In memory (no log): the merge's own cost, not the fsync's. The contact-major indexes are
built before timing (the first query or merge after a bulk load builds them once).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

T0 = 1_735_689_600


def _scale(text: str) -> int:
    from segd.datagen import parse_scale

    return parse_scale(text)


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in numbers.tolist()], pa.string())


def _events(
    cids: np.ndarray, rng: np.random.Generator, prefix: str = "c", live: bool = False
) -> pa.Table:
    """Events of the given contact numbers: 70% views, 20% carts, 10% order lines, over
    180 days (`live`: in the second after them, as live traffic arrives)."""
    n = len(cids)
    kind = rng.random(n)
    types = np.where(kind < 0.7, "view", np.where(kind < 0.9, "add_to_cart", "order"))
    order = types == "order"
    codes = rng.integers(0, 1 << 40, n)
    return pa.table(
        {
            "customer_id": _ids(prefix, cids),
            "ts": pa.array(
                np.full(n, T0 + 180 * 86_400)
                if live
                else T0 + rng.integers(0, 180 * 86_400, n),
                pa.int64(),
            ),
            "type": pa.array(types.tolist(), pa.string()),
            "item_id": _ids("i", rng.integers(0, 5000, n)),
            "amount": pa.array(np.where(order, 10.0, np.nan), mask=~order),
            "order_id": pa.array(
                [
                    f"o{c}" if o else None
                    for c, o in zip(codes.tolist(), order.tolist(), strict=True)
                ],
                pa.string(),
            ),
        }
    )


def build(contacts: int, background: int, big_pairs: int, per_contact: int, seed: int):
    """An engine: `contacts` contacts with ~`background` events each; the first
    2 * `big_pairs` contacts get `per_contact` events each."""
    from segd import Engine

    rng = np.random.default_rng(seed)
    eng = Engine()
    chunks = []
    step = 2_000_000
    total = contacts * background
    for start in range(0, total, step):
        k = min(step, total - start)
        # every contact has an event (the first `contacts` rows name each once)
        first = np.arange(start, min(start + k, contacts))
        rest = rng.integers(0, contacts, k - len(first))
        chunks.append(_events(np.concatenate([first, rest]), rng))
    big = np.repeat(np.arange(2 * big_pairs), per_contact)
    chunks.append(_events(big, rng))
    for chunk in chunks:
        eng.load_events(chunk)
    n = eng.store.n_contacts
    for log in eng.store.logs.values():
        log.contact_index(n)
    return eng


def merge_latency(eng, pairs: int) -> dict:
    times = []
    for p in range(pairs):
        t = time.perf_counter()
        eng.merge(f"c{2 * p}", f"c{2 * p + 1}")
        times.append((time.perf_counter() - t) * 1000)
    arr = np.array(times)
    # The first merges after a load allocate per log the origin column (4 bytes a
    # row) and the slot table's explicit blocks, and the redirect array: one-time
    # costs, shown apart from the steady state.
    warm = arr[3:] if len(arr) > 6 else arr
    return {
        "merges": pairs,
        "median_ms": round(float(np.median(arr)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "max_ms": round(float(arr.max()), 3),
        "first_ms": [round(float(x), 3) for x in arr[:3]],
        "after_first_3": {
            "median_ms": round(float(np.median(warm)), 3),
            "p95_ms": round(float(np.percentile(warm, 95)), 3),
            "max_ms": round(float(warm.max()), 3),
        },
    }


def merges_per_second(eng, first: int, count: int, batch: int = 0) -> dict:
    """`count` merges of small contacts, one ``Engine.merge`` call each (`batch` 0) or
    ``Engine.merge_many`` calls of `batch` pairs. Wall and CPU time (this process):
    on a shared machine the CPU rate is the one that does not depend on the others."""
    pairs = [(f"c{first + 2 * k}", f"c{first + 2 * k + 1}") for k in range(count)]
    t, c = time.perf_counter(), time.process_time()
    if batch:
        for i in range(0, count, batch):
            eng.merge_many(pairs[i : i + batch])
    else:
        for survivor, merged in pairs:
            eng.merge(survivor, merged)
    s, cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "merges": count,
        "batch": batch or None,
        "seconds": round(s, 3),
        "merges_per_s": round(count / s),
        "cpu_seconds": round(cpu, 3),
        "merges_per_cpu_s": round(count / cpu) if cpu > 0 else None,
    }


def ingest_by_link(eng, batches: int, rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = eng.store.n_contacts
    targets = [rng.integers(0, n, rows) for _ in range(batches)]
    # link a device to every contact named in the batches (not timed)
    linked = np.unique(np.concatenate(targets))
    for c in linked.tolist():
        eng.link(eng.store.contacts.ids.decode_one(c), "device_id", f"d{c}")
    out = {}
    for mode in ("customer_id", "device_id", "new_customer_id", "new_device_id"):
        tables = []
        for b, cids in enumerate(targets):
            t = _events(cids, rng, live=True)
            if mode == "new_customer_id":
                t = t.set_column(0, "customer_id", _ids(f"new{b}-", cids))
            elif mode != "customer_id":
                prefix = "d" if mode == "device_id" else f"fresh{b}-"
                t = t.drop_columns(["customer_id"]).append_column(
                    "device_id", _ids(prefix, cids)
                )
            tables.append(t)
        t0, c0 = time.perf_counter(), time.process_time()
        for t in tables:
            eng.append_events(t)
        s, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[mode] = {
            "rows_per_s": round(batches * rows / s),
            "seconds": round(s, 3),
            "rows_per_cpu_s": round(batches * rows / cpu),
        }
    for mode, base in (
        ("device_id", "customer_id"),
        ("new_device_id", "new_customer_id"),
    ):
        ratio = out[base]["rows_per_s"] / out[mode]["rows_per_s"]
        out[mode]["slowdown_vs_" + base] = round(ratio, 2)
        cpu_ratio = out[base]["rows_per_cpu_s"] / out[mode]["rows_per_cpu_s"]
        out[mode]["cpu_slowdown_vs_" + base] = round(cpu_ratio, 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m segd.bench merge",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--contacts", default="200k")
    p.add_argument("--background", type=int, default=5, help="events per contact")
    p.add_argument("--events-per-contact", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=50, help="big merges timed")
    p.add_argument("--small-merges", type=int, default=20_000)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    contacts = _scale(args.contacts)
    if contacts < 2 * (args.pairs + 2 * args.small_merges) + 2:
        p.error("--contacts too small for --pairs and --small-merges")
    t = time.perf_counter()
    eng = build(
        contacts, args.background, args.pairs, args.events_per_contact, args.seed
    )
    built = time.perf_counter() - t
    record = {
        "contacts": contacts,
        "events": eng.store.n_events,
        "build_s": round(built, 1),
        "merge_1000_plus_1000": merge_latency(eng, args.pairs),
        "small_merges": merges_per_second(eng, 2 * args.pairs, args.small_merges),
        "small_merges_batched": merges_per_second(
            eng, 2 * (args.pairs + args.small_merges), args.small_merges, 1000
        ),
        "ingest": ingest_by_link(eng, args.batches, args.batch_rows, args.seed + 1),
    }
    if args.json:
        print(json.dumps(record))
    else:
        print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
