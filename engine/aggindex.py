"""Value indexes over per-contact numbers: aggregates and numeric attributes.

A threshold condition (``orders_count = 4``, ``revenue >= 500``, ``days_since_last_order
between 52 and 112``, ``age < 30``) over all contacts would scan a whole column. Instead,
each indexed column keeps its present contacts ordered by value (a *sorted permutation*:
``argsort`` of the values, and the values in that order): a range of values is one
contiguous slice of the permutation, found by two binary searches, and its contact ids
go into the result bitset by a nogil kernel (``segd.native.aggindex.mark_ids``). The cost
follows the result, not the column. Measured against a bit-sliced (range-encoded) index and
the scan in bench/test_bench_aggindex.py (BENCHMARKS.md).

Exact under every write, without touching the write path's cost:

* an index is built lazily, on the first query that wants it, from the current arrays;
* every record that changes contacts' data reaches ``Engine._touched`` (appends, upserts,
  merges, late events, replay); the engine's first hook adds those contacts to each built
  index's *dirty* set (a roaring bitmap). A lookup clears the dirty contacts' bits from
  the indexed answer and re-checks them one by one on the current values, as do contacts
  created since the build;
* when the dirty set outgrows ``max(MIN_DIRTY, n / DIRTY_SHARE)`` the next lookup rebuilds;
  a write that touches that many contacts at once drops the indexes outright.

Indexes are not persisted: a snapshot restore or ``Engine.open`` makes a new ``Store``,
whose indexes are rebuilt on first use (one argsort per column, ~0.1 s at 1M contacts),
which is cheaper than keeping a second copy of every column consistent on disk.
Queries hold only the engine's read lock, so a build runs under this module's own lock;
writers (the write lock) exclude every reader, so the dirty sets need no more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from pyroaring import BitMap

from segd.columns import sorted_unique
from segd.native import aggindex as kernels
from segd.native.bitset import cids_to_bitmap

MIN_DIRTY = 4096  # dirty contacts re-checked one by one before a rebuild pays
DIRTY_SHARE = 32  # ... or n / DIRTY_SHARE of them, whichever is more
# An indexed answer larger than n / INDEX_SHARE is left to the column scan: setting bits
# at random costs more per contact than a sequential scan does.
INDEX_SHARE = 2
# An answer of at most n / SORT_SHARE contacts becomes a BitMap by sorting its ids
# instead of through a bitset of the base (at 1M contacts: 10k ids 0.08 ms sorted
# against 0.12 ms through the bitset; 50k ids 0.62 against 0.27).
SORT_SHARE = 64


class SortedIndex:
    """One column's present contacts in value order (immutable once built)."""

    __slots__ = ("owner", "n", "values", "order")

    def __init__(self, owner: object, n: int, values: np.ndarray, order: np.ndarray):
        self.owner = owner  # the column object it was built from (identity check)
        self.n = n  # contacts [0, n) are indexed; later ones are checked one by one
        self.values = values  # float64, ascending: the values the scan kernels compare
        self.order = order  # uint32 cids, order[i] has values[i]

    @classmethod
    def build(
        cls, owner: object, values: np.ndarray, present: np.ndarray | None
    ) -> SortedIndex:
        """Index `values` (any numeric dtype; compared as float64, like the scan
        kernels); `present` (bool or uint8, or None = all) leaves NULLs out, and NaN is
        always left out (it matches no interval)."""
        n = len(values)
        as_float = np.asarray(values, dtype=np.float64)
        keep = ~np.isnan(as_float)
        if present is not None:
            keep &= np.asarray(present[:n], dtype=bool)
        cids = np.flatnonzero(keep).astype(np.uint32)
        kept = as_float[cids]
        perm = np.argsort(kept, kind="stable")
        return cls(
            owner,
            n,
            np.ascontiguousarray(kept[perm]),
            np.ascontiguousarray(cids[perm]),
        )

    def slices(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
        """Positions [a, b) of the values in each closed interval [lo[k], hi[k]]."""
        a = np.searchsorted(self.values, lo, side="left")
        b = np.searchsorted(self.values, hi, side="right")
        return [(int(x), int(y)) for x, y in zip(a, b, strict=True) if y > x]

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.order.nbytes


class ValueIndexes:
    """The value indexes of one store, by column key, with their dirty contacts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[str, SortedIndex] = {}
        self._dirty: dict[str, BitMap] = {}
        self.builds = 0  # how many indexes were (re)built: tests and profiles read it

    def touched(
        self,
        cids: np.ndarray,
        n_contacts: int,
        keys: Callable[[str], bool] | None = None,
    ) -> None:
        """A write changed contacts `cids` (``Engine._touched``, under the write lock) in
        the indexes whose key `keys` accepts (every index when None): only those get
        the contacts as dirty, or are dropped after a bulk write."""
        with self._lock:
            if not self._built or len(cids) == 0:
                return
            hit = [k for k in self._built if keys is None or keys(k)]
            if not hit:
                return
            limit = max(MIN_DIRTY, n_contacts // DIRTY_SHARE)
            if len(cids) > limit:  # a bulk write: rebuild those on their next query
                for key in hit:
                    del self._built[key]
                    self._dirty.pop(key, None)
                return
            # one bitmap for every key (BitMap.update walks an array element by element)
            ids = cids_to_bitmap(sorted_unique(cids))
            for key in hit:
                dirty = self._dirty[key]
                dirty |= ids
                if len(dirty) > limit:
                    del self._dirty[key]
                    del self._built[key]

    def nbytes(self) -> int:
        """Bytes held by the built indexes and their dirty sets (``Store.memory``)."""
        with self._lock:
            total = sum(i.values.nbytes + i.order.nbytes for i in self._built.values())
            dirty = (d.get_statistics() for d in self._dirty.values())
            return total + sum(
                s["n_bytes_array_containers"]
                + s["n_bytes_run_containers"]
                + s["n_bytes_bitset_containers"]
                for s in dirty
            )

    def get(
        self,
        key: str,
        owner: object,
        n: int,
        source: Callable[[], tuple[np.ndarray, np.ndarray | None]],
    ) -> tuple[SortedIndex, np.ndarray]:
        """The index of `key` and the sorted cids to re-check (dirty or newer than it),
        building it from ``source()`` (values[:n], present or None) when missing."""
        with self._lock:
            idx = self._built.get(key)
            dirty = self._dirty.get(key)
            if idx is None or idx.owner is not owner or idx.n > n or dirty is None:
                values, present = source()
                idx = SortedIndex.build(owner, values[:n], present)
                self._built = {**self._built, key: idx}
                self._dirty[key] = dirty = BitMap()
                self.builds += 1
            recheck = BitMap(dirty)
        if idx.n < n:
            recheck.add_range(idx.n, n)
        return idx, np.frombuffer(recheck.to_array(), dtype=np.uint32)

    def count(
        self,
        key: str,
        owner: object,
        n: int,
        source: Callable[[], tuple[np.ndarray, np.ndarray | None]] | None,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> int | None:
        """About how many contacts have a value in some [lo[k], hi[k]]: the length of
        the index's slices (two binary searches per interval), for ordering AND
        operands. Contacts written since the build count with their old value or not
        at all (an estimate). With ``source=None`` only an index already built
        answers (None otherwise); with a source a missing index is built."""
        idx = self._built.get(key)
        if idx is None or idx.owner is not owner or idx.n > n:
            if source is None:
                return None
            idx = self.get(key, owner, n, source)[0]
        spans = idx.slices(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
        return sum(b - a for a, b in spans)

    def memory(self) -> int:
        return sum(i.nbytes for i in self._built.values())

    def clean(
        self,
        key: str,
        owner: object,
        n: int,
        source: Callable[[], tuple[np.ndarray, np.ndarray | None]] | None,
    ) -> SortedIndex | None:
        """The index of `key` when it answers exactly on its own: built (here, from
        `source`, when missing and a source is given), over all `n` contacts and with
        no contact written since its build; None otherwise."""
        idx = self._built.get(key)
        if idx is None or idx.owner is not owner or idx.n != n or self._dirty.get(key):
            if source is None:
                return None
            idx, recheck = self.get(key, owner, n, source)
            if len(recheck):
                return None
        return idx


class Answer(NamedTuple):
    """A condition's exact answer by a value index: positions [a, b) of its sorted
    permutation (``sorted_index.order[a:b]`` are the contacts), and how many in all."""

    sorted_index: SortedIndex
    starts: np.ndarray  # intp
    ends: np.ndarray  # intp
    total: int

    def ids(self) -> np.ndarray:
        """The contacts, in value order (not sorted by id), as one uint32 array."""
        order = self.sorted_index.order
        if len(self.starts) == 0:
            return np.zeros(0, np.uint32)
        if len(self.starts) == 1:
            return order[int(self.starts[0]) : int(self.ends[0])]
        return np.concatenate(
            [
                order[a:b]
                for a, b in zip(self.starts.tolist(), self.ends.tolist(), strict=True)
            ]
        )

    def ids_sorted(self) -> bool:
        """Whether ``ids()`` is ascending: one run of equal values (the permutation is
        a stable argsort of values listed by cid, so a tie keeps cid order)."""
        if len(self.starts) != 1 or self.total == 0:
            return len(self.starts) == 0 or self.total == 0
        a, b = int(self.starts[0]), int(self.ends[0])
        return bool(self.sorted_index.values[a] == self.sorted_index.values[b - 1])


def answer(index: SortedIndex, lo: np.ndarray, hi: np.ndarray) -> Answer:
    """The positions of `index` whose value lies in some closed [lo[k], hi[k]]
    (intervals of ``segd.predicates``: ascending and disjoint)."""
    a = np.searchsorted(index.values, lo, side="left")
    b = np.searchsorted(index.values, hi, side="right")
    keep = b > a
    if not keep.all():
        a, b = a[keep], b[keep]
    return Answer(index, a.astype(np.intp), b.astype(np.intp), int((b - a).sum()))


_scratch = threading.local()


def scratch_bits(n: int) -> np.ndarray:
    """This thread's all-zero bitset of at least `n` bits for ``intersect_slices``
    (which leaves it all zero): allocated once per thread and size, not per query."""
    bits = getattr(_scratch, "bits", None)
    if bits is None or len(bits) * 64 < n:
        bits = _scratch.bits = np.zeros((n + 63) // 64 + 1024, dtype=np.uint64)
    return bits


def intersect(cur: np.ndarray, other: Answer, n: int) -> np.ndarray:
    """The contacts of `cur` (uint32, any order, each once) that are in `other`, in
    `other`'s order (native, through a scratch bitset; see ``intersect_slices``)."""
    return kernels.intersect_slices(
        cur, other.sorted_index.order, other.starts, other.ends, scratch_bits(n)
    )


def sorted_ids(
    indexes: ValueIndexes,
    key: str,
    owner: object,
    n: int,
    source: Callable[[], tuple[np.ndarray, np.ndarray | None]],
    lo: np.ndarray,
    hi: np.ndarray,
    most: int,
) -> np.ndarray | None:
    """The sorted cids whose value lies in some [lo[k], hi[k]] by the index, when
    there are at most `most` of them and no contact needs a re-check (written since
    the build); None otherwise (the caller takes the bitset path of ``fill``)."""
    idx, recheck = indexes.get(key, owner, n, source)
    if len(recheck):
        return None
    spans = idx.slices(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    if sum(b - a for a, b in spans) > most:
        return None
    if not spans:
        return np.zeros(0, np.uint32)
    parts = [idx.order[a:b] for a, b in spans]
    if len(spans) == 1 and idx.values[spans[0][0]] == idx.values[spans[0][1] - 1]:
        return parts[0]  # one value: a stable argsort keeps ties in cid order
    # distinct positions of a permutation: distinct cids, so the sort is strict
    return np.sort(np.concatenate(parts) if len(parts) > 1 else parts[0])


def fill(
    indexes: ValueIndexes,
    key: str,
    owner: object,
    n: int,
    source: Callable[[], tuple[np.ndarray, np.ndarray | None]],
    lo: np.ndarray,
    hi: np.ndarray,
    words: np.ndarray,
    check: Callable[[np.ndarray, np.ndarray], None],
) -> bool:
    """Mark in `words` the contacts whose value lies in some [lo[k], hi[k]] by the
    index; False (nothing marked) when the answer is too large for the index to beat
    the scan. `check(cids, words)` marks those of the given sorted cids that match on
    the current values (the per-candidate scan): it re-decides the dirty contacts."""
    idx, recheck = indexes.get(key, owner, n, source)
    spans = idx.slices(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    if sum(b - a for a, b in spans) > max(MIN_DIRTY, n // INDEX_SHARE):
        return False
    for a, b in spans:
        kernels.mark_ids(idx.order[a:b], words)
    if len(recheck):
        kernels.clear_ids(recheck, words)
        check(recheck, words)
    return True
