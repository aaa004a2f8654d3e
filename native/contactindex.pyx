"""Contact-major index of one event log: for each contact, its rows in time order (CSR).

The time-ordered log answers "who did X in this window" by scanning the window (or the
postings of X inside it). Inside an AND, once the earlier operands left few candidates, it
is cheaper to visit just those contacts' own rows: contact c's slot ``[a, b)`` of ``rows``
(``Slots``: ~1.3 bytes per contact, see contactindex.pxd) holds its rows, ascending (= time
order), so the window is a binary search.

The index is rebuilt in O(n) (a counting sort) and covers rows ``[0, limit)``; rows appended
later (the "tail") are not in it and are scanned directly, so live ingest never waits for
a rebuild.

Identity merges (segd.identity) patch the index in O(rows moved) instead of rebuilding it:
the survivor's rows (its own plus the merged contact's, re-sorted) are appended at the end
of ``rows`` and the survivor's slot is pointed there (``Slots`` keeps the slots of such a
patched block explicitly).
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

from segd.native._search cimport lower_bound as _lower_bound
from segd.native._types cimport NO_CODE, cid_t, row_t


cdef enum:
    # Visiting a candidate costs two dependent cache misses (its slot, then its rows)
    # once the index outgrows the cache: ~300 ns a candidate at 1M contacts when taken
    # one after the other. The slot of the candidate AHEAD_SLOT places on, and the rows
    # of the one AHEAD_ROWS places on (its slot is in cache by then), are prefetched, so
    # the misses of successive candidates overlap.
    AHEAD_SLOT = 16
    AHEAD_ROWS = 8
    NOT_WIDE = 0


cdef enum:
    RING = 16   # spans computed ahead, kept for the visit (a power of 2 > AHEAD_ROWS)


cdef struct Ahead:
    # the slots of the next candidates, computed when their rows were prefetched
    Py_ssize_t a[RING]
    Py_ssize_t b[RING]


cdef inline void _span_into(const cid_t* cands, Py_ssize_t j, const SlotsC* slots,
                            Ahead* ahead) noexcept nogil:
    """Candidate j's slot into the ring (empty for a contact newer than the index)."""
    cdef cid_t c = cands[j]
    cdef Py_ssize_t a = 0, b = 0
    if c < slots.n:
        slot_span(slots, c, &a, &b)
    ahead.a[j & (RING - 1)] = a
    ahead.b[j & (RING - 1)] = b


cdef inline void _start_ahead(const cid_t* cands, Py_ssize_t n_cand, const SlotsC* slots,
                              Ahead* ahead) noexcept nogil:
    """The slots of the first AHEAD_ROWS candidates (`_prefetch_ahead` does the rest)."""
    cdef Py_ssize_t j
    for j in range(min(n_cand, <Py_ssize_t> AHEAD_ROWS)):
        _span_into(cands, j, slots, ahead)


cdef inline void _prefetch_ahead(const cid_t* cands, Py_ssize_t n_cand, Py_ssize_t j,
                                 const SlotsC* slots, const row_t* rows,
                                 Ahead* ahead) noexcept nogil:
    """Prefetch the slot and the rows of candidates further on (see AHEAD_SLOT); the
    slot of candidate j + AHEAD_ROWS goes into `ahead`, where the visit finds it."""
    cdef cid_t c
    if j + AHEAD_SLOT < n_cand:
        c = cands[j + AHEAD_SLOT]
        if c < slots.n:
            slot_prefetch(slots, c)
    if j + AHEAD_ROWS < n_cand:
        _span_into(cands, j + AHEAD_ROWS, slots, ahead)
        SEGD_SLOT_PREFETCH(&rows[ahead.a[(j + AHEAD_ROWS) & (RING - 1)]])


cdef class Slots:
    """The slot table of a contact-major index: contact c's rows are
    ``rows[a:b]`` with ``(a, b) = slots.span(c)``, for c < ``slots.n`` (see
    contactindex.pxd for the layout: ~1.3 bytes per contact, where a uint32 offsets
    array costs 4).

    Built by `build` (or `from_offsets`, from a plain CSR offsets array and, for a
    patched index, its slot ends) and patched in place by `move_contact`. Kernels read
    it without the GIL through `slot_span`.
    """

    def __cinit__(self):
        self.s.n = 0
        self.s.blocks = NULL
        self.s.counts = NULL
        self.s.wide = NULL
        self.n_wide = 0
        self._blocks = self._counts = self._wide = None

    @staticmethod
    def from_offsets(const uint32_t[::1] offsets, const uint32_t[::1] ends=None):
        """The slots of ``rows[offsets[c]:offsets[c + 1]]`` (or ``rows[offsets[c]:
        ends[c]]`` when `ends` is given) for c < len(offsets) - 1. ValueError when a
        slot ends before it starts."""
        cdef Py_ssize_t n = offsets.shape[0] - 1, c
        cdef bint bad = False
        if n < 0:
            raise ValueError("offsets needs at least one entry")
        if ends is not None and ends.shape[0] < n:
            raise ValueError(f"ends has {ends.shape[0]} slots for {n} contacts")
        cdef const uint32_t* e = &ends[0] if ends is not None and n else NULL
        with nogil:
            for c in range(n):
                if (e[c] if e != NULL else offsets[c + 1]) < offsets[c]:
                    bad = True
                    break
        if bad:
            raise ValueError(f"slot of contact {c} ends before it starts")
        return _compress(&offsets[0], e, n)

    @property
    def n(self) -> int:
        """Contacts covered: ids from here on are newer than the index."""
        return self.s.n

    @property
    def n_wide(self) -> int:
        """Blocks whose slots are kept explicitly (heavy contacts, merges)."""
        return self.n_wide

    @property
    def nbytes(self) -> int:
        """Bytes held (the explicit blocks' spare capacity included)."""
        return sum(0 if a is None else a.nbytes
                   for a in (self._blocks, self._counts, self._wide))

    def span(self, Py_ssize_t c) -> tuple:
        """(a, b): contact c's slot of the index's rows. IndexError outside [0, n)."""
        cdef Py_ssize_t a, b
        if c < 0 or c >= self.s.n:
            raise IndexError(f"contact {c} outside the index's {self.s.n} contacts")
        slot_span(&self.s, c, &a, &b)
        return a, b

    def starts_ends(self):
        """(starts, ends), uint32[n] each: every slot, as a plain array pair."""
        cdef Py_ssize_t c, a, b
        starts_arr = np.empty(self.s.n, dtype=np.uint32)
        ends_arr = np.empty(self.s.n, dtype=np.uint32)
        cdef uint32_t[::1] st = starts_arr
        cdef uint32_t[::1] en = ends_arr
        with nogil:
            for c in range(self.s.n):
                slot_span(&self.s, c, &a, &b)
                st[c] = <uint32_t> a
                en[c] = <uint32_t> b
        return starts_arr, ends_arr

    cdef Py_ssize_t _widen(self, Py_ssize_t block) except -1:
        """Keep block `block`'s slots explicitly (its number in ``wide``)."""
        cdef uint64_t w = self.s.blocks[block]
        cdef Py_ssize_t k, c, a, b, cap, number
        cdef uint32_t* wb
        if w >> 32:
            return <Py_ssize_t> (w >> 32) - 1
        cap = 0 if self._wide is None else self._wide.shape[0] // (2 * SLOT_BLOCK)
        if self.n_wide == cap:
            grown = np.zeros(2 * SLOT_BLOCK * max(4, 2 * cap), dtype=np.uint32)
            if cap:
                grown[: self._wide.shape[0]] = self._wide
            self._wide = grown
            self.s.wide = <const uint32_t*> <size_t> grown.ctypes.data
        number = self.n_wide
        wb = <uint32_t*> self.s.wide + number * 2 * SLOT_BLOCK
        for k in range(SLOT_BLOCK):
            c = block * SLOT_BLOCK + k
            if c < self.s.n:
                slot_span(&self.s, c, &a, &b)
            else:
                a = b = <uint32_t> w
            wb[k] = <uint32_t> a
            wb[SLOT_BLOCK + k] = <uint32_t> b
        (<uint64_t*> self.s.blocks)[block] = (
            (<uint64_t> (number + 1) << 32) | (w & 0xFFFFFFFF))
        self.n_wide += 1
        return number

    cdef int set_slot(self, Py_ssize_t c, uint32_t a, uint32_t b) except -1:
        """Point contact c's slot at rows [a, b) (its block is kept explicitly from
        now on); 0 <= c < n, a <= b."""
        cdef Py_ssize_t number = self._widen(c >> SLOT_SHIFT)
        cdef uint32_t* wb = <uint32_t*> self.s.wide + number * 2 * SLOT_BLOCK
        wb[c & (SLOT_BLOCK - 1)] = a
        wb[SLOT_BLOCK + (c & (SLOT_BLOCK - 1))] = b
        return 0


cdef Slots _compress(const uint32_t* starts, const uint32_t* ends, Py_ssize_t n):
    """Slots of [starts[c], ends[c]) (ends NULL: [starts[c], starts[c + 1])), checked
    by the caller. A block is narrow when its slots follow each other and each holds at
    most SLOT_NARROW_MAX rows; the others are kept explicitly."""
    cdef Py_ssize_t n_blocks = (n + SLOT_BLOCK - 1) >> SLOT_SHIFT, blk, k, c, n_wide = 0
    cdef uint32_t a, b, expect
    cdef bint narrow
    cdef Slots out = Slots()
    blocks_arr = np.zeros(n_blocks, dtype=np.uint64)
    counts_arr = np.zeros(n_blocks * SLOT_BLOCK, dtype=np.uint8)
    flags_arr = np.zeros(n_blocks, dtype=np.uint8)
    cdef uint64_t[::1] blocks = blocks_arr
    cdef uint8_t[::1] counts = counts_arr
    cdef uint8_t[::1] wide_flag = flags_arr
    with nogil:
        for blk in range(n_blocks):
            narrow = True
            expect = starts[blk * SLOT_BLOCK]
            for k in range(SLOT_BLOCK):
                c = blk * SLOT_BLOCK + k
                if c >= n:
                    break
                a = starts[c]
                b = ends[c] if ends != NULL else starts[c + 1]
                if a != expect or b - a > SLOT_NARROW_MAX:
                    narrow = False
                    break
                counts[c] = <uint8_t> (b - a)
                expect = b
            if not narrow:
                wide_flag[blk] = 1
                n_wide += 1
                memset(&counts[blk * SLOT_BLOCK], 0, SLOT_BLOCK)
            blocks[blk] = starts[blk * SLOT_BLOCK]
    wide_arr = np.zeros(2 * SLOT_BLOCK * max(1, n_wide), dtype=np.uint32)
    cdef uint32_t[::1] wide = wide_arr
    cdef Py_ssize_t number = 0
    with nogil:
        for blk in range(n_blocks):
            if not wide_flag[blk]:
                continue
            for k in range(SLOT_BLOCK):
                c = blk * SLOT_BLOCK + k
                if c < n:
                    a = starts[c]
                    b = ends[c] if ends != NULL else starts[c + 1]
                else:
                    a = b = starts[blk * SLOT_BLOCK]
                wide[number * 2 * SLOT_BLOCK + k] = a
                wide[number * 2 * SLOT_BLOCK + SLOT_BLOCK + k] = b
            number += 1
            blocks[blk] |= (<uint64_t> number) << 32
    out._blocks = blocks_arr
    out._counts = counts_arr
    out._wide = wide_arr
    out.n_wide = n_wide
    out.s.n = n
    out.s.blocks = &blocks[0] if n_blocks else NULL
    out.s.counts = &counts[0] if n_blocks else NULL
    out.s.wide = &wide[0]
    return out


def group_by_contact(const cid_t[::1] cid, Py_ssize_t n_contacts):
    """(offsets uint32[n_contacts + 1], rows uint32[len(cid)]) grouping rows by contact
    (a counting sort): contact c's rows, ascending, are ``rows[offsets[c]:offsets[c +
    1]]``. The plain CSR, for a pass over every contact in order; `build` keeps the
    slots of a lasting index in a `Slots` table instead."""
    cdef Py_ssize_t n = cid.shape[0], i
    cdef cid_t c, top = 0
    for i in range(n):
        if cid[i] > top:
            top = cid[i]
    if n and top >= n_contacts:
        raise ValueError(f"row names contact {top}, but there are {n_contacts} contacts")
    if n >= 0xFFFFFFFF:
        raise ValueError("a log of 2**32 rows does not fit uint32 row numbers")
    offsets_arr = np.zeros(n_contacts + 1, dtype=np.uint32)
    rows_arr = np.empty(n, dtype=np.uint32)
    cdef uint32_t[::1] offsets = offsets_arr
    cdef row_t[::1] rows = rows_arr
    with nogil:
        for i in range(n):
            offsets[cid[i] + 1] += 1
        for i in range(n_contacts):
            offsets[i + 1] += offsets[i]
        # Scatter in row order, so each contact's rows come out ascending. offsets[c] is
        # used as the cursor of c and ends at the start of c + 1: shift back afterwards.
        for i in range(n):
            c = cid[i]
            rows[offsets[c]] = <row_t> i
            offsets[c] += 1
        for i in range(n_contacts, 0, -1):
            offsets[i] = offsets[i - 1]
        offsets[0] = 0
    return offsets_arr, rows_arr


def build(const cid_t[::1] cid, Py_ssize_t n_contacts):
    """(slots, rows uint32[len(cid)]) grouping rows by contact: contact c's rows are
    ``rows[a:b]`` with ``(a, b) = slots.span(c)``, ascending. The plain offsets live
    only while the rows are scattered: the slot table keeps ~1.3 B per contact of
    their 4."""
    offsets_arr, rows_arr = group_by_contact(cid, n_contacts)
    cdef const uint32_t[::1] offsets = offsets_arr
    return _compress(&offsets[0], NULL, n_contacts), rows_arr


def codes_by_contact(const uint32_t[::1] col, const row_t[::1] rows, Py_ssize_t used):
    """uint32[len(rows)]: ``col[rows[i]]`` for i < `used` (NO_CODE where a row lies past
    the column), NO_CODE past `used`: a contact-major copy of one code column, aligned
    with the index's `rows`, so a walk of a contact's slot reads the codes of its rows
    by position (one cache line for ~16 rows) instead of a miss per row in the log."""
    cdef Py_ssize_t i, n = rows.shape[0], n_col = col.shape[0]
    cdef row_t r
    if used < 0 or used > n:
        raise ValueError(f"used {used} outside the {n} index positions")
    out_arr = np.empty(n, dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    with nogil:
        for i in range(used):
            r = rows[i]
            out[i] = col[r] if r < n_col else NO_CODE
        for i in range(used, n):
            out[i] = NO_CODE
    return out_arr


def rows_of_contacts(const cid_t[::1] cand_cids, Slots slots, const row_t[::1] rows,
                     row_t limit, row_t r0, row_t r1):
    """Rows in [r0, r1) of the given contacts: indexed rows first, then the unindexed tail.

    Indexed rows (< limit) come per contact in time order; the tail [max(r0, limit), r1)
    is returned whole — the caller's scan still checks each tail row's contact against
    the candidate bitset.
    """
    cdef Py_ssize_t n_cand = cand_cids.shape[0], n_idx = slots.s.n
    cdef Py_ssize_t j, k, a, b, total = 0, cap
    cdef row_t hi = r1 if r1 < limit else limit
    cdef row_t tail_lo = r0 if r0 > limit else limit
    cdef bint oom = False
    cdef row_t* buf
    cdef row_t* grown
    cdef const SlotsC* sl = &slots.s
    cdef Ahead ahead
    # One pass into a growing C buffer (a counting pass first would pay every cache
    # miss twice), copied into the result once the size is known.
    cap = max(1024, 8 * n_cand)
    buf = <row_t*> malloc(cap * sizeof(row_t))
    if buf == NULL:
        raise MemoryError("rows_of_contacts: cannot allocate the row buffer")
    with nogil:
        if hi > r0 and n_idx:
            _start_ahead(&cand_cids[0], n_cand, sl, &ahead)
            for j in range(n_cand):
                _prefetch_ahead(&cand_cids[0], n_cand, j, sl, &rows[0], &ahead)
                a = ahead.a[j & (RING - 1)]
                b = ahead.b[j & (RING - 1)]
                k = a + _lower_bound(&rows[a], b - a, r0) if b > a else a
                while k < b and rows[k] < hi:
                    if total == cap:
                        cap = 2 * cap
                        grown = <row_t*> realloc(buf, cap * sizeof(row_t))
                        if grown == NULL:
                            oom = True
                            break
                        buf = grown
                    buf[total] = rows[k]
                    total += 1
                    k += 1
                if oom:
                    break
    if oom:
        free(buf)
        raise MemoryError("rows_of_contacts: cannot grow the row buffer")
    cdef Py_ssize_t n_tail = r1 - tail_lo if r1 > tail_lo else 0
    out = np.empty(total + n_tail, dtype=np.uint32)
    cdef row_t[::1] o = out
    with nogil:
        if total:
            memcpy(&o[0], buf, total * sizeof(row_t))
        free(buf)
        for k in range(n_tail):
            o[total + k] = tail_lo + k
    return out


def count_of_contacts(const cid_t[::1] cand_cids, Slots slots, const row_t[::1] rows,
                      row_t limit, const cid_t[::1] cid, row_t r0, row_t r1):
    """Events in [r0, r1) per candidate (uint32, aligned with the sorted `cand_cids`).

    For conditions with no filter on the events ("viewed anything 5+ times in 30 days"):
    the indexed part is two binary searches per contact, no row is read; the unindexed
    tail [max(r0, limit), r1) is scanned and each row's contact looked up among the
    candidates.
    """
    cdef Py_ssize_t n_cand = cand_cids.shape[0], n_idx = slots.s.n
    cdef Py_ssize_t j, a, b, lo, hi_, k
    cdef const SlotsC* sl = &slots.s
    cdef Ahead ahead
    cdef row_t hi = r1 if r1 < limit else limit
    cdef row_t tail_lo = r0 if r0 > limit else limit
    cdef row_t r
    cdef cid_t c
    if r1 > cid.shape[0]:
        raise ValueError(f"window end {r1} beyond the log of {cid.shape[0]} rows")
    out = np.zeros(n_cand, dtype=np.uint32)
    cdef uint32_t[::1] o = out
    with nogil:
        if hi > r0 and n_idx:
            _start_ahead(&cand_cids[0], n_cand, sl, &ahead)
            for j in range(n_cand):
                _prefetch_ahead(&cand_cids[0], n_cand, j, sl, &rows[0], &ahead)
                a = ahead.a[j & (RING - 1)]
                b = ahead.b[j & (RING - 1)]
                if b > a:
                    o[j] = <uint32_t> (_lower_bound(&rows[a], b - a, hi)
                                       - _lower_bound(&rows[a], b - a, r0))
        for r in range(tail_lo, r1):
            c = cid[r]
            lo = 0
            hi_ = n_cand
            while lo < hi_:
                k = (lo + hi_) >> 1
                if cand_cids[k] < c:
                    lo = k + 1
                else:
                    hi_ = k
            if lo < n_cand and cand_cids[lo] == c:
                o[lo] += 1
    return out


def move_contact(cid_t[::1] cid, uint32_t[::1] origin, Slots slots, row_t[::1] rows,
                 Py_ssize_t used, row_t limit, Py_ssize_t n, cid_t merged,
                 cid_t survivor):
    """Identity merge of one log, in place (segd.identity): the rows of `merged` get
    `survivor`'s cid (and, where `origin` is still NO_CODE, `merged` as their origin).

    The patched index: the two contacts' indexed rows (< limit) are merged in row order
    into ``rows[used:]`` and the survivor's slot points there; the merged contact's slot
    becomes empty. Tail rows [limit, n) are found by a scan of the tail. Returns (rows
    moved, new used); (0, used) untouched when `merged` has no rows here; (-1, rows
    needed) untouched when ``rows`` has no room for both slots past `used`.
    """
    cdef Py_ssize_t n_idx = slots.s.n
    cdef Py_ssize_t a0 = 0, a1 = 0, b0 = 0, b1 = 0, out, moved = 0, r, m0, m1
    cdef row_t x
    cdef bint has_origin = origin is not None
    if merged >= n_idx or survivor >= n_idx:
        raise ValueError("move_contact: both contacts must be in the index")
    if n > cid.shape[0] or limit > n:
        raise ValueError("move_contact: inconsistent index arrays")
    if has_origin and origin.shape[0] < n:
        raise ValueError("move_contact: origin column shorter than the log")
    slot_span(&slots.s, survivor, &a0, &a1)
    slot_span(&slots.s, merged, &b0, &b1)
    if a1 > rows.shape[0] or b1 > rows.shape[0]:
        raise ValueError("move_contact: a slot lies past the index's rows")
    m0, m1 = b0, b1
    if b0 == b1:  # no indexed rows of `merged`: any in the tail?
        with nogil:
            r = limit
            while r < n and cid[r] != merged:
                r += 1
        if r >= n:
            return 0, used  # nothing to move: the index is left as it is
    if used + (a1 - a0) + (b1 - b0) > rows.shape[0]:
        return -1, used + (a1 - a0) + (b1 - b0)
    with nogil:
        out = used
        # both slots are ascending; rows >= limit (renumbered by a late merge, now in
        # the tail) are dropped here and found by the tail scan below
        while a0 < a1 or b0 < b1:
            if b0 >= b1 or (a0 < a1 and rows[a0] < rows[b0]):
                x = rows[a0]
                a0 += 1
            else:
                x = rows[b0]
                b0 += 1
                if x < limit:
                    cid[x] = survivor
                    if has_origin and origin[x] == NO_CODE:
                        origin[x] = merged
                    moved += 1
            if x < limit:
                rows[out] = x
                out += 1
        for r in range(limit, n):
            if cid[r] == merged:
                cid[r] = survivor
                if has_origin and origin[r] == NO_CODE:
                    origin[r] = merged
                moved += 1
    if out > used:
        slots.set_slot(survivor, <uint32_t> used, <uint32_t> out)
    if m1 > m0:
        slots.set_slot(merged, <uint32_t> m0, <uint32_t> m0)
    return moved, out


cdef enum:
    MAX_FILTERS = 16   # code filters one event condition may carry (as eventscan)


def count_filtered_of_contacts(const cid_t[::1] cand_cids, Slots slots,
                               const row_t[::1] rows, row_t limit,
                               const cid_t[::1] cid, row_t r0, row_t r1,
                               code_filters=()):
    """Matching events in [r0, r1) per candidate (uint32, aligned with the sorted
    `cand_cids`), where a row matches when every ``(codes, mask)`` of `code_filters`
    holds: ``codes[r]`` is not NULL, below ``len(mask)``, and ``mask[codes[r]] != 0``.
    A filter may be ``(codes, mask, by_contact)`` with `by_contact` the column's
    contact-major copy (``codes_by_contact``: ``codes[rows[k]]`` at position k): the
    indexed rows then read it by position (same result, no miss per row in `codes`).

    The fused form of ``rows_of_contacts`` + an event scan for an AND that already
    narrowed the candidates: each candidate's rows come from the index, so its contact
    needs no lookup, no candidate bitset is tested and no counter array is scattered;
    only the filter columns are read per row. The unindexed tail [max(r0, limit), r1)
    is scanned and each row's contact looked up among the candidates.
    """
    cdef Py_ssize_t n_cand = cand_cids.shape[0], n_idx = slots.s.n
    cdef Py_ssize_t j, a, b, k, lo, hi_
    cdef const SlotsC* sl = &slots.s
    cdef Ahead ahead
    cdef row_t hi = r1 if r1 < limit else limit
    cdef row_t tail_lo = r0 if r0 > limit else limit
    cdef row_t r
    cdef cid_t c
    cdef uint32_t got
    cdef int n_f = 0
    cdef const uint32_t* cols[MAX_FILTERS]
    cdef const uint32_t* ccols[MAX_FILTERS]
    cdef const uint8_t* masks[MAX_FILTERS]
    cdef Py_ssize_t mask_len[MAX_FILTERS]
    cdef const uint32_t[::1] col
    cdef const uint32_t[::1] ccol
    cdef const uint8_t[::1] mask
    cdef bint copies = False
    keep = []
    code_filters = list(code_filters)
    if len(code_filters) > MAX_FILTERS:
        raise ValueError(f"at most {MAX_FILTERS} code filters")
    if r1 > cid.shape[0]:
        raise ValueError(f"window end {r1} beyond the log of {cid.shape[0]} rows")
    for i, flt in enumerate(code_filters):
        col = flt[0]
        mask = flt[1]
        if col.shape[0] < r1:
            raise ValueError(f"code filter {i}: column of {col.shape[0]} rows is shorter "
                             f"than the window end {r1}")
        if mask.shape[0] == 0:  # admits nothing
            return np.zeros(n_cand, dtype=np.uint32)
        ccols[n_f] = NULL
        if len(flt) > 2 and flt[2] is not None:
            ccol = flt[2]
            if ccol.shape[0] < rows.shape[0]:
                raise ValueError(f"code filter {i}: contact-major copy of "
                                 f"{ccol.shape[0]} positions is shorter than the "
                                 f"index's {rows.shape[0]}")
            ccols[n_f] = &ccol[0] if ccol.shape[0] else NULL
            copies = copies or ccol.shape[0] > 0
            keep.append(ccol)
        keep.append((col, mask))
        cols[n_f] = &col[0]
        masks[n_f] = &mask[0]
        mask_len[n_f] = mask.shape[0]
        n_f += 1
    out = np.zeros(n_cand, dtype=np.uint32)
    cdef uint32_t[::1] o = out
    with nogil:
        if hi > r0 and n_idx:
            _start_ahead(&cand_cids[0], n_cand, sl, &ahead)
            for j in range(n_cand):
                _prefetch_ahead(&cand_cids[0], n_cand, j, sl, &rows[0], &ahead)
                a = ahead.a[j & (RING - 1)]
                b = ahead.b[j & (RING - 1)]
                k = a + _lower_bound(&rows[a], b - a, r0) if b > a else a
                got = 0
                if copies:
                    while k < b and rows[k] < hi:
                        got += _passes_at(cols, ccols, masks, mask_len, n_f, rows[k], k)
                        k += 1
                else:
                    while k < b and rows[k] < hi:
                        got += _passes(cols, masks, mask_len, n_f, rows[k])
                        k += 1
                o[j] = got
        for r in range(tail_lo, r1):
            c = cid[r]
            lo = 0
            hi_ = n_cand
            while lo < hi_:
                k = (lo + hi_) >> 1
                if cand_cids[k] < c:
                    lo = k + 1
                else:
                    hi_ = k
            if lo < n_cand and cand_cids[lo] == c:
                o[lo] += _passes(cols, masks, mask_len, n_f, r)
    return out


cdef inline uint32_t _passes(const uint32_t** cols, const uint8_t** masks,
                             const Py_ssize_t* mask_len, int n_f, row_t r) noexcept nogil:
    """1 when row r passes every code filter (branch-free per filter), else 0."""
    cdef int f
    cdef uint32_t code, ok = 1, inside
    for f in range(n_f):
        code = cols[f][r]
        inside = code < <uint64_t> mask_len[f]  # NO_CODE is never inside a mask
        ok &= inside & (masks[f][code if inside else 0] != 0)
    return ok


cdef inline uint32_t _passes_at(const uint32_t** cols, const uint32_t** ccols,
                                const uint8_t** masks, const Py_ssize_t* mask_len,
                                int n_f, row_t r, Py_ssize_t k) noexcept nogil:
    """`_passes` for the row at index position k: a filter with a contact-major copy
    reads ``ccols[f][k]`` (= ``cols[f][r]``), the others the log's column."""
    cdef int f
    cdef uint32_t code, ok = 1, inside
    for f in range(n_f):
        code = ccols[f][k] if ccols[f] != NULL else cols[f][r]
        inside = code < <uint64_t> mask_len[f]  # NO_CODE is never inside a mask
        ok &= inside & (masks[f][code if inside else 0] != 0)
    return ok
