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
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced on a background thread at most `depth` items ahead."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
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
