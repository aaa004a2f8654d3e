"""What one evaluation carries: the store, `now`, the deadline, scratch space and memos."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from segd.errors import DeadlineExceeded
from segd.native.bitset import bitmap_to_bitset, bitset_to_bitmap
from segd.native.eventscan import ScanScratch
from segd.store import Store

if TYPE_CHECKING:
    from segd.explain import ProfileStep

_local = threading.local()
SAMPLE_SIZE = 2048  # contacts looked at to estimate a condition's selectivity


def thread_scratch() -> ScanScratch:
    """This thread's counters for the event kernels (gRPC workers evaluate concurrently)."""
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = ScanScratch()
    return s


def thread_seen_bits(n_contacts: int) -> np.ndarray:
    """This thread's all-zero bitset of at least `n_contacts` bits, for kernels that
    set bits and clear them again before returning (``bitset.distinct_to_bitmap``).
    Grown by half at a time; np.zeros maps untouched pages lazily."""
    words = getattr(_local, "seen", None)
    need = (n_contacts + 63) >> 6
    if words is None or len(words) < need:
        size = need if words is None else max(need, len(words) + (len(words) >> 1))
        words = _local.seen = np.zeros(size, dtype=np.uint64)
    return words


def store_state(store: Store) -> tuple:
    """What a kept operand order depends on besides the moment: the store, its
    contacts, every event log's rows and version (``AndNode._unrestricted``,
    ``pairs._decide_order``). An order never changes an answer, only its cost."""
    return (
        id(store),
        store.n_contacts,
        tuple((log.n, log._version) for log in store.logs.values()),
    )


_samples: dict[int, np.ndarray] = {}  # contact count -> its sample (read-only)


def _even_sample(n: int) -> np.ndarray:
    """The sample of ``sample_cids`` for `n` contacts, computed once per count (an
    ``np.unique`` per query was a fixed cost of the estimates)."""
    hit = _samples.get(n)
    if hit is None:
        k = min(n, SAMPLE_SIZE)
        hit = np.unique(np.linspace(0, max(0, n - 1), num=k).astype(np.uint32))
        hit.flags.writeable = False
        if len(_samples) >= 4:
            _samples.clear()
        _samples[n] = hit
    return hit


@dataclass
class Context:
    """One evaluation: read-only view of the store at `now_s`."""

    store: Store
    now_s: float
    deadline: float | None = None
    profile: list[ProfileStep | None] | None = None  # steps as they run (profile)
    memo: dict[str, BitMap] = field(default_factory=dict)
    _universe: BitMap | None = None
    _sample: np.ndarray | None = None
    _n: int = -1

    @property
    def n(self) -> int:
        """Contacts of the store; read once: an evaluation holds the read lock, so the
        count cannot change under it (planning asked it ~20 times per query)."""
        if self._n < 0:
            self._n = self.store.n_contacts
        return self._n

    @property
    def universe(self) -> BitMap:
        """Every contact: the complement base of NOT and of "did not happen"."""
        if self._universe is None:
            u = BitMap()
            if self.n:
                u.add_range(0, self.n)
            u -= self.store.contacts.merged  # merged contacts are no one (identity)
            self._universe = u
        return self._universe

    def sample_cids(self) -> np.ndarray:
        """~2k contact ids spread evenly over all contacts (sorted), for estimates."""
        if self._sample is None:
            self._sample = _even_sample(self.n)
        return self._sample

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded("deadline exceeded while evaluating the segment")

    def words(self) -> np.ndarray:
        """A zeroed bitset with a bit per contact."""
        return np.zeros((self.n + 63) // 64, dtype=np.uint64)

    def to_bitmap(self, words: np.ndarray) -> BitMap:
        """The contacts of a bitset, merged contacts left out (their emptied rows
        could match "orders_count = 0")."""
        out = bitset_to_bitmap(words)
        merged = self.store.contacts.merged
        return out - merged if merged else out

    def candidate_words(self, cand: BitMap | None) -> np.ndarray | None:
        return None if cand is None else bitmap_to_bitset(cand, self.n)

    def candidate_cids(self, cand: BitMap | None) -> np.ndarray | None:
        """Sorted cids of a candidate set, when it is small enough to beat a full scan."""
        if cand is None or len(cand) * 8 > self.n:
            return None
        return np.frombuffer(cand.to_array(), dtype=np.uint32)
