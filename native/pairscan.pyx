"""Event conditions decided for (contact, moment) pairs over the contact-major index.

Live segments ask "does contact c match at second s?" for a few touched contacts, each
at its own moment (segd.segments.pairs). A whole-log scan with an n-bit bitset per leaf
costs O(window + contacts) whatever the number of pairs; here each pair costs two binary
searches in the contact's own rows (``segd.native.contactindex``: rows per contact in
time order) plus a look at the rows inside its window, so a call costs O(pairs * rows
per contact in the window), never O(contacts) nor O(log).

One event log is a `PairLog`: its columns, its contact-major index (``slots``,
``rows``, ``limit`` as ``EventLog.contact_index`` returns them) and an index of
its unindexed tail (rows ``[limit, n)`` sorted by contact, then row), validated once per
log state. A `PairSource` is a `PairLog` under the compiled filters of one condition
(code masks over dimension columns, amount intervals). `event_pairs` decides one event
condition for every pair in one nogil pass.
"""

from libc.math cimport isnan
from libc.stdint cimport UINT32_MAX, int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc

import numpy as np

from segd.native._types cimport NO_CODE, cid_t, code_t, row_t, sec_t
from segd.native.contactindex cimport Slots, SlotsC, slot_prefetch, slot_span

cdef enum:
    MAX_CODE_FILTERS = 16    # code-mask filters one event condition may carry

cdef enum:                   # kernel verdicts per pair (see `event_pairs`)
    V_NO_EVENTS = 0
    V_QUALIFIES = 1
    V_FAILS = 2

NO_EVENTS = V_NO_EVENTS
QUALIFIES = V_QUALIFIES
FAILS = V_FAILS


cdef struct Src:
    const cid_t* cid             # the log's contact column
    const sec_t* ts              # the log's time column (non-decreasing)
    Py_ssize_t n                 # rows in the log
    const SlotsC* slots          # contact-major index: each contact's slot of rows
    Py_ssize_t n_idx             # contacts covered by the index
    const row_t* rows            # the index's rows, ascending per slot
    Py_ssize_t n_rows            # length of rows
    row_t limit                  # the index covers rows [0, limit)
    const cid_t* tail_cids       # contacts of the tail rows, ascending
    const row_t* tail_rows       # the tail rows, ascending per contact
    Py_ssize_t n_tail
    int n_filters
    const code_t* cols[MAX_CODE_FILTERS]
    const code_t* ccols[MAX_CODE_FILTERS]   # NULL, or cols[k]'s contact-major copy
    const uint8_t* masks[MAX_CODE_FILTERS]
    Py_ssize_t mask_len[MAX_CODE_FILTERS]
    const double* amount         # NULL, or the amount column
    const double* iv_lo          # amount intervals [lo, hi], grouped: a row passes
    const double* iv_hi          # when every group has an interval holding its amount
    const int32_t* iv_group
    Py_ssize_t n_iv


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_PS_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define SEGD_PS_PREFETCH(p) ((void)(p))
    #endif
    """
    void SEGD_PS_PREFETCH(const void* p) noexcept nogil

# _pairs_kernel: the slot of the contact PAIR_FAR pairs ahead is prefetched, the last
# PAIR_LAST_ROWS rows of the one PAIR_MID ahead (recent windows start there), and the
# times / first filter codes of those rows for the one PAIR_NEAR ahead, so the misses
# of successive candidates overlap instead of being taken one after the other.
cdef enum:
    # interval_pairs / ratio_pairs / code_mask_pairs: the column slot of the candidate
    # this many places ahead is prefetched (decide's gathers over ~20k candidates of
    # 10M contacts take a miss each otherwise)
    GATHER_AHEAD = 16
    PAIR_FAR = 16
    PAIR_MID = 12
    PAIR_NEAR = 8
    PAIR_LAST_ROWS = 32


cdef enum:
    SPAN_RING = 16               # a power of 2 above PAIR_MID


cdef struct SpanRing:
    # the slots _prefetch_pair computed for the pairs ahead (pair index -> span), so
    # the nearer prefetch and the visit do not compute them again
    Py_ssize_t idx[SPAN_RING]
    Py_ssize_t a[SPAN_RING]
    Py_ssize_t b[SPAN_RING]


cdef inline void _ring_reset(SpanRing* ring) noexcept nogil:
    cdef int k
    for k in range(SPAN_RING):
        ring.idx[k] = -1


cdef inline void _ring_span(const Src* s, const cid_t* pc, Py_ssize_t j, SpanRing* ring,
                            Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Pair j's slot (its contact < s.n_idx): from the ring when computed there."""
    cdef int k = j & (SPAN_RING - 1)
    if ring != NULL and ring.idx[k] == j:
        a[0] = ring.a[k]
        b[0] = ring.b[k]
        return
    slot_span(s.slots, pc[j], a, b)
    if ring != NULL:
        ring.idx[k] = j
        ring.a[k] = a[0]
        ring.b[k] = b[0]


cdef inline void _recent_rows(const Src* s, const cid_t* pc, Py_ssize_t j,
                              SpanRing* ring, Py_ssize_t* a,
                              Py_ssize_t* b) noexcept nogil:
    """Pair j's contact's last PAIR_LAST_ROWS index positions [a, b) (clamped to the
    index): the rows a recent window reads first, which the prefetches below touch."""
    _ring_span(s, pc, j, ring, a, b)
    if b[0] > s.n_rows:
        b[0] = s.n_rows
    if a[0] < b[0] - PAIR_LAST_ROWS:
        a[0] = b[0] - PAIR_LAST_ROWS


cdef inline void _prefetch_pair(const Src* s, const cid_t* pc, Py_ssize_t n_pairs,
                                Py_ssize_t i, SpanRing* ring) noexcept nogil:
    """Prefetch what pairs i + PAIR_FAR / _MID / _NEAR will read (no effect on results:
    every address is checked to lie inside its array). `ring`: NULL, or the caller's
    ring of spans (pair index -> slot) for the nearer prefetch and the visit."""
    cdef cid_t c
    cdef Py_ssize_t a, b, k
    cdef row_t r
    if i + PAIR_FAR < n_pairs:
        c = pc[i + PAIR_FAR]
        if c < s.n_idx:
            slot_prefetch(s.slots, c)
    if i + PAIR_MID < n_pairs:
        c = pc[i + PAIR_MID]
        if c < s.n_idx:
            _recent_rows(s, pc, i + PAIR_MID, ring, &a, &b)
            k = a
            while k < b:
                SEGD_PS_PREFETCH(&s.rows[k])
                k += 16  # a cache line of rows
            if b > a:
                SEGD_PS_PREFETCH(&s.rows[b - 1])
    if i + PAIR_NEAR < n_pairs:
        c = pc[i + PAIR_NEAR]
        if c < s.n_idx:
            _recent_rows(s, pc, i + PAIR_NEAR, ring, &a, &b)
            if s.n_filters and s.ccols[0] != NULL:
                # windows are row ranges (no ts read) and the first filter's codes
                # lie beside the rows: a cache line or two per contact
                k = a
                while k < b:
                    SEGD_PS_PREFETCH(&s.ccols[0][k])
                    k += 16
                if b > a:
                    SEGD_PS_PREFETCH(&s.ccols[0][b - 1])
            elif s.n_filters:
                for k in range(a, b):
                    r = s.rows[k]
                    if r < s.n:
                        SEGD_PS_PREFETCH(&s.cols[0][r])


cdef class PairLog:
    """One event log and its contact-major index (shapes checked; slots and rows past
    the arrays are treated as empty by the kernel, so a broken index cannot make it
    read out of bounds).

    - ``cid``, ``ts``: the log's columns (equal length ``n``, ts non-decreasing).
    - ``slots``, ``rows``, ``limit``: ``EventLog.contact_index(n_contacts)``.
    - ``tail_cids``, ``tail_rows``: the rows ``[limit, n)`` sorted by (contact, row)
      (`tail_index`).

    Build one per log state and reuse it for every condition (`PairSource`) until the
    log or its index changes.
    """

    cdef Src s
    cdef object _keep

    def __init__(self, const cid_t[::1] cid, const sec_t[::1] ts,
                 Slots slots, const row_t[::1] rows, row_t limit,
                 const cid_t[::1] tail_cids, const row_t[::1] tail_rows):
        cdef Py_ssize_t n = cid.shape[0], k = 0, n_idx, n_rows = rows.shape[0]
        cdef bint bad = False
        keep = [cid, ts, slots, rows, tail_cids, tail_rows]
        if ts.shape[0] != n:
            raise ValueError(f"ts has {ts.shape[0]} rows, cid has {n}")
        if limit > n:
            raise ValueError(f"index limit {limit} beyond the log of {n} rows")
        n_idx = slots.s.n
        if tail_cids.shape[0] != tail_rows.shape[0] or tail_rows.shape[0] != n - limit:
            raise ValueError(f"the tail index has {tail_rows.shape[0]} rows, the tail "
                             f"[{limit}, {n}) has {n - limit}")
        with nogil:
            for k in range(tail_rows.shape[0]):
                if tail_rows[k] < limit or tail_rows[k] >= n or (
                        k and tail_cids[k] < tail_cids[k - 1]):
                    bad = True
                    break
        if bad:
            raise ValueError(f"tail index broken at position {k} (rows outside "
                             f"[{limit}, {n}) or contacts not ascending)")
        self.s.cid = &cid[0] if n else NULL
        self.s.ts = &ts[0] if n else NULL
        self.s.n = n
        self.s.slots = &slots.s
        self.s.n_idx = n_idx
        self.s.rows = &rows[0] if n_rows else NULL
        self.s.n_rows = n_rows
        self.s.limit = limit
        self.s.tail_cids = &tail_cids[0] if tail_cids.shape[0] else NULL
        self.s.tail_rows = &tail_rows[0] if tail_rows.shape[0] else NULL
        self.s.n_tail = tail_rows.shape[0]
        self.s.n_filters = 0
        self.s.amount = NULL
        self.s.n_iv = 0
        self.s.iv_lo = self.s.iv_hi = NULL
        self.s.iv_group = NULL
        self._keep = keep

    @property
    def n_rows(self) -> int:
        """Rows in the log."""
        return self.s.n


cdef class PairSource:
    """A `PairLog` under one condition's row filters (cheap to build: O(filters)).

    - ``code_filters``: up to 16 ``(codes, mask)``: a row passes when ``codes[r]`` is not
      NULL and ``mask[codes[r]] != 0``; or ``(codes, mask, by_contact)`` with the
      column's contact-major copy (``contactindex.codes_by_contact`` over the log's
      index rows, at least as long as ``rows``), read by index position for the
      indexed rows (same verdicts, no miss per row in the log's column).
    - ``amount``: None or the amount column; ``amount_intervals``: a list of groups
      ``(lo, hi)`` (float64 arrays of closed intervals): a row passes when its amount
      lies in some interval of every group (NaN passes none). Groups need ``amount``.
    """

    cdef Src s
    cdef object _keep

    def __init__(self, PairLog log not None, *, code_filters=(), amount=None,
                 amount_intervals=()):
        cdef Py_ssize_t n = log.s.n, k
        cdef const code_t[::1] col
        cdef const code_t[::1] ccol
        cdef const uint8_t[::1] mask
        cdef const double[::1] am
        cdef const double[::1] lo_v
        cdef const double[::1] hi_v
        cdef const int32_t[::1] grp_v
        self.s = log.s
        keep = [log]
        if len(code_filters) > MAX_CODE_FILTERS:
            raise ValueError(f"at most {MAX_CODE_FILTERS} code filters, "
                             f"got {len(code_filters)}")
        self.s.n_filters = 0
        for flt in code_filters:
            codes, mask_arr = flt[0], flt[1]
            col = codes
            mask = mask_arr
            if col.shape[0] < n:
                raise ValueError(f"filter column of {col.shape[0]} rows is shorter "
                                 f"than the log of {n}")
            k = self.s.n_filters
            self.s.ccols[k] = NULL
            if len(flt) > 2 and flt[2] is not None:
                ccol = flt[2]
                if ccol.shape[0] < self.s.n_rows:
                    raise ValueError(f"contact-major copy of {ccol.shape[0]} positions "
                                     f"is shorter than the index's {self.s.n_rows}")
                self.s.ccols[k] = &ccol[0] if ccol.shape[0] else NULL
                keep.append(flt[2])
            self.s.cols[k] = &col[0] if n else NULL
            self.s.masks[k] = &mask[0] if mask.shape[0] else NULL
            self.s.mask_len[k] = mask.shape[0]
            self.s.n_filters += 1
            keep += [codes, mask_arr]
        self.s.amount = NULL
        if amount is not None:
            am = amount
            if am.shape[0] < n:
                raise ValueError(f"amount column of {am.shape[0]} rows is shorter "
                                 f"than the log of {n}")
            self.s.amount = &am[0] if n else NULL
            keep.append(amount)
        los, his, groups = [], [], []
        # (no negative indexes here: the module is compiled without wraparound)
        for g, (lo, hi) in enumerate(amount_intervals):
            if len(lo) != len(hi):
                raise ValueError("amount interval bounds differ in length")
            if len(lo):
                los.append(np.asarray(lo, np.float64))
                his.append(np.asarray(hi, np.float64))
                groups.append(np.full(len(lo), g, np.int32))
            else:  # an empty group admits no amount: an empty interval [1, 0]
                los.append(np.array([1.0]))
                his.append(np.array([0.0]))
                groups.append(np.full(1, g, np.int32))
        self.s.n_iv = 0
        self.s.iv_lo = self.s.iv_hi = NULL
        self.s.iv_group = NULL
        if los:
            if amount is None:
                raise ValueError("amount intervals need the amount column")
            lo_arr = np.ascontiguousarray(np.concatenate(los))
            hi_arr = np.ascontiguousarray(np.concatenate(his))
            grp_arr = np.ascontiguousarray(np.concatenate(groups))
            lo_v = lo_arr
            hi_v = hi_arr
            grp_v = grp_arr
            self.s.iv_lo = &lo_v[0]
            self.s.iv_hi = &hi_v[0]
            self.s.iv_group = &grp_v[0]
            self.s.n_iv = lo_arr.shape[0]
            keep += [lo_arr, hi_arr, grp_arr]
        self._keep = keep


cdef inline bint _row_ok(const Src* s, Py_ssize_t r) noexcept nogil:
    cdef int k
    cdef code_t code
    cdef Py_ssize_t i
    cdef int32_t g
    cdef bint hit
    cdef double a
    for k in range(s.n_filters):
        code = s.cols[k][r]
        if code == NO_CODE or code >= s.mask_len[k] or not s.masks[k][code]:
            return False
    if s.n_iv:
        a = s.amount[r]
        i = 0
        while i < s.n_iv:
            g = s.iv_group[i]
            hit = False
            while i < s.n_iv and s.iv_group[i] == g:
                if a >= s.iv_lo[i] and a <= s.iv_hi[i]:
                    hit = True
                i += 1
            if not hit:
                return False
    return True


cdef inline bint _row_ok_at(const Src* s, Py_ssize_t r, Py_ssize_t j) noexcept nogil:
    """`_row_ok` for the indexed row r at index position j: filters with a contact-major
    copy read it by position (``ccols[k][j] == cols[k][r]``)."""
    cdef int k
    cdef code_t code
    for k in range(s.n_filters):
        if s.ccols[k] != NULL:
            code = s.ccols[k][j]
        else:
            code = s.cols[k][r]
        if code == NO_CODE or code >= s.mask_len[k] or not s.masks[k][code]:
            return False
    if s.n_iv:
        return _row_ok(s, r)  # amounts only: the code filters passed above
    return True


cdef inline Py_ssize_t _ts_bound(const Src* s, int64_t t) noexcept nogil:
    """First row of the log with ts >= t (the log is sorted by time, so a window
    [lo, hi) of seconds is the row range [_ts_bound(lo), _ts_bound(hi)))."""
    cdef Py_ssize_t lo = 0, hi = s.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if <int64_t> s.ts[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _first_row(const row_t* rows, Py_ssize_t a, Py_ssize_t b,
                                  Py_ssize_t r0) noexcept nogil:
    """First k in [a, b) with rows[k] >= r0 (rows ascending). Recent windows start
    near the end of a slot: gallop back from b before the binary search."""
    cdef Py_ssize_t lo = a, hi = b, mid, step = 1
    while hi - step > lo and rows[hi - step] >= r0:
        hi -= step
        step <<= 1
    if hi - step > lo:
        lo = hi - step
    while lo < hi:
        mid = (lo + hi) >> 1
        if rows[mid] < r0:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _first_ts(const Src* s, const row_t* rows, Py_ssize_t a,
                                 Py_ssize_t b, int64_t t) noexcept nogil:
    """First k in [a, b) with ts[rows[k]] >= t (rows ascending, so ts non-decreasing)."""
    cdef Py_ssize_t lo = a, hi = b, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if rows[mid] < s.n and <int64_t> s.ts[rows[mid]] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _slot(const Src* s, cid_t c, Py_ssize_t* a, Py_ssize_t* b,
                       Py_ssize_t* ta, Py_ssize_t* tb) noexcept nogil:
    """Contact c's indexed slot [a, b) of rows, and its tail range [ta, tb)."""
    a[0] = 0
    b[0] = 0
    if c < s.n_idx:
        slot_span(s.slots, c, a, b)
    _clamp_and_tail(s, c, a, b, ta, tb)


cdef inline void _clamp_and_tail(const Src* s, cid_t c, Py_ssize_t* a, Py_ssize_t* b,
                                 Py_ssize_t* ta, Py_ssize_t* tb) noexcept nogil:
    """`_slot` once [a, b) holds contact c's slot: clamped to the index's rows, and
    c's tail range [ta, tb) looked up."""
    cdef Py_ssize_t lo, hi, mid
    if b[0] > s.n_rows:
        b[0] = s.n_rows
    if a[0] > b[0]:
        a[0] = b[0]
    lo = 0
    hi = s.n_tail
    while lo < hi:
        mid = (lo + hi) >> 1
        if s.tail_cids[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    ta[0] = lo
    hi = s.n_tail
    while lo < hi:
        mid = (lo + hi) >> 1
        if s.tail_cids[mid] <= c:
            lo = mid + 1
        else:
            hi = mid
    tb[0] = lo


cdef bint _followed(const Src* s, cid_t c, int64_t t, uint64_t within) noexcept nogil:
    """True when contact c has a row of `s` passing its filters with ts in [t, t + within)."""
    cdef Py_ssize_t a, b, ta, tb, k
    cdef row_t r
    cdef int64_t end = t + <int64_t> within
    if end > <int64_t> UINT32_MAX + 1:
        end = <int64_t> UINT32_MAX + 1
    _slot(s, c, &a, &b, &ta, &tb)
    if b > a:
        k = _first_ts(s, s.rows, a, b, t)
        while k < b:
            r = s.rows[k]
            if r >= s.limit or r >= s.n or <int64_t> s.ts[r] >= end:
                break
            if _row_ok(s, r):
                return True
            k += 1
    if tb > ta:
        k = _first_ts(s, s.tail_rows, ta, tb, t)
        while k < tb:
            r = s.tail_rows[k]
            if <int64_t> s.ts[r] >= end:
                break
            if _row_ok(s, r):
                return True
            k += 1
    return False


cdef int _cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*> a)[0], y = (<const uint32_t*> b)[0]
    return (x > y) - (x < y)


cdef struct Rule:
    uint64_t count_min
    uint64_t count_max
    bint use_sum
    double sum_min
    double sum_max


cdef struct SlotMemo:
    bint valid                   # (a, b, ta, tb) below are contact c's slot
    cid_t c
    Py_ssize_t a, b, ta, tb


cdef int _pair_verdict(const Src* s, const Src* then, uint64_t within, cid_t c,
                       int64_t lo, int64_t hi, Py_ssize_t rlo, Py_ssize_t rhi,
                       const Rule* rule, const code_t* dcodes,
                       uint32_t** keys_p, Py_ssize_t* cap_p,
                       SlotMemo* memo) noexcept nogil:
    """One pair's verdict (V_*); -1 when the distinct-count buffer cannot grow.
    The window [lo, hi) of seconds is the row range [rlo, rhi) of the log (sorted by
    time), so the contact's rows are bounded by their row numbers: no ts read.
    ``keys_p`` / ``cap_p``: the caller's scratch buffer for distinct codes (realloc'd
    here, freed by the caller). ``memo``: NULL, or the last contact's slot (pairs of
    one contact in a row find their rows without looking them up again)."""
    cdef Py_ssize_t a, b, ta, tb, k, j, part, n_keys = 0
    cdef const row_t* rows
    cdef row_t r
    cdef uint64_t count = 0, matched = 0
    cdef double total = 0.0, x
    cdef code_t code
    cdef uint32_t* grown
    # A plain "count >= k" (no upper bound, sum or distinct count) is settled by its
    # k-th matching row: the rest of the contact's window need not be read.
    cdef bint settles = (not rule.use_sum and dcodes == NULL
                         and rule.count_max == <uint64_t> 0xFFFFFFFFFFFFFFFFULL)
    cdef uint64_t enough = rule.count_min if rule.count_min > 0 else 1
    if hi > lo:
        if memo != NULL and memo.valid and memo.c == c:
            a, b, ta, tb = memo.a, memo.b, memo.ta, memo.tb
        else:
            _slot(s, c, &a, &b, &ta, &tb)
            if memo != NULL:
                memo.valid = True
                memo.c = c
                memo.a, memo.b, memo.ta, memo.tb = a, b, ta, tb
        for part in range(2):
            if part == 0:
                rows = s.rows
            else:
                rows = s.tail_rows
                a = ta
                b = tb
            if b <= a:
                continue
            k = _first_row(rows, a, b, rlo)
            while k < b:
                r = rows[k]
                j = k
                k += 1
                if r >= rhi:  # rhi <= n
                    break
                if part == 0:
                    if r >= s.limit:
                        break  # renumbered by a late merge: found in the tail
                    if not _row_ok_at(s, r, j):
                        continue
                elif not _row_ok(s, r):
                    continue
                if then != NULL and _followed(then, c, s.ts[r], within):
                    continue
                matched += 1
                if rule.use_sum and s.amount != NULL:
                    x = s.amount[r]
                    if not isnan(x):
                        total += x
                if dcodes != NULL:
                    code = dcodes[r]
                    if code != NO_CODE:  # counted once per distinct code below
                        if n_keys == cap_p[0]:
                            cap_p[0] = 64 if cap_p[0] == 0 else cap_p[0] * 2
                            grown = <uint32_t*> realloc(keys_p[0],
                                                        cap_p[0] * sizeof(uint32_t))
                            if grown == NULL:
                                return -1
                            keys_p[0] = grown
                        keys_p[0][n_keys] = code
                        n_keys += 1
                        continue
                count += 1
                if settles and count >= enough:
                    break
            if settles and count >= enough:
                break
        if n_keys:
            qsort(keys_p[0], n_keys, sizeof(uint32_t), _cmp_u32)
            count += 1
            for k in range(1, n_keys):
                if keys_p[0][k] != keys_p[0][k - 1]:
                    count += 1
    if matched == 0:
        return V_NO_EVENTS
    if count >= rule.count_min and count <= rule.count_max and (
            not rule.use_sum or (total >= rule.sum_min and total <= rule.sum_max)):
        return V_QUALIFIES
    return V_FAILS


cdef int _pairs_kernel(const Src* s, const Src* then, uint64_t within,
                       const cid_t* pc, const int64_t* plo, const int64_t* phi,
                       Py_ssize_t n_pairs, const Rule* rule, const code_t* dcodes,
                       uint8_t* out) noexcept nogil:
    """Verdict per pair; -1 when the distinct-count buffer cannot be allocated."""
    cdef Py_ssize_t i, cap = 0, rlo = 0, rhi = 0
    cdef uint32_t* keys = NULL
    cdef int v
    cdef int64_t last_lo = 0, last_hi = 0
    cdef bint bounded = False
    cdef SlotMemo memo
    cdef SpanRing ring
    cdef Py_ssize_t sa, sb, sta, stb
    memo.valid = False
    _ring_reset(&ring)
    for i in range(n_pairs):
        _prefetch_pair(s, pc, n_pairs, i, &ring)
        if (ring.idx[i & (SPAN_RING - 1)] == i and pc[i] < s.n_idx
                and not (memo.valid and memo.c == pc[i])):
            # the visit's slot, computed by the prefetch: handed over through the memo
            sa = ring.a[i & (SPAN_RING - 1)]
            sb = ring.b[i & (SPAN_RING - 1)]
            _clamp_and_tail(s, pc[i], &sa, &sb, &sta, &stb)
            memo.valid = True
            memo.c = pc[i]
            memo.a, memo.b, memo.ta, memo.tb = sa, sb, sta, stb
        # the pair's window as a row range (pairs of one moment share one search)
        if not bounded or plo[i] != last_lo:
            last_lo = plo[i]
            rlo = _ts_bound(s, last_lo)
        if not bounded or phi[i] != last_hi:
            last_hi = phi[i]
            rhi = _ts_bound(s, last_hi)
        bounded = True
        v = _pair_verdict(s, then, within, pc[i], plo[i], phi[i], rlo, rhi, rule,
                          dcodes, &keys, &cap, &memo)
        if v < 0:
            free(keys)
            return -1
        out[i] = <uint8_t> v
    free(keys)
    return 0


def event_pairs(PairSource events not None, const cid_t[::1] cids,
                const int64_t[::1] lo_s, const int64_t[::1] hi_s,
                uint64_t count_min=1, uint64_t count_max=0xFFFFFFFFFFFFFFFF, *,
                sum_range=None, distinct_codes=None, PairSource then=None,
                uint64_t within_s=0):
    """Decide one event condition for the pairs ``(cids[i], [lo_s[i], hi_s[i]))``.

    Per pair, the contact's rows of `events` with ``lo_s <= ts < hi_s`` that pass the
    source's filters and, with `then`, have no row of `then` (passing its filters) in
    ``[ts, ts + within_s)`` are the matching events. Returns uint8 per pair:
    ``NO_EVENTS`` (0) without a matching event, ``QUALIFIES`` (1) when their count lies in
    ``[count_min, count_max]`` and, with ``sum_range (lo, hi)``, the sum of their amounts
    (NaN adds nothing) in ``[lo, hi]``, else ``FAILS`` (2). With `distinct_codes` (a code
    column of the log), matching rows with a code count once per distinct code, rows
    without one (NULL) on their own (orders counted by order_id).
    """
    cdef Py_ssize_t n_pairs = cids.shape[0]
    cdef Rule rule
    cdef const code_t[::1] dc
    cdef const code_t* dcodes = NULL
    cdef const Src* tp = NULL
    cdef int rc
    if lo_s.shape[0] != n_pairs or hi_s.shape[0] != n_pairs:
        raise ValueError(f"cids, lo_s, hi_s differ in length ({n_pairs}, "
                         f"{lo_s.shape[0]}, {hi_s.shape[0]})")
    rule.count_min = count_min
    rule.count_max = count_max
    rule.use_sum = sum_range is not None
    rule.sum_min, rule.sum_max = sum_range if sum_range is not None else (0.0, 0.0)
    if rule.use_sum and (isnan(rule.sum_min) or isnan(rule.sum_max)):
        raise ValueError("sum_range bounds must not be NaN")
    if distinct_codes is not None:
        dc = distinct_codes
        if dc.shape[0] < events.s.n:
            raise ValueError(f"distinct_codes column of {dc.shape[0]} rows is shorter "
                             f"than the log of {events.s.n}")
        if dc.shape[0]:
            dcodes = &dc[0]
    if then is not None:
        tp = &then.s
    out = np.zeros(n_pairs, dtype=np.uint8)
    if n_pairs == 0:
        return out
    cdef uint8_t[::1] o = out
    with nogil:
        rc = _pairs_kernel(&events.s, tp, within_s, &cids[0], &lo_s[0], &hi_s[0],
                           n_pairs, &rule, dcodes, &o[0])
    if rc != 0:
        raise MemoryError("event_pairs: no memory for the distinct-count buffer")
    return out


def tail_index(const cid_t[::1] cid, row_t limit, Py_ssize_t n):
    """(tail_cids, tail_rows): rows ``[limit, n)`` of a log sorted by (contact, row)
    (a stable sort of the tail's contact column)."""
    if limit > n or n > cid.shape[0]:
        raise ValueError(f"tail [{limit}, {n}) outside the log of {cid.shape[0]} rows")
    tail = np.asarray(cid[limit:n])
    order = np.argsort(tail, kind="stable").astype(np.uint32)
    return np.ascontiguousarray(tail[order]), order + np.uint32(limit)


# -- per-pair gathers of contact columns (attributes, aggregates) ------------------------

ctypedef fused value_t:
    int8_t
    int64_t
    uint32_t
    double


cdef int _check_cids(const cid_t[::1] cids, Py_ssize_t n, str what) except -1:
    """Every cid must index the column: the gathers read it without bounds checks."""
    cdef Py_ssize_t i
    cdef cid_t top = 0
    with nogil:
        for i in range(cids.shape[0]):
            if cids[i] > top:
                top = cids[i]
    if cids.shape[0] and top >= n:
        raise ValueError(f"cid {top} beyond the {what} of {n} entries")
    return 0


cdef inline bint _in(double v, const double[::1] lo, const double[::1] hi) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(lo.shape[0]):
        if v >= lo[k] and v <= hi[k]:
            return True
    return False


def interval_pairs(const value_t[::1] values, const double[::1] lo, const double[::1] hi,
                   const cid_t[::1] cids, valid=None):
    """uint8 per cid: ``values[c]`` (as float64) lies in some ``[lo[k], hi[k]]`` and,
    with `valid` (uint8 per contact), ``valid[c]`` is set. NaN lies in none."""
    cdef Py_ssize_t i, n = cids.shape[0]
    cdef const uint8_t[::1] ok
    cdef const uint8_t* ok_p = NULL
    if lo.shape[0] != hi.shape[0]:
        raise ValueError("interval bounds differ in length")
    _check_cids(cids, values.shape[0], "column")
    if valid is not None:
        ok = valid
        _check_cids(cids, ok.shape[0], "validity")
        if ok.shape[0]:
            ok_p = &ok[0]
    out = np.zeros(n, dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        for i in range(n):
            if i + GATHER_AHEAD < n:  # the candidates' slots are far apart: overlap misses
                SEGD_PS_PREFETCH(&values[cids[i + GATHER_AHEAD]])
                if ok_p != NULL:
                    SEGD_PS_PREFETCH(ok_p + cids[i + GATHER_AHEAD])
            if ok_p != NULL and not ok_p[cids[i]]:
                continue
            o[i] = _in(<double> values[cids[i]], lo, hi)
    return out


def ratio_pairs(const double[::1] num, const uint32_t[::1] den, const double[::1] lo,
                const double[::1] hi, const cid_t[::1] cids):
    """uint8 per cid: ``num[c] / den[c]`` lies in some ``[lo[k], hi[k]]``; ``den[c] == 0``
    is NULL (no average order value) and lies in none."""
    cdef Py_ssize_t i, n = cids.shape[0]
    cdef cid_t c
    if lo.shape[0] != hi.shape[0]:
        raise ValueError("interval bounds differ in length")
    _check_cids(cids, num.shape[0], "numerator")
    _check_cids(cids, den.shape[0], "denominator")
    out = np.zeros(n, dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        for i in range(n):
            if i + GATHER_AHEAD < n:
                SEGD_PS_PREFETCH(&num[cids[i + GATHER_AHEAD]])
                SEGD_PS_PREFETCH(&den[cids[i + GATHER_AHEAD]])
            c = cids[i]
            if den[c]:
                o[i] = _in(num[c] / <double> den[c], lo, hi)
    return out


def code_mask_pairs(const code_t[::1] codes, const uint8_t[::1] mask,
                    const cid_t[::1] cids):
    """uint8 per cid: ``codes[c]`` is not NULL and ``mask[codes[c]] != 0``."""
    cdef Py_ssize_t i, n = cids.shape[0], m = mask.shape[0]
    cdef code_t k
    _check_cids(cids, codes.shape[0], "code column")
    out = np.zeros(n, dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        for i in range(n):
            if i + GATHER_AHEAD < n:
                SEGD_PS_PREFETCH(&codes[cids[i + GATHER_AHEAD]])
            k = codes[cids[i]]
            o[i] = k != NO_CODE and k < m and mask[k] != 0
    return out


# -- fused programs: the rest of a segment's AND for many contacts at one moment ---------

cdef enum:                   # program node operations (prefix order, see PairProgram)
    OP_AND = 0
    OP_OR = 1
    OP_NOT = 2
    OP_LEAF = 3

cdef enum:                   # leaf kinds
    K_INTERVAL = 0           # a contact column's value in closed intervals
    K_RATIO = 1              # num[c] / den[c] in closed intervals (den 0 = NULL)
    K_CODES = 2              # a code column's code passes a mask
    K_EVENT = 3              # an event condition (as event_pairs) at fixed bounds
    K_CONST = 4              # a fixed answer

cdef enum:                   # value types of an interval leaf's column
    T_F64 = 0
    T_I64 = 1
    T_U32 = 2
    T_I8 = 3

AND = OP_AND
OR = OP_OR
NOT = OP_NOT
LEAF = OP_LEAF


cdef struct Leaf:
    int kind
    int vtype
    bint negate                  # the answer is inverted (is_null, NOT-free negations)
    const void* values           # K_INTERVAL: the column; K_RATIO: the numerator
    const uint8_t* valid         # NULL, or 1 = not NULL per contact
    const uint32_t* den          # K_RATIO: the denominator
    const double* lo             # closed intervals [lo[k], hi[k]]
    const double* hi
    Py_ssize_t n_iv
    const code_t* codes          # K_CODES
    const uint8_t* mask
    Py_ssize_t mask_len
    const Src* src               # K_EVENT: the events under the condition's filters
    const Src* then              # NULL, or the "then no" events
    uint64_t within
    int64_t wlo                  # the window [wlo, whi) in whole seconds
    int64_t whi
    Py_ssize_t rlo               # ... as rows [rlo, rhi) of the log (set at link time)
    Py_ssize_t rhi
    Rule rule
    const code_t* dcodes         # NULL, or the distinct-count code column
    bint zero_qualifies          # no matching event qualifies (count_min 0)
    int32_t memo_key             # -1, or the leaf's key in run_programs' memo


cdef enum:
    SLOT_WAYS = 8                # sources whose last slot a RunMemo keeps


cdef struct SlotWay:
    const Src* src
    SlotMemo slot


cdef struct ProgRef:
    const Leaf* leaves
    const int32_t* ops
    const int32_t* args
    const int32_t* ends


cdef struct RunMemo:
    # run_programs' per-contact memo: the answer of each keyed leaf (before its
    # negation) for the current contact, valid while stamp[key] == tag, and the last
    # slot looked up per event source (a contact's leaves over one log share it)
    int64_t* stamp
    uint8_t* value
    Py_ssize_t n_keys
    int64_t tag
    SlotWay ways[SLOT_WAYS]


cdef inline bint _in_ptr(double v, const double* lo, const double* hi,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        if v >= lo[k] and v <= hi[k]:
            return True
    return False


cdef inline double _value(const Leaf* f, cid_t c) noexcept nogil:
    if f.vtype == T_F64:
        return (<const double*> f.values)[c]
    if f.vtype == T_I64:
        return <double> (<const int64_t*> f.values)[c]
    if f.vtype == T_U32:
        return <double> (<const uint32_t*> f.values)[c]
    return <double> (<const int8_t*> f.values)[c]


cdef int _leaf(const Leaf* f, cid_t c, uint32_t** keys, Py_ssize_t* cap,
               RunMemo* m) noexcept nogil:
    """0 / 1 for contact c; -1 when the distinct-count buffer cannot grow. `m`:
    NULL, or the memo of the contact's keyed leaves and recent slots."""
    cdef bint got
    cdef code_t code
    cdef int v
    cdef SlotMemo* slot = NULL
    cdef SlotWay* way
    cdef int32_t key = f.memo_key
    if m != NULL and key >= 0 and key < m.n_keys and m.stamp[key] == m.tag:
        return m.value[key] != f.negate
    if f.kind == K_INTERVAL:
        if f.valid != NULL and not f.valid[c]:
            got = False
        else:
            got = _in_ptr(_value(f, c), f.lo, f.hi, f.n_iv)
    elif f.kind == K_RATIO:
        got = f.den[c] != 0 and _in_ptr(
            (<const double*> f.values)[c] / <double> f.den[c], f.lo, f.hi, f.n_iv)
    elif f.kind == K_CODES:
        code = f.codes[c]
        got = code != NO_CODE and code < f.mask_len and f.mask[code] != 0
    elif f.kind == K_EVENT:
        if m != NULL:
            way = &m.ways[((<size_t> f.src) >> 6) % SLOT_WAYS]
            if way.src != f.src:
                way.src = f.src
                way.slot.valid = False
            slot = &way.slot
        v = _pair_verdict(f.src, f.then, f.within, c, f.wlo, f.whi, f.rlo, f.rhi,
                          &f.rule, f.dcodes, keys, cap, slot)
        if v < 0:
            return -1
        got = v == V_QUALIFIES or (f.zero_qualifies and v == V_NO_EVENTS)
    else:
        got = False
    if m != NULL and key >= 0 and key < m.n_keys:
        m.stamp[key] = m.tag
        m.value[key] = got
    return got != f.negate


cdef int _node(const Leaf* leaves, const int32_t* ops, const int32_t* args,
               const int32_t* ends, Py_ssize_t i, cid_t c, uint32_t** keys,
               Py_ssize_t* cap, RunMemo* m) noexcept nogil:
    """Node i of the program for contact c: 0 / 1, -1 on a failed allocation. AND and
    OR stop at their first deciding operand (operands are stored cheapest first)."""
    cdef int op = ops[i], v
    cdef Py_ssize_t j, _k
    if op == OP_LEAF:
        return _leaf(&leaves[args[i]], c, keys, cap, m)
    if op == OP_NOT:
        v = _node(leaves, ops, args, ends, i + 1, c, keys, cap, m)
        return v if v < 0 else 1 - v
    j = i + 1
    for _k in range(args[i]):
        v = _node(leaves, ops, args, ends, j, c, keys, cap, m)
        if v < 0:
            return v
        if op == OP_AND and v == 0:
            return 0
        if op == OP_OR and v == 1:
            return 1
        j = ends[j]
    return 1 if op == OP_AND else 0


cdef class PairProgram:
    """A boolean expression over leaf conditions, decided for many contacts at one
    moment in one nogil pass (``run``): a live segment's conjunction after its static
    pass, compiled once by ``segd.segments.pairs`` instead of one kernel call and
    several numpy operations per condition.

    Leaves are added with the ``add_*`` methods (each returns its index; the arrays
    are kept alive by the program and read in place, so a later in-place change of a
    column is seen). ``set_tree(ops, args)`` then gives the expression in prefix order:
    ``ops[i]`` is ``AND`` / ``OR`` (``args[i]`` operands follow), ``NOT`` (one operand
    follows) or ``LEAF`` (``args[i]`` is a leaf index). An empty AND holds, an empty OR
    does not.
    """

    cdef Leaf* leaves
    cdef Py_ssize_t n_leaves
    cdef Py_ssize_t cap_leaves
    cdef int32_t* ops
    cdef int32_t* args
    cdef int32_t* ends
    cdef Py_ssize_t n_nodes
    cdef Py_ssize_t min_len      # the shortest contact column a leaf reads
    cdef list _keep
    cdef dict _links             # event leaf -> the sources and column it points into

    def __cinit__(self):
        self.leaves = NULL
        self.n_leaves = 0
        self.cap_leaves = 0
        self.ops = self.args = self.ends = NULL
        self.n_nodes = 0
        self.min_len = <Py_ssize_t> 0x7FFFFFFFFFFFFFFF
        self._keep = []
        self._links = {}

    def __dealloc__(self):
        free(self.leaves)
        free(self.ops)
        free(self.args)
        free(self.ends)

    cdef Leaf* _new(self, int kind, bint negate) except NULL:
        cdef Leaf* grown
        cdef Leaf* f
        if self.n_leaves == self.cap_leaves:
            self.cap_leaves = 8 if self.cap_leaves == 0 else self.cap_leaves * 2
            grown = <Leaf*> realloc(self.leaves, self.cap_leaves * sizeof(Leaf))
            if grown == NULL:
                raise MemoryError("PairProgram: no memory for its leaves")
            self.leaves = grown
        f = &self.leaves[self.n_leaves]
        f.kind = kind
        f.vtype = T_F64
        f.negate = negate
        f.values = NULL
        f.valid = NULL
        f.den = NULL
        f.lo = f.hi = NULL
        f.n_iv = 0
        f.codes = NULL
        f.mask = NULL
        f.mask_len = 0
        f.src = f.then = NULL
        f.within = 0
        f.wlo = f.whi = 0
        f.rlo = f.rhi = 0
        f.dcodes = NULL
        f.zero_qualifies = False
        f.memo_key = -1
        self.n_leaves += 1
        return f

    cdef void _column(self, Py_ssize_t n):
        if n < self.min_len:
            self.min_len = n

    cdef int _intervals(self, Leaf* f, lo, hi) except -1:
        cdef const double[::1] lo_v
        cdef const double[::1] hi_v
        lo_arr = np.ascontiguousarray(lo, dtype=np.float64).reshape(-1)
        hi_arr = np.ascontiguousarray(hi, dtype=np.float64).reshape(-1)
        if lo_arr.shape[0] != hi_arr.shape[0]:
            raise ValueError("interval bounds differ in length")
        self._keep += [lo_arr, hi_arr]
        lo_v = lo_arr
        hi_v = hi_arr
        f.n_iv = lo_arr.shape[0]
        f.lo = &lo_v[0] if f.n_iv else NULL
        f.hi = &hi_v[0] if f.n_iv else NULL
        return 0

    @property
    def n_leaves(self) -> int:
        return self.n_leaves

    def add_interval(self, values, lo, hi, valid=None, bint negate=False) -> int:
        """values[c] (int8 / int64 / uint32 / float64 per contact, compared as float64)
        is valid (``valid`` uint8 per contact, or every value) and lies in some
        ``[lo[k], hi[k]]``; inverted with `negate`."""
        cdef const double[::1] vf
        cdef const int64_t[::1] vi
        cdef const uint32_t[::1] vu
        cdef const int8_t[::1] vb
        cdef const uint8_t[::1] ok
        cdef Leaf* f
        arr = np.asarray(values)
        dt = arr.dtype
        if dt not in (np.float64, np.int64, np.uint32, np.int8):
            raise TypeError(f"add_interval: no kernel for a {dt} column")
        f = self._new(K_INTERVAL, negate)
        self._keep.append(arr)
        if dt == np.float64:
            vf = arr
            f.vtype = T_F64
            f.values = &vf[0] if vf.shape[0] else NULL
        elif dt == np.int64:
            vi = arr
            f.vtype = T_I64
            f.values = &vi[0] if vi.shape[0] else NULL
        elif dt == np.uint32:
            vu = arr
            f.vtype = T_U32
            f.values = &vu[0] if vu.shape[0] else NULL
        else:
            vb = arr
            f.vtype = T_I8
            f.values = &vb[0] if vb.shape[0] else NULL
        self._column(arr.shape[0])
        if valid is not None:
            ok = valid
            self._keep.append(valid)
            f.valid = &ok[0] if ok.shape[0] else NULL
            self._column(ok.shape[0])
            if not ok.shape[0]:
                f.kind = K_CONST  # no contact: never reached (min_len 0)
        self._intervals(f, lo, hi)
        return self.n_leaves - 1

    def add_ratio(self, const double[::1] num, const uint32_t[::1] den, lo, hi,
                  bint negate=False) -> int:
        """``num[c] / den[c]`` lies in some ``[lo[k], hi[k]]`` (``den[c] == 0``: NULL,
        in none); inverted with `negate`."""
        cdef Leaf* f = self._new(K_RATIO, negate)
        self._keep += [num, den]
        f.values = &num[0] if num.shape[0] else NULL
        f.den = &den[0] if den.shape[0] else NULL
        self._column(num.shape[0])
        self._column(den.shape[0])
        self._intervals(f, lo, hi)
        return self.n_leaves - 1

    def add_codes(self, const code_t[::1] codes, const uint8_t[::1] mask,
                  bint negate=False) -> int:
        """``codes[c]`` is not NULL and ``mask[codes[c]] != 0``; inverted with `negate`."""
        cdef Leaf* f = self._new(K_CODES, negate)
        self._keep += [codes, mask]
        f.codes = &codes[0] if codes.shape[0] else NULL
        f.mask = &mask[0] if mask.shape[0] else NULL
        f.mask_len = mask.shape[0]
        self._column(codes.shape[0])
        return self.n_leaves - 1

    def add_const(self, bint value) -> int:
        """A fixed answer (a condition decided without reading the contact)."""
        self._new(K_CONST, value)
        return self.n_leaves - 1

    def add_event(self, PairSource events not None, int64_t lo_s, int64_t hi_s,
                  uint64_t count_min=1, uint64_t count_max=0xFFFFFFFFFFFFFFFF, *,
                  sum_range=None, distinct_codes=None, PairSource then=None,
                  uint64_t within_s=0, bint zero_qualifies=False,
                  int32_t memo_key=-1) -> int:
        """An event condition at the window ``[lo_s, hi_s)``, as ``event_pairs`` (same
        arguments): holds when the verdict is ``QUALIFIES``, or ``NO_EVENTS`` with
        `zero_qualifies`. `memo_key` (>= 0): ``run_programs`` decides the leaf once per
        contact for all leaves of that key in the programs of one call — the caller
        gives one key only to leaves that always agree (same events, filters, window
        and rule; their negations may differ)."""
        cdef const code_t[::1] dc
        cdef Leaf* f
        if sum_range is not None and (isnan(sum_range[0]) or isnan(sum_range[1])):
            raise ValueError("sum_range bounds must not be NaN")
        if distinct_codes is not None:
            dc = distinct_codes
            if dc.shape[0] < events.s.n:
                raise ValueError(f"distinct_codes column of {dc.shape[0]} rows is "
                                 f"shorter than the log of {events.s.n}")
        f = self._new(K_EVENT, False)
        self._links[self.n_leaves - 1] = (events, then, distinct_codes)
        f.src = &events.s
        f.then = &then.s if then is not None else NULL
        f.within = within_s
        f.wlo = lo_s
        f.whi = hi_s
        f.rlo = _ts_bound(&events.s, lo_s)
        f.rhi = _ts_bound(&events.s, hi_s)
        f.rule.count_min = count_min
        f.rule.count_max = count_max
        f.rule.use_sum = sum_range is not None
        f.rule.sum_min, f.rule.sum_max = (
            sum_range if sum_range is not None else (0.0, 0.0))
        if distinct_codes is not None and dc.shape[0]:
            f.dcodes = &dc[0]
        f.zero_qualifies = zero_qualifies
        if memo_key < -1:
            raise ValueError(f"memo_key must be -1 or >= 0, not {memo_key}")
        f.memo_key = memo_key
        return self.n_leaves - 1

    def set_tree(self, ops, args) -> None:
        """The expression in prefix order (class docstring); ValueError when it is not
        one well-formed tree over existing leaves."""
        o = np.ascontiguousarray(ops, dtype=np.int32).reshape(-1)
        a = np.ascontiguousarray(args, dtype=np.int32).reshape(-1)
        n = o.shape[0]
        if a.shape[0] != n or n == 0:
            raise ValueError(f"ops and args must be one non-empty length "
                             f"(got {n} and {a.shape[0]})")
        ends = np.zeros(n, dtype=np.int32)
        ol, al = o.tolist(), a.tolist()

        def walk(i: int) -> int:  # the index after node i's subtree
            if i >= n:
                raise ValueError(f"the tree ends inside node {i}")
            op, arg = ol[i], al[i]
            if op == OP_LEAF:
                if not 0 <= arg < self.n_leaves:
                    raise ValueError(f"node {i}: no leaf {arg}")
                j = i + 1
            elif op == OP_NOT:
                j = walk(i + 1)
            elif op in (OP_AND, OP_OR):
                if arg < 0:
                    raise ValueError(f"node {i}: {arg} operands")
                j = i + 1
                for _ in range(arg):
                    j = walk(j)
            else:
                raise ValueError(f"node {i}: unknown operation {op}")
            ends[i] = j
            return j

        if walk(0) != n:
            raise ValueError(f"the tree ends at node {ends[0]} of {n}")
        free(self.ops)
        free(self.args)
        free(self.ends)
        self.ops = <int32_t*> malloc(n * sizeof(int32_t))
        self.args = <int32_t*> malloc(n * sizeof(int32_t))
        self.ends = <int32_t*> malloc(n * sizeof(int32_t))
        if self.ops == NULL or self.args == NULL or self.ends == NULL:
            self.n_nodes = 0
            raise MemoryError("PairProgram: no memory for its tree")
        cdef const int32_t[::1] ov = o
        cdef const int32_t[::1] av = a
        cdef const int32_t[::1] ev = ends
        cdef Py_ssize_t i
        for i in range(n):
            self.ops[i] = ov[i]
            self.args[i] = av[i]
            self.ends[i] = ev[i]
        self.n_nodes = n

    def run(self, const cid_t[::1] cids):
        """uint8 per cid: the expression holds for contact ``cids[i]``. ValueError
        when no tree is set or a cid lies beyond a column a leaf reads."""
        cdef Py_ssize_t i, n = cids.shape[0], cap = 0
        cdef uint32_t* keys = NULL
        cdef int v = 0
        if self.n_nodes == 0:
            raise ValueError("PairProgram.run: no tree set")
        _check_cids(cids, self.min_len, "shortest column of the program")
        out = np.zeros(n, dtype=np.uint8)
        if n == 0:
            return out
        cdef uint8_t[::1] o = out
        with nogil:
            for i in range(n):
                v = _node(self.leaves, self.ops, self.args, self.ends, 0, cids[i],
                          &keys, &cap, NULL)
                if v < 0:
                    break
                o[i] = <uint8_t> v
            free(keys)
        if v < 0:
            raise MemoryError("PairProgram.run: no memory for the distinct-count buffer")
        return out

    def set_memo_key(self, Py_ssize_t leaf, int32_t key) -> None:
        """Give event leaf `leaf` the memo key `key` (-1: none) for the next
        ``run_programs`` calls (see ``add_event``)."""
        if not 0 <= leaf < self.n_leaves or self.leaves[leaf].kind != K_EVENT:
            raise ValueError(f"leaf {leaf} is not an event leaf")
        if key < -1:
            raise ValueError(f"memo_key must be -1 or >= 0, not {key}")
        self.leaves[leaf].memo_key = key

    def relink_event(self, Py_ssize_t leaf, PairSource events not None,
                     PairSource then=None, distinct_codes=None) -> None:
        """Point event leaf `leaf` at the current state of its logs (after rows were
        appended, a log's ``PairSource`` is rebuilt): its window, counts and sum stay.
        ValueError when `leaf` is not an event leaf or the distinct-count column is
        shorter than the log."""
        cdef const code_t[::1] dc
        cdef Leaf* f
        if not 0 <= leaf < self.n_leaves or self.leaves[leaf].kind != K_EVENT:
            raise ValueError(f"leaf {leaf} is not an event leaf")
        f = &self.leaves[leaf]
        if distinct_codes is not None:
            dc = distinct_codes
            if dc.shape[0] < events.s.n:
                raise ValueError(f"distinct_codes column of {dc.shape[0]} rows is "
                                 f"shorter than the log of {events.s.n}")
        self._links[leaf] = (events, then, distinct_codes)  # the old ones may go
        f.src = &events.s
        f.then = &then.s if then is not None else NULL
        f.rlo = _ts_bound(&events.s, f.wlo)  # the window's rows in the new state
        f.rhi = _ts_bound(&events.s, f.whi)
        f.dcodes = NULL
        if distinct_codes is not None and dc.shape[0]:
            f.dcodes = &dc[0]


cdef enum:
    RUN_SOURCES = 16             # event sources run_programs prefetches for
    RUN_COLUMNS = 24             # gathered columns run_programs prefetches


cdef inline void _note_column(const void* col, Py_ssize_t width, Py_ssize_t bound,
                              const char** cols, Py_ssize_t* widths,
                              Py_ssize_t* bounds, int* n_cols) noexcept nogil:
    """Add a gathered column to run_programs' prefetch list (once; `bound`: the
    contacts it holds at least)."""
    cdef int k
    if col == NULL:
        return
    for k in range(n_cols[0]):
        if cols[k] == <const char*> col:
            if bound < bounds[k]:
                bounds[k] = bound
            return
    if n_cols[0] < RUN_COLUMNS:
        cols[n_cols[0]] = <const char*> col
        widths[n_cols[0]] = width
        bounds[n_cols[0]] = bound
        n_cols[0] += 1


def run_programs(programs, const cid_t[::1] cids, const uint8_t[:, ::1] todo, *,
                 bint prefetch=True):
    """uint8 ``[len(programs), len(cids)]``: ``out[s, i]`` = program ``programs[s]``
    holds for contact ``cids[i]`` where ``todo[i, s]`` is set (0 elsewhere), as
    ``programs[s].run`` would say. The segments of one live flush in one nogil pass,
    contact by contact: a contact's index slots, times and columns are read from
    memory once for all the programs it is asked about (segment by segment, each
    survivor's misses were taken again per segment), and leaves sharing a
    ``memo_key`` are decided once per contact. Contacts asked about nothing are
    skipped; with `prefetch`, the index slots, recent rows and times of the event
    sources and the gathered columns of the contacts a few places ahead are prefetched
    (no effect on the answer). ValueError when the shapes disagree, a program has no
    tree, or a cid asked of a program lies beyond a column it reads."""
    cdef Py_ssize_t n = cids.shape[0], m = len(programs), i, s, cap = 0, n_keys = 0
    cdef Py_ssize_t a, n_act = 0, k, width
    cdef const Src* srcs[RUN_SOURCES]
    cdef SpanRing rings[RUN_SOURCES]
    cdef const char* cols[RUN_COLUMNS]
    cdef Py_ssize_t widths[RUN_COLUMNS]
    cdef Py_ssize_t bounds[RUN_COLUMNS]
    cdef int n_srcs = 0, n_cols = 0
    cdef cid_t c
    cdef cid_t* act = NULL
    cdef Py_ssize_t* pos = NULL
    cdef const Leaf* f
    cdef uint32_t* keys = NULL
    cdef int v = 0
    cdef PairProgram p
    cdef const uint8_t* row
    cdef ProgRef* refs
    cdef RunMemo memo
    if todo.shape[0] != n or todo.shape[1] != m:
        raise ValueError(f"todo must be ({n}, {m}), not "
                         f"({todo.shape[0]}, {todo.shape[1]})")
    progs = list(programs)
    tops = np.zeros(m, dtype=np.int64)  # the largest cid asked of each program, + 1
    cdef int64_t[::1] top = tops
    for s in range(m):
        p = progs[s]  # TypeError for anything else
        if p.n_nodes == 0:
            raise ValueError(f"run_programs: program {s} has no tree set")
        for i in range(p.n_leaves):
            f = &p.leaves[i]
            if f.memo_key >= n_keys:
                n_keys = f.memo_key + 1
            if not prefetch:
                continue
            if f.kind == K_EVENT:
                for k in range(n_srcs):
                    if srcs[k] == f.src:
                        break
                else:
                    if n_srcs < RUN_SOURCES:
                        srcs[n_srcs] = f.src
                        n_srcs += 1
            elif f.kind == K_INTERVAL or f.kind == K_RATIO:
                width = 8
                if f.kind == K_INTERVAL and f.vtype == T_U32:
                    width = 4
                elif f.kind == K_INTERVAL and f.vtype == T_I8:
                    width = 1
                _note_column(f.values, width, p.min_len, cols, widths, bounds, &n_cols)
                if f.kind == K_RATIO:
                    _note_column(f.den, 4, p.min_len, cols, widths, bounds, &n_cols)
            elif f.kind == K_CODES:
                _note_column(f.codes, 4, p.min_len, cols, widths, bounds, &n_cols)
    with nogil:
        for i in range(n):
            row = &todo[i, 0]
            for s in range(m):
                if row[s] and cids[i] >= top[s]:
                    top[s] = <int64_t> cids[i] + 1
    for s in range(m):
        p = progs[s]
        if top[s] > p.min_len:
            raise ValueError(f"cid {top[s] - 1} is beyond program {s}'s shortest "
                             f"column ({p.min_len} contacts)")
    out = np.zeros((m, n), dtype=np.uint8)
    if n == 0 or m == 0:
        return out
    cdef uint8_t[:, ::1] o = out
    refs = <ProgRef*> malloc(m * sizeof(ProgRef))
    memo.stamp = <int64_t*> malloc((n_keys + 1) * sizeof(int64_t))
    memo.value = <uint8_t*> malloc(n_keys + 1)
    act = <cid_t*> malloc(n * sizeof(cid_t))
    pos = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
    if (refs == NULL or memo.stamp == NULL or memo.value == NULL or act == NULL
            or pos == NULL):
        free(refs)
        free(memo.stamp)
        free(memo.value)
        free(act)
        free(pos)
        raise MemoryError("run_programs: no memory for its tables")
    for s in range(m):
        p = progs[s]
        refs[s].leaves = p.leaves
        refs[s].ops = p.ops
        refs[s].args = p.args
        refs[s].ends = p.ends
    memo.n_keys = n_keys
    for i in range(n_keys):
        memo.stamp[i] = -1
    for s in range(SLOT_WAYS):
        memo.ways[s].src = NULL
        memo.ways[s].slot.valid = False
    for s in range(RUN_SOURCES):
        _ring_reset(&rings[s])
    with nogil:
        for i in range(n):  # the contacts asked about something
            row = &todo[i, 0]
            for s in range(m):
                if row[s]:
                    act[n_act] = cids[i]
                    pos[n_act] = i
                    n_act += 1
                    break
        for a in range(n_act):
            if prefetch:
                for k in range(n_srcs):
                    _prefetch_pair(srcs[k], act, n_act, a, &rings[k])
                if a + PAIR_NEAR < n_act:
                    c = act[a + PAIR_NEAR]
                    for k in range(n_cols):
                        if c < bounds[k]:
                            SEGD_PS_PREFETCH(cols[k] + c * widths[k])
            i = pos[a]
            memo.tag = i
            row = &todo[i, 0]
            for s in range(m):
                if not row[s]:
                    continue
                v = _node(refs[s].leaves, refs[s].ops, refs[s].args, refs[s].ends, 0,
                          cids[i], &keys, &cap, &memo)
                if v < 0:
                    break
                o[s, i] = <uint8_t> v
            if v < 0:
                break
        free(keys)
        free(refs)
        free(memo.stamp)
        free(memo.value)
        free(act)
        free(pos)
    if v < 0:
        raise MemoryError("run_programs: no memory for the distinct-count buffer")
    return out
