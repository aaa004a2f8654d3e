"""``python -m segd.bench live``: live segments under ingest and time (issue 13).

Loads the bench dataset (``--contacts``, cached as for the query suite), saves
``--segments`` dynamic segments of ~10 conditions each (ten templates in ten variants:
attributes, age, event windows with filters and counts, then-no, aggregates,
days_since), starts the clock at the dataset's ``now`` and measures:

- **ingest**: ``append_events`` batches of ``--batch`` live events (views, carts, orders
  of random contacts at the clock) with the segments kept live, against the same batches
  on an engine without dynamic segments: events/s of each;
- **advance**: one ``advance`` step of ``--step`` seconds (one day by default): seconds,
  time-driven changes logged, changes/s; then (when ``--step`` is not a day) one more
  step of one day, the issue's target;
- **tick**: ``--ticks`` one-second steps, as the server advances: ms per tick;
- **expiry**: the segments replaced by one window condition (``--expiry-days``), one
  step of a day and one of ``--expiry-step`` seconds: scheduled changes/s.

    python -m segd.bench live --contacts 1m
    python -m segd.bench live --contacts 100k --segments 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

DAY = 86_400


def templates(now_s: int, k: int) -> str:
    """The k-th of 100 segments: template k % 10, variant k // 10."""
    v = k // 10
    w = [7, 14, 30, 60, 90][v % 5]
    city = ["Moscow", "Saint Petersburg", "Novosibirsk", "Kazan", "Omsk"][v % 5]
    age = 20 + 3 * v
    t = k % 10
    base = {
        0: f'gender = "m" and age >= {age} and city = "{city}" and email_subscribed = '
        f"true and view() count >= 2 in last {w} days and orders_count >= 1 and "
        f"days_since_last_order <= {w * 3} and not email_open() in last {w} days and "
        f"rating >= {v % 5} and search() in last {w * 2} days",
        1: f"add_to_cart() in last {w} days then no order within {max(1, w // 7)} days "
        f"and email_subscribed = true and age between {age} and {age + 20} and city != "
        f'"{city}" and not order() in last {w} days and view() count >= 3 in last '
        f'{w} days and rating >= 1 and gender = "f" and revenue >= 0 and '
        f"email_open() in last {w * 3} days",
        2: f"days_since_last_order between {w} and {w * 4} and orders_count >= 2 and "
        f'revenue >= {1000 * (v + 1)} and not order() in last {w} days and gender = "f" '
        f'and age >= {age} and email_subscribed = true and city in ("{city}", '
        f'"Moscow") and view() in last {w * 2} days and rating <= 4',
        3: f"view() count >= {2 + v % 3} in last {w} days and add_to_cart() in last "
        f"{w} days and not order() in last {w} days and age < {age + 30} and "
        f'email_subscribed = true and gender = "m" and rating >= 2 and '
        f"orders_count >= 1 and days_since_last_visit <= {w} and search() in last "
        f"{w * 2} days",
        4: f"email_open() in last {w} days and not email_click() in last {w} days and "
        f'city = "{city}" and age >= {age} and orders_count = 0 and view() in last '
        f'{w * 2} days and rating >= 1 and email_subscribed = true and gender = "m" '
        f"and add_to_favorites() in last {w * 3} days",
        5: f"ad_click() count >= 2 in last {w} days and not order() in last {w} days "
        f"and ad_view() count >= 3 in last {w} days and age between {age} and "
        f'{age + 15} and city != "{city}" and rating >= 1 and email_subscribed = true '
        f'and gender = "f" and view() in last {w} days and orders_count <= 3',
        6: f"orders_count >= 3 and revenue >= {5000 * (v + 1)} and "
        f"days_since_last_order <= {w} and order() count >= 2 in last {w * 4} days and "
        f'age >= {age} and city = "{city}" and email_subscribed = true and rating >= 3 '
        f"and view() in last {w} days and not remove_from_cart() in last {w} days",
        7: f"search() count >= 2 in last {w} days and view() count >= 2 in last {w} "
        f"days and not add_to_cart() in last {w} days and age >= {age} and "
        f'gender = "m" and email_subscribed = true and city != "{city}" and '
        f"rating >= 2 and orders_count >= 0 and days_since_last_visit <= {w}",
        8: f"not view() in last {w} days and orders_count >= 1 and age >= {age} and "
        f'email_subscribed = true and city = "{city}" and days_since_last_order >= '
        f'{w} and rating >= 1 and gender = "f" and not order() in last {w * 2} days '
        f"and email_open() in last {w * 4} days",
        9: f"(view() in last {w} days or search() in last {w} days) and "
        f"add_to_favorites() in last {w * 2} days and age between {age} and "
        f'{age + 25} and city in ("{city}", "Kazan") and email_subscribed = true and '
        f"rating >= 1 and orders_count >= 1 and revenue >= 500 and "
        f"days_since_last_order <= {w * 6}",
    }[t]
    return base


def _batches(engine: Any, n: int, size: int, now_s: int, seed: int) -> list:
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ids = engine.customer_ids(np.arange(engine.store.n_contacts, dtype=np.uint32))
    ids = np.array(ids, dtype=object)
    types = np.array(["view", "view", "view", "add_to_cart", "order", "search"])
    out = []
    for b in range(n):
        who = ids[rng.integers(0, len(ids), size)]
        kind = types[rng.integers(0, len(types), size)]
        out.append(
            pa.table(
                {
                    "customer_id": pa.array(who.tolist(), pa.string()),
                    "type": pa.array(kind.tolist(), pa.string()),
                    "ts": pa.array(np.full(size, now_s + b, np.int64)),
                    "amount": pa.array(
                        np.where(kind == "order", 100.0, np.nan), mask=kind != "order"
                    ),
                }
            )
        )
    return out


def run(args: argparse.Namespace) -> dict:
    from segd import Engine
    from segd.bench.dataset import ensure_dataset

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    data, _ = ensure_dataset(args.contacts_n, args.seed)
    now_s = int(data.now.timestamp())
    say(f"loading {data.contacts:,} contacts, {data.events:,} events")
    t0 = time.perf_counter()
    engine = Engine(result_cache_size=0)
    data.load_into(engine)
    load_s = time.perf_counter() - t0
    queries = [templates(now_s, k) for k in range(args.segments)]
    for k, q in enumerate(queries):
        engine.create_segment(f"live{k:03d}", q)
    conds = [q.count(" and ") + 1 for q in queries]
    t0, c0 = time.perf_counter(), time.process_time()
    engine.advance(now_s)
    first_s = time.perf_counter() - t0
    first_cpu = time.process_time() - c0
    members = sum(engine.members(f"live{k:03d}").count() for k in range(args.segments))
    say(
        f"clock started: {first_s:.2f} s ({first_cpu:.2f} s CPU), {members:,} "
        "memberships"
    )

    # ingest with the segments live vs. a plain engine
    batches = _batches(engine, args.batches, args.batch, now_s, args.seed)
    events = args.batches * args.batch
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        engine.append_events(b)
    live_s = time.perf_counter() - t0
    live_cpu = time.process_time() - c0
    changes_ingest = engine.changes_position
    big = _batches(engine, 1, args.big_batch, now_s + args.batches, args.seed + 1)[0]
    t0, c0 = time.perf_counter(), time.process_time()
    engine.append_events(big)
    big_s = time.perf_counter() - t0
    big_cpu = time.process_time() - c0
    say(
        f"ingest, one batch of {args.big_batch:,}: {args.big_batch / big_s:,.0f} "
        f"events/s ({args.big_batch / big_cpu:,.0f} per CPU s)"
    )
    plain = Engine(result_cache_size=0)
    plain.store = engine.store  # same data; no live segments on this one
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        plain.append_events(b)
    plain_s = time.perf_counter() - t0
    plain_cpu = time.process_time() - c0
    say(
        f"ingest: {events / live_s:,.0f} events/s live ({events / live_cpu:,.0f} per "
        f"CPU s), {events / plain_s:,.0f} plain ({events / plain_cpu:,.0f} per CPU s)"
    )

    # ticks of one second, as the server advances
    clock = now_s + args.batches + 2
    engine.advance(clock)  # the ingested events enter their windows (not timed)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.ticks):
        engine.advance(clock + 1 + i)
    tick_ms = (time.perf_counter() - t0) * 1000 / max(1, args.ticks)
    tick_cpu_ms = (time.process_time() - c0) * 1000 / max(1, args.ticks)
    clock += args.ticks
    say(f"tick: {tick_ms:.2f} ms ({tick_cpu_ms:.2f} ms CPU) per one-second advance")

    # one big step
    before = engine.changes_position
    t0 = time.perf_counter()
    engine.advance(clock + args.step)
    step_s = time.perf_counter() - t0
    step_changes = engine.changes_position - before
    say(
        f"advance {args.step} s: {step_s:.2f} s, {step_changes:,} changes, "
        f"{step_changes / step_s:,.0f} changes/s"
    )
    day_s, day_changes, day_cpu = step_s, step_changes, None
    if args.step != DAY:  # the target is a one-day step
        before = engine.changes_position
        t0, c0 = time.perf_counter(), time.process_time()
        engine.advance(engine.clock + DAY)
        day_s = time.perf_counter() - t0
        day_cpu = time.process_time() - c0  # this process's CPU: less load-dependent
        day_changes = engine.changes_position - before
        say(
            f"advance one day: {day_s:.2f} s ({day_cpu:.2f} s CPU), {day_changes:,} "
            f"changes, {day_changes / day_s:,.0f} changes/s"
        )
    # exactness spot check at the end: a few segments against a fresh evaluation
    for k in range(0, args.segments, max(1, args.segments // 5)):
        name = f"live{k:03d}"
        fresh = engine.segment(queries[k], now=engine.clock, cache=False)
        assert engine.members(name).count() == fresh.count(), name
    # time-driven expiry alone: one window condition, one day
    for k in range(args.segments):
        engine.delete_segment(f"live{k:03d}")
    engine.create_segment("expiry", f"view() in last {args.expiry_days} days")
    start = engine.changes_position
    t0, c0 = time.perf_counter(), time.process_time()
    engine.advance(engine.clock + DAY)
    expiry_s = time.perf_counter() - t0
    expiry_cpu = time.process_time() - c0
    expiry_changes = engine.changes_position - start
    say(
        f"expiry: {expiry_changes:,} changes in {expiry_s:.2f} s ({expiry_cpu:.2f} s "
        f"CPU) = {expiry_changes / expiry_s:,.0f} changes/s"
    )
    start = engine.changes_position
    t0, c0 = time.perf_counter(), time.process_time()
    engine.advance(engine.clock + args.expiry_step)
    long_s = time.perf_counter() - t0
    long_cpu = time.process_time() - c0
    long_changes = engine.changes_position - start
    say(
        f"expiry, {args.expiry_step} s step: {long_changes:,} changes in "
        f"{long_s:.2f} s ({long_cpu:.2f} s CPU) = "
        f"{long_changes / long_s:,.0f} changes/s"
    )
    fresh = engine.segment(
        f"view() in last {args.expiry_days} days", now=engine.clock, cache=False
    )
    assert engine.members("expiry").count() == fresh.count(), "expiry"
    return {
        "expiry_query": f"view() in last {args.expiry_days} days",
        "expiry_changes": expiry_changes,
        "expiry_s": round(expiry_s, 3),
        "expiry_changes_per_s": round(expiry_changes / expiry_s),
        "expiry_cpu_s": round(expiry_cpu, 3),
        "expiry_step": args.expiry_step,
        "expiry_step_changes": long_changes,
        "expiry_step_s": round(long_s, 3),
        "expiry_step_changes_per_s": round(long_changes / long_s),
        "expiry_step_cpu_s": round(long_cpu, 3),
        "contacts": engine.store.n_contacts,
        "events": engine.store.n_events,
        "segments": args.segments,
        "conditions_per_segment": round(sum(conds) / len(conds), 1),
        "load_s": round(load_s, 1),
        "clock_start_s": round(first_s, 2),
        "clock_start_cpu_s": round(first_cpu, 2),
        "memberships": members,
        "ingest_events": events,
        "ingest_live_events_per_s": round(events / live_s),
        "ingest_live_events_per_cpu_s": round(events / live_cpu),
        "ingest_plain_events_per_cpu_s": round(events / plain_cpu),
        "ingest_big_batch_events_per_cpu_s": round(args.big_batch / big_cpu),
        "tick_cpu_ms": round(tick_cpu_ms, 2),
        "ingest_plain_events_per_s": round(events / plain_s),
        "ingest_changes": changes_ingest,
        "ingest_big_batch": args.big_batch,
        "ingest_big_batch_events_per_s": round(args.big_batch / big_s),
        "tick_ms": round(tick_ms, 2),
        "step_s": args.step,
        "advance_s": round(step_s, 3),
        "advance_changes": step_changes,
        "advance_changes_per_s": round(step_changes / step_s) if step_s else None,
        "advance_day_s": round(day_s, 3),
        "advance_day_changes": day_changes,
        "advance_day_cpu_s": None if day_cpu is None else round(day_cpu, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from segd.datagen import parse_scale

    p = argparse.ArgumentParser(prog="python -m segd.bench live", description=__doc__)
    p.add_argument("--contacts", default="1m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segments", type=int, default=100)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--big-batch", type=int, default=100_000)
    p.add_argument("--expiry-days", type=int, default=7)
    p.add_argument("--expiry-step", type=int, default=30 * DAY)
    p.add_argument("--ticks", type=int, default=20)
    p.add_argument("--step", type=int, default=DAY)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.contacts_n = parse_scale(args.contacts)
    result = run(args)
    print(json.dumps(result, indent=2))
    return 0
