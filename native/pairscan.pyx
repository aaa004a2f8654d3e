"""Event conditions decided for (contact, moment) pairs over the contact-major index.

Live segments ask "does contact c match at second s?" for a few touched contacts, each
at its own moment (segd.segments.pairs). A whole-log scan with an n-bit bitset per leaf
costs O(window + contacts) whatever the number of pairs; here each pair costs two binary
searches in the contact's own rows (``segd.native.contactindex``: rows per contact in
time order) plus a look at the rows inside its window, so a call costs O(pairs * rows
per contact in the window), never O(contacts) nor O(log).

One event log is a `PairLog`: its columns, its contact-major index (``offsets``,
``rows``, ``limit``, ``ends`` as ``EventLog.contact_index`` returns them) and an index of
its unindexed tail (rows ``[limit, n)`` sorted by contact, then row), validated once per
log state. A `PairSource` is a `PairLog` under the compiled filters of one condition
(code masks over dimension columns, amount intervals). `event_pairs` decides one event
condition for every pair in one nogil pass.
"""

from libc.math cimport isnan
from libc.stdint cimport UINT32_MAX, int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, qsort, realloc

import numpy as np

from segd.native._types cimport NO_CODE, cid_t, code_t, row_t, sec_t

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
    const uint32_t* offsets      # contact-major index: slot starts (n_idx + 1)
    const uint32_t* ends         # NULL, or patched slot ends (identity merges)
    Py_ssize_t n_idx             # contacts covered by the index
    const row_t* rows            # the index's rows, ascending per slot
    Py_ssize_t n_rows            # length of rows
    row_t limit                  # the index covers rows [0, limit)
    const cid_t* tail_cids       # contacts of the tail rows, ascending
    const row_t* tail_rows       # the tail rows, ascending per contact
    Py_ssize_t n_tail
    int n_filters
    const code_t* cols[MAX_CODE_FILTERS]
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
    PAIR_FAR = 16
    PAIR_MID = 12
    PAIR_NEAR = 8
    PAIR_LAST_ROWS = 32


cdef inline void _prefetch_pair(const Src* s, const cid_t* pc, Py_ssize_t n_pairs,
                                Py_ssize_t i) noexcept nogil:
    """Prefetch what pairs i + PAIR_FAR / _MID / _NEAR will read (no effect on results:
    every address is checked to lie inside its array)."""
    cdef cid_t c
    cdef Py_ssize_t a, b, k
    cdef row_t r
    if i + PAIR_FAR < n_pairs:
        c = pc[i + PAIR_FAR]
        if c < s.n_idx:
            SEGD_PS_PREFETCH(&s.offsets[c])
            if s.ends != NULL:
                SEGD_PS_PREFETCH(&s.ends[c])
    if i + PAIR_MID < n_pairs:
        c = pc[i + PAIR_MID]
        if c < s.n_idx:
            a = s.offsets[c]
            b = s.ends[c] if s.ends != NULL else s.offsets[c + 1]
            if b > s.n_rows:
                b = s.n_rows
            if a < b - PAIR_LAST_ROWS:
                a = b - PAIR_LAST_ROWS
            k = a
            while k < b:
                SEGD_PS_PREFETCH(&s.rows[k])
                k += 16  # a cache line of rows
            if b > a:
                SEGD_PS_PREFETCH(&s.rows[b - 1])
    if i + PAIR_NEAR < n_pairs:
        c = pc[i + PAIR_NEAR]
        if c < s.n_idx:
            a = s.offsets[c]
            b = s.ends[c] if s.ends != NULL else s.offsets[c + 1]
            if b > s.n_rows:
                b = s.n_rows
            if a < b - PAIR_LAST_ROWS:
                a = b - PAIR_LAST_ROWS
            for k in range(a, b):
                r = s.rows[k]
                if r < s.n:
                    SEGD_PS_PREFETCH(&s.ts[r])
                    if s.n_filters:
                        SEGD_PS_PREFETCH(&s.cols[0][r])


cdef class PairLog:
    """One event log and its contact-major index (shapes checked; slots and rows past
    the arrays are treated as empty by the kernel, so a broken index cannot make it
    read out of bounds).

    - ``cid``, ``ts``: the log's columns (equal length ``n``, ts non-decreasing).
    - ``offsets``, ``rows``, ``limit``, ``ends``: ``EventLog.contact_index(n_contacts)``.
    - ``tail_cids``, ``tail_rows``: the rows ``[limit, n)`` sorted by (contact, row)
      (`tail_index`).

    Build one per log state and reuse it for every condition (`PairSource`) until the
    log or its index changes.
    """

    cdef Src s
    cdef object _keep

    def __init__(self, const cid_t[::1] cid, const sec_t[::1] ts,
                 const uint32_t[::1] offsets, const row_t[::1] rows, row_t limit,
                 ends, const cid_t[::1] tail_cids, const row_t[::1] tail_rows):
        cdef Py_ssize_t n = cid.shape[0], k = 0, n_idx, n_rows = rows.shape[0]
        cdef const uint32_t[::1] e
        cdef bint bad = False
        keep = [cid, ts, offsets, rows, tail_cids, tail_rows]
        if ts.shape[0] != n:
            raise ValueError(f"ts has {ts.shape[0]} rows, cid has {n}")
        if limit > n:
            raise ValueError(f"index limit {limit} beyond the log of {n} rows")
        if offsets.shape[0] < 1:
            raise ValueError("offsets needs at least one entry")
        n_idx = offsets.shape[0] - 1
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
        self.s.ends = NULL
        if ends is not None:
            e = ends
            if e.shape[0] < n_idx:
                raise ValueError(f"ends has {e.shape[0]} slots for {n_idx} contacts")
            keep.append(ends)
            self.s.ends = &e[0] if e.shape[0] else NULL
        self.s.cid = &cid[0] if n else NULL
        self.s.ts = &ts[0] if n else NULL
        self.s.n = n
        self.s.offsets = &offsets[0]
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
      NULL and ``mask[codes[r]] != 0``.
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
        for codes, mask_arr in code_filters:
            col = codes
            mask = mask_arr
            if col.shape[0] < n:
                raise ValueError(f"filter column of {col.shape[0]} rows is shorter "
                                 f"than the log of {n}")
            k = self.s.n_filters
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
    cdef Py_ssize_t lo, hi, mid
    a[0] = 0
    b[0] = 0
    if c < s.n_idx:
        a[0] = s.offsets[c]
        b[0] = s.ends[c] if s.ends != NULL else s.offsets[c + 1]
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


cdef int _pairs_kernel(const Src* s, const Src* then, uint64_t within,
                       const cid_t* pc, const int64_t* plo, const int64_t* phi,
                       Py_ssize_t n_pairs, const Rule* rule, const code_t* dcodes,
                       uint8_t* out) noexcept nogil:
    """Verdict per pair; -1 when the distinct-count buffer cannot be allocated."""
    cdef Py_ssize_t i, a, b, ta, tb, k, end, part, n_keys, cap = 0
    cdef const row_t* rows
    cdef row_t r
    cdef cid_t c
    cdef int64_t lo, hi
    cdef uint64_t count, matched
    cdef double total, x
    cdef code_t code
    cdef uint32_t* keys = NULL
    cdef uint32_t* grown
    # A plain "count >= k" (no upper bound, sum or distinct count) is settled by its
    # k-th matching row: the rest of the contact's window need not be read.
    cdef bint settles = (not rule.use_sum and dcodes == NULL
                         and rule.count_max == <uint64_t> 0xFFFFFFFFFFFFFFFFULL)
    cdef uint64_t enough = rule.count_min if rule.count_min > 0 else 1
    for i in range(n_pairs):
        _prefetch_pair(s, pc, n_pairs, i)
        c = pc[i]
        lo = plo[i]
        hi = phi[i]
        count = 0
        matched = 0
        total = 0.0
        n_keys = 0
        if hi > lo:
            _slot(s, c, &a, &b, &ta, &tb)
            for part in range(2):
                if part == 0:
                    rows = s.rows
                else:
                    rows = s.tail_rows
                    a = ta
                    b = tb
                if b <= a:
                    continue
                k = _first_ts(s, rows, a, b, lo)
                end = b
                while k < end:
                    r = rows[k]
                    k += 1
                    if part == 0 and (r >= s.limit or r >= s.n):
                        break  # renumbered by a late merge: found in the tail
                    if <int64_t> s.ts[r] >= hi:
                        break
                    if not _row_ok(s, r):
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
                            if n_keys == cap:
                                cap = 64 if cap == 0 else cap * 2
                                grown = <uint32_t*> realloc(keys, cap * sizeof(uint32_t))
                                if grown == NULL:
                                    free(keys)
                                    return -1
                                keys = grown
                            keys[n_keys] = code
                            n_keys += 1
                            continue
                    count += 1
                    if settles and count >= enough:
                        break
                if settles and count >= enough:
                    break
            if n_keys:
                qsort(keys, n_keys, sizeof(uint32_t), _cmp_u32)
                count += 1
                for k in range(1, n_keys):
                    if keys[k] != keys[k - 1]:
                        count += 1
        if matched == 0:
            out[i] = V_NO_EVENTS
        elif count >= rule.count_min and count <= rule.count_max and (
                not rule.use_sum or (total >= rule.sum_min and total <= rule.sum_max)):
            out[i] = V_QUALIFIES
        else:
            out[i] = V_FAILS
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
            k = codes[cids[i]]
            o[i] = k != NO_CODE and k < m and mask[k] != 0
    return out
