"""A readers-writer lock: many concurrent segment evaluations, one batch applied at a time.

Writers are preferred (a waiting writer stops new readers) so a steady stream of counts
cannot starve ingest. Readers never see half a batch: a batch is applied entirely while the
write lock is held.
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
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
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
