"""A readers-writer lock: many concurrent segment evaluations, one batch applied at a time.

Writers are preferred (a waiting writer stops new readers) so a steady stream of counts
cannot starve ingest. Readers never see half a batch: a batch is applied entirely while the
write lock is held.

A writer that can wait (the server's once-a-second clock step) asks politely first
(``write(polite_s=...)``): for up to that long it takes the lock only when no reader
holds it, without stopping new readers. A preferred writer waiting behind one long reader
(a segment save evaluating for a second) stops every short one for that long, which was
what set a server's tail latency; the polite writer lets them through and goes in at the
next moment between reads (on a busy server, within milliseconds), and queues as a
preferred writer only when none comes within `polite_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._polite_waiting = 0  # writers waiting for a moment without readers

    def acquire_read(self) -> None:
        """Take a read hold (``release_read`` gives it back): ``read()`` without the
        context manager's generator, for the microsecond paths (recommendation lookups)."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            # only a writer waits for the readers to drain (readers wait for writers)
            if self._readers == 0 and (self._writers_waiting or self._polite_waiting):
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self, *, polite_s: float = 0.0) -> Iterator[None]:
        """The exclusive hold. With `polite_s` > 0, first wait up to that long for a
        moment with no reader and no writer, letting new readers in meanwhile; then
        wait as a preferred writer (new readers stop)."""
        with self._cond:
            if polite_s > 0 and (self._writer or self._readers):
                self._polite_waiting += 1
                try:
                    self._cond.wait_for(
                        lambda: not (self._writer or self._readers), polite_s
                    )
                finally:
                    self._polite_waiting -= 1
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
