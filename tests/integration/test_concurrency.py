"""Writers streaming events while readers count: a reader never sees half a batch."""

from __future__ import annotations

import threading

from tests.integration.conftest import BASE_TS

BATCH = 250
BATCHES_PER_WRITER = 12
WRITERS = 3
READERS = 4


def batches(writer: int):
    """Each batch: one ``ping`` event for each of BATCH brand-new contacts, so the number
    of contacts with a ping is a multiple of BATCH between batches."""
    for b in range(BATCHES_PER_WRITER):
        yield [
            {"customer_id": f"w{writer}-b{b}-{i}", "ts": BASE_TS + i, "type": "ping"}
            for i in range(BATCH)
        ]


def test_no_torn_reads(srv):
    with srv.client() as c:  # one batch up front: the engine must know the event type
        c.ingest_events([{"customer_id": f"seed-{i}", "ts": BASE_TS, "type": "ping"}
                         for i in range(BATCH)])  # fmt: skip
    errors: list[BaseException] = []
    counts: list[int] = []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            with srv.client() as c:
                res = c.stream_events(batches(w))
                assert res.rows == BATCH * BATCHES_PER_WRITER
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        try:
            with srv.client() as c:
                while not done.is_set():
                    counts.append(c.count("ping()"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    readers = [threading.Thread(target=read) for _ in range(READERS)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    done.set()
    for t in readers:
        t.join(30)
    assert not errors, errors
    total = BATCH * BATCHES_PER_WRITER * WRITERS + BATCH
    assert len(counts) > 10
    torn = [n for n in counts if n % BATCH]
    assert not torn, f"torn reads: {torn[:5]}"
    assert max(counts) <= total
    with srv.client() as c:
        assert c.count("ping()") == total
        assert c.stats()["events_sequence"] == total
