"""Readers evaluating while a writer appends: no torn reads; the RWLock prefers writers.

Each batch gives B new contacts two views (one of them late, so the merge path runs) and
one order. Under the engine's read/write lock every count a reader sees must be the count
after a whole number of batches: `view() count = 2 and order()` is k*B, and
`view() count = 1` (half of a batch applied) is always 0.
"""

from __future__ import annotations

import threading
import time

from segd import Engine
from segd.rwlock import RWLock

BASE = 1_700_000_000
NOW = BASE + 10**6
B = 7  # contacts per batch
BATCHES = 30


def batch(k: int) -> list[dict]:
    rows = []
    for j in range(B):
        cid = f"k{k}_{j}"
        t = BASE + 1000 * k + j
        rows.append({"customer_id": cid, "ts": t, "type": "view", "channel": "web"})
        rows.append(
            {"customer_id": cid, "ts": t - 5000, "type": "view", "channel": None}
        )
        rows.append({"customer_id": cid, "ts": t, "type": "order", "channel": "web"})
    return rows


def test_readers_never_see_half_a_batch() -> None:
    eng = Engine()
    eng.append_events(batch(0))
    seen: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                whole = eng.count("view() count = 2 and order()", NOW)
                half = eng.count("view() count = 1 or (order() and not view())", NOW)
                events = eng.stats()["events"]
                seen.append((whole, half, events))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    for k in range(1, BATCHES):
        eng.append_events(batch(k))
        time.sleep(0.001)
    done.set()
    for t in readers:
        t.join(timeout=30)
    assert not errors, errors
    assert len(seen) > BATCHES
    for whole, half, events in seen:
        assert whole % B == 0 and 1 <= whole // B <= BATCHES
        assert half == 0
        assert events % (3 * B) == 0
    assert eng.count("view() count = 2 and order()", NOW) == BATCHES * B
    assert eng.stats()["events"] == 3 * B * BATCHES


def test_writer_gets_in_while_readers_keep_arriving() -> None:
    lock = RWLock()
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_in.set()
            release_first.wait(10)
        order.append("reader1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader2")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    assert first_in.wait(10)
    tw = threading.Thread(target=writer)
    tw.start()
    deadline = time.monotonic() + 10
    while lock._writers_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lock._writers_waiting == 1
    t2 = threading.Thread(target=late_reader)
    t2.start()
    time.sleep(0.05)
    assert order == []  # reader2 waits behind the waiting writer, not beside reader1
    release_first.set()
    for t in (t1, tw, t2):
        t.join(10)
    assert order == ["reader1 out", "writer", "reader2"]


def test_writer_not_starved_by_overlapping_readers() -> None:
    lock = RWLock()
    stop = threading.Event()
    got_in = threading.Event()
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                reads[0] += 1
                time.sleep(0.002)  # readers overlap: there is always one inside

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    time.sleep(0.02)
    t0 = time.monotonic()
    with lock.write():
        got_in.set()
        waited = time.monotonic() - t0
    stop.set()
    for t in readers:
        t.join(10)
    assert got_in.is_set() and reads[0] > 0
    assert waited < 1.0


def test_write_lock_is_exclusive() -> None:
    lock = RWLock()
    inside = [0]
    peak = [0]

    def writer() -> None:
        for _ in range(50):
            with lock.write():
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 1 and inside[0] == 0


def test_a_polite_writer_lets_readers_in_then_queues_as_preferred() -> None:
    """``write(polite_s=...)``: while one long reader holds the lock, new readers still
    get in (a preferred writer would stop them); once `polite_s` has passed the writer
    queues as preferred and gets in when the readers drain."""
    lock = RWLock()
    release_long = threading.Event()
    long_in = threading.Event()
    order: list[str] = []

    def long_reader() -> None:
        with lock.read():
            long_in.set()
            release_long.wait(10)
        order.append("long out")

    def writer() -> None:
        with lock.write(polite_s=0.3):
            order.append("writer")

    t1 = threading.Thread(target=long_reader)
    t1.start()
    assert long_in.wait(10)
    tw = threading.Thread(target=writer)
    tw.start()
    deadline = time.monotonic() + 10
    while lock._polite_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lock._polite_waiting == 1 and lock._writers_waiting == 0
    t0 = time.monotonic()
    with lock.read():  # a short reader is not stopped by the polite writer
        order.append("short reader")
    assert time.monotonic() - t0 < 0.2
    while lock._writers_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert lock._writers_waiting == 1 and lock._polite_waiting == 0  # now preferred
    got_late = threading.Event()

    def late_reader() -> None:
        with lock.read():
            order.append("late reader")
            got_late.set()

    late = threading.Thread(target=late_reader)
    late.start()
    time.sleep(0.05)
    assert not got_late.is_set()  # stopped behind the preferred writer
    release_long.set()
    for t in (t1, tw, late):
        t.join(10)
    assert order == ["short reader", "long out", "writer", "late reader"]


def test_a_polite_writer_goes_in_between_reads() -> None:
    """Readers that keep overlapping leave gaps: a polite writer takes one of them
    well before its politeness runs out, and is never starved."""
    lock = RWLock()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                time.sleep(0.001)
            time.sleep(0.0005)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    time.sleep(0.02)
    t0 = time.monotonic()
    with lock.write(polite_s=5.0):
        waited = time.monotonic() - t0
        assert lock._readers == 0
    stop.set()
    for t in readers:
        t.join(10)
    assert waited < 5.0
