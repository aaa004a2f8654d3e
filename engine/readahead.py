"""Read ahead: produce an iterator's items on a thread of their own, one step ahead of
the consumer.

A bulk load reads and validates a row group (Parquet decoding, decompression, Arrow's
compute kernels: all release the GIL) and then stages it (hashing ids into the load's
maps and splitting by type: nogil kernels). On two cores the two can overlap: while row
group N is staged, row group N + 1 is read. The items and their order are the same as
without the thread; an exception of the producer is raised in the consumer, at the item
where it happened; a consumer that stops early (an invalid row, a closed generator)
stops the producer and waits for it, so no thread outlives the load.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class Backlog:
    """How many produced items wait for the consumer (0 before ``read_ahead`` starts):
    the producer can ask it, from its own thread, whether the consumer is the slower
    side and take more of the work (``ingest.stage_events``)."""

    def __init__(self) -> None:
        self._slots: queue.Queue | None = None

    def __call__(self) -> int:
        slots = self._slots
        return 0 if slots is None else slots.qsize()


def read_ahead(
    items: Iterator[T], depth: int = 1, backlog: Backlog | None = None
) -> Generator[T, None, None]:
    """`items`, produced on a background thread at most `depth` items ahead;
    `backlog`, when given, then counts the items waiting for the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    if backlog is not None:
        backlog._slots = slots
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's `finally` (open files) runs on its own thread

    worker = threading.Thread(target=produce, name="segd-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = slots.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.05)  # unblock a producer waiting to put
            except queue.Empty:
                pass
        worker.join()
