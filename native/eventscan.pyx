"""Kernels that scan one event type's log: match rows against filters, count per contact.

An event condition ("viewed brand B at least twice in the last 30 days, then no order within
7 days") becomes one call here. Python (engine/segments/) picks the rows to look at — the
whole time window ``[r0, r1)`` of the log, or the rows gathered from the postings of the most
selective filter — and compiles the other filters to per-code masks; these kernels then run
without the GIL and without a Python object per row.

The API takes a few typed objects instead of a long positional list (sklearn's ``_libs``
split: the ``def`` layer validates, the ``cdef ... nogil`` kernels compute):

- `EventScanParams`: which rows match (log columns, window, source rows, filters,
  candidates, "then no" keys), validated once when built;
- `CountRange`: which contacts qualify from their matching events (count, sum);
- `ScanScratch`: per-thread per-contact counters, all-zero on entry and left all-zero on
  exit, so a query costs O(rows matched), never O(contacts);
- `count_matches(scan, rule, scratch, n_contacts) -> CountResult`, and `collect_rows` /
  `collect_keys(scan)` for explain and for "then no".
"""

from libc.math cimport isnan
from libc.stdint cimport UINT32_MAX, UINT64_MAX, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

import numpy as np

from segd.native._types cimport NO_CODE, cid_t, code_t, row_t, sec_t, word_t

cdef enum:
    MAX_CODE_FILTERS = 16    # code-mask filters one event condition may carry


cdef struct Match:
    const cid_t* cid             # the log's contact column
    const sec_t* ts              # the log's time column
    Py_ssize_t r0                # first row of the window (row_mask is relative to it)
    Py_ssize_t r1                # one past the last row of the window
    int n_filters
    const code_t* cols[MAX_CODE_FILTERS]     # a code column per filter
    const uint8_t* masks[MAX_CODE_FILTERS]   # mask[code] != 0: the filter holds
    Py_ssize_t mask_len[MAX_CODE_FILTERS]
    const uint8_t* row_mask      # NULL or per-row verdict of filters done in numpy
    const double* amount         # NULL or the amount column (for sums)
    const word_t* candidates     # NULL or a bitset of contacts worth looking at
    Py_ssize_t n_candidate_words
    const uint64_t* then_keys    # NULL or sorted (cid << 32 | ts) of "then no" events
    Py_ssize_t n_then
    uint64_t within_s            # the "then no ... within" span in seconds
    const word_t* then_bits      # NULL or a bitset of contacts that have any then_keys
    Py_ssize_t n_then_words
    int64_t only_cid             # -1, or the single contact to look at (explain)


cdef inline bint _bit_test(const word_t* words, Py_ssize_t n_words, cid_t i) noexcept nogil:
    cdef Py_ssize_t w = i >> 6
    return w < n_words and (words[w] >> (i & 63)) & 1


cdef inline void _bit_set(word_t* words, cid_t i) noexcept nogil:
    words[i >> 6] |= (<word_t> 1) << (i & 63)


cdef inline bint _followed(const Match* m, cid_t c, sec_t t) noexcept nogil:
    """True when contact c has a "then no" event in [t, t + within)."""
    # Most contacts have no "then no" event at all (orders are rare next to carts): a
    # bit test rejects them before the binary search (10x on the abandoned-cart query).
    if m.then_bits != NULL and not _bit_test(m.then_bits, m.n_then_words, c):
        return False
    cdef uint64_t lo_key = ((<uint64_t> c) << 32) | t
    cdef uint64_t end = <uint64_t> t + m.within_s
    if end > UINT32_MAX:
        end = <uint64_t> UINT32_MAX + 1
    cdef uint64_t hi_key = ((<uint64_t> c) << 32) + end
    cdef Py_ssize_t lo = 0, hi = m.n_then, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if m.then_keys[mid] < lo_key:
            lo = mid + 1
        else:
            hi = mid
    return lo < m.n_then and m.then_keys[lo] < hi_key


cdef inline bint _row_matches(const Match* m, Py_ssize_t r) noexcept nogil:
    cdef int k
    cdef code_t code
    cdef cid_t c = m.cid[r]
    if m.only_cid >= 0 and c != m.only_cid:
        return False
    if m.candidates != NULL and not _bit_test(m.candidates, m.n_candidate_words, c):
        return False
    for k in range(m.n_filters):
        code = m.cols[k][r]
        if code == NO_CODE or code >= m.mask_len[k] or not m.masks[k][code]:
            return False
    if m.row_mask != NULL and not m.row_mask[r - m.r0]:
        return False
    if m.then_keys != NULL and _followed(m, c, m.ts[r]):
        return False
    return True


cdef inline bint _only_rows(const Match* m) noexcept nogil:
    """True when every visited row matches: no filter, candidates, contact or "then no"."""
    return (m.only_cid < 0 and m.candidates == NULL and m.n_filters == 0
            and m.row_mask == NULL and m.then_keys == NULL)


cdef class EventScanParams:
    """Which rows of one event log an event condition looks at, validated once.

    Built by the engine for each (condition, window) and handed to `count_matches`,
    `collect_rows` or `collect_keys`. The constructor checks every shape and bound while
    it holds the GIL (window inside the log, filter columns cover the window, source rows
    inside the window, "then no" keys sorted) and keeps the arrays alive; the kernels
    then read raw pointers without bounds checks.

    - ``cid``, ``ts``: the log's contact and time columns (equal length).
    - ``r0``, ``r1``: the time window as rows ``[r0, r1)`` of the log.
    - ``source_rows``: None (every row of the window) or row numbers inside the window,
      in any order (a gather of postings, or the candidates' own rows).
    - ``code_filters``: up to 16 ``(codes, mask)`` pairs: a row passes when ``codes[r]``
      is not NULL and ``mask[codes[r]] != 0`` (codes past the mask fail).
    - ``row_mask``: None or a uint8 verdict per row of the window (relative to ``r0``).
    - ``amount``: None or the amount column (summed when the `CountRange` asks).
    - ``candidates``: None (every contact) or a bitset of the contacts to look at.
    - ``then_keys``, ``within_s``: None or sorted ``cid << 32 | ts`` keys of "then no"
      events; an event at t is dropped when its contact has a key in ``[t, t + within_s)``.
    - ``only_contact``: None or the single contact to look at (explain).
    - ``distinct_codes``: None or a code column of the log (e.g. ``order_id``) covering
      the window: `count_matches` then counts a contact's distinct codes among its
      matching rows, a row without a code (NULL) counting on its own, so two lines of one
      order are one order.
    """

    cdef Match m
    cdef const row_t[::1] _src
    cdef bint _have_src
    cdef list _filters            # memoryviews behind m.cols / m.masks
    cdef const cid_t[::1] _cid
    cdef const sec_t[::1] _ts
    cdef const uint8_t[::1] _row_mask
    cdef const double[::1] _amount
    cdef const word_t[::1] _candidates
    cdef const uint64_t[::1] _then_keys
    cdef object _then_words       # bitset of the contacts that have a "then no" key
    cdef const code_t[::1] _distinct
    cdef bint _have_distinct

    def __init__(self, const cid_t[::1] cid not None, const sec_t[::1] ts not None,
                 Py_ssize_t r0, Py_ssize_t r1, *, source_rows=None, code_filters=(),
                 row_mask=None, amount=None, candidates=None, then_keys=None,
                 uint64_t within_s=0, only_contact=None, distinct_codes=None):
        cdef Match* m = &self.m
        cdef const code_t[::1] col
        cdef const uint8_t[::1] mask
        cdef Py_ssize_t n = cid.shape[0]
        if ts.shape[0] != n:
            raise ValueError(f"cid/ts length mismatch: {n} != {ts.shape[0]}")
        if not (0 <= r0 <= r1 <= n):
            raise ValueError(f"window [{r0}, {r1}) outside the log of {n} rows")
        self._cid = cid
        self._ts = ts
        m.cid = &cid[0] if n else NULL
        m.ts = &ts[0] if n else NULL
        m.r0 = r0
        m.r1 = r1

        self._have_src = source_rows is not None
        if self._have_src:
            self._src = source_rows
            _check_rows(self._src, r0, r1)

        code_filters = list(code_filters)
        if len(code_filters) > MAX_CODE_FILTERS:
            raise ValueError(f"at most {MAX_CODE_FILTERS} code filters per event condition")
        self._filters = []
        m.n_filters = 0
        for k, (col_obj, mask_obj) in enumerate(code_filters):
            col = col_obj
            mask = mask_obj
            if col.shape[0] < r1:
                raise ValueError(
                    f"code filter {k}: column of {col.shape[0]} rows is shorter than "
                    f"the window end {r1}")
            self._filters.append((col, mask))
            m.cols[m.n_filters] = &col[0] if col.shape[0] else NULL
            m.masks[m.n_filters] = &mask[0] if mask.shape[0] else NULL
            m.mask_len[m.n_filters] = mask.shape[0]
            m.n_filters += 1

        m.row_mask = NULL
        if row_mask is not None:
            self._row_mask = row_mask
            if self._row_mask.shape[0] != r1 - r0:
                raise ValueError(f"row_mask has {self._row_mask.shape[0]} entries, "
                                 f"window {r1 - r0}")
            if self._row_mask.shape[0]:
                m.row_mask = &self._row_mask[0]

        m.amount = NULL
        if amount is not None:
            self._amount = amount
            if self._amount.shape[0] < r1:
                raise ValueError(f"amount column of {self._amount.shape[0]} rows is "
                                 f"shorter than the window end {r1}")
            if self._amount.shape[0]:
                m.amount = &self._amount[0]

        m.candidates = NULL
        m.n_candidate_words = 0
        if candidates is not None:
            self._candidates = candidates
            m.n_candidate_words = self._candidates.shape[0]
            if m.n_candidate_words:
                m.candidates = &self._candidates[0]
            else:  # an empty set: never a match (any non-NULL pointer, zero words)
                m.candidates = <const word_t*> &m.n_candidate_words

        m.then_keys = NULL
        m.then_bits = NULL
        m.n_then_words = 0
        m.n_then = 0
        m.within_s = within_s
        if then_keys is not None:
            self._then_keys = then_keys
            m.n_then = self._then_keys.shape[0]
            if m.n_then:
                _check_sorted(self._then_keys)
                m.then_keys = &self._then_keys[0]
                self._build_then_bits()

        m.only_cid = -1
        if only_contact is not None:
            if not (0 <= only_contact <= UINT32_MAX):
                raise ValueError(f"only_contact {only_contact} is not a contact id")
            m.only_cid = only_contact

        self._have_distinct = distinct_codes is not None
        if self._have_distinct:
            self._distinct = distinct_codes
            if self._distinct.shape[0] < r1:
                raise ValueError(f"distinct_codes column of {self._distinct.shape[0]} rows "
                                 f"is shorter than the window end {r1}")

    cdef int _build_then_bits(self) except -1:
        """Most contacts have no "then no" event at all (orders are rare next to carts):
        a bit test rejects them before the binary search (10x on the abandoned-cart query)."""
        cdef Py_ssize_t j
        cdef cid_t top = <cid_t> (self.m.then_keys[self.m.n_then - 1] >> 32)
        self._then_words = np.zeros((top >> 6) + 1, dtype=np.uint64)
        cdef word_t[::1] tw = self._then_words
        with nogil:
            for j in range(self.m.n_then):
                _bit_set(&tw[0], <cid_t> (self.m.then_keys[j] >> 32))
        self.m.then_bits = &tw[0]
        self.m.n_then_words = tw.shape[0]
        return 0

    @property
    def window(self) -> tuple[int, int]:
        """The rows ``[r0, r1)`` of the log."""
        return self.m.r0, self.m.r1

    @property
    def n_rows(self) -> int:
        """Rows the kernels visit: the source rows, or the whole window."""
        return self._src.shape[0] if self._have_src else self.m.r1 - self.m.r0


cdef struct Rule:
    uint64_t count_min
    uint64_t count_max
    bint use_sum
    double sum_min
    double sum_max


cdef class CountRange:
    """Which contacts qualify, from their matching events: the "count" and "sum" parts.

    A contact with at least one matching event qualifies when its count lies in
    ``[count_min, count_max]`` and, with a ``sum_range`` ``(lo, hi)``, its sum of the
    amounts of those events (NaN adds nothing) lies in ``[lo, hi]``.
    """

    cdef Rule r

    def __init__(self, uint64_t count_min=1, uint64_t count_max=UINT64_MAX, *,
                 sum_range=None):
        self.r.count_min = count_min
        self.r.count_max = count_max
        self.r.use_sum = sum_range is not None
        self.r.sum_min, self.r.sum_max = (
            sum_range if sum_range is not None else (0.0, 0.0))
        if isnan(self.r.sum_min) or isnan(self.r.sum_max):
            raise ValueError("sum_range bounds must not be NaN")

    @property
    def count_min(self) -> int:
        return self.r.count_min

    @property
    def count_max(self) -> int:
        return self.r.count_max

    @property
    def sum_range(self) -> tuple[float, float] | None:
        return (self.r.sum_min, self.r.sum_max) if self.r.use_sum else None


cdef class ScanScratch:
    """Per-contact counters of `count_matches`: all-zero between calls.

    One per thread (gRPC workers evaluate concurrently). `ensure` grows it by half at a
    time; np.zeros maps untouched pages lazily, so a large store pays only for the pages
    a query counts in.
    """

    cdef uint32_t[::1] _counts
    cdef double[::1] _sums
    cdef cid_t[::1] _touched

    def __init__(self):
        self._counts = np.zeros(0, dtype=np.uint32)
        self._touched = np.zeros(0, dtype=np.uint32)
        self._sums = np.zeros(0, dtype=np.float64)

    def ensure(self, Py_ssize_t n_contacts, bint with_sums=False):
        """Room for `n_contacts` counters (and sums, `with_sums`)."""
        cdef Py_ssize_t size
        if n_contacts < 0:
            raise ValueError(f"n_contacts must be >= 0, got {n_contacts}")
        if self._counts.shape[0] < n_contacts:
            size = max(n_contacts, self._counts.shape[0] + (self._counts.shape[0] >> 1))
            self._counts = np.zeros(size, dtype=np.uint32)
            # one spare slot: the count kernel appends before it knows a contact is new
            self._touched = np.zeros(size + 1, dtype=np.uint32)
            self._sums = np.zeros(0, dtype=np.float64)
        if with_sums and self._sums.shape[0] < self._counts.shape[0]:
            self._sums = np.zeros(self._counts.shape[0], dtype=np.float64)

    @property
    def capacity(self) -> int:
        """Contacts the counters can hold."""
        return self._counts.shape[0]

    @property
    def counts(self):
        """The per-contact counters (a view; zero between calls)."""
        return np.asarray(self._counts)

    @property
    def sums(self):
        """The per-contact sums (a view; zero between calls; empty until needed)."""
        return np.asarray(self._sums)


cdef class CountResult:
    """What `count_matches` found: contacts split into ``yes`` and ``no`` bitsets.

    ``yes``: contacts with a matching event whose count (and sum) qualify; ``no``:
    contacts with a matching event that do not qualify. Contacts without any matching
    event are in neither: the caller decides whether "zero events" qualifies
    (``count <= 0`` means "did not happen"). ``matched`` events, ``contacts`` touched.
    """

    cdef readonly object yes
    cdef readonly object no
    cdef readonly Py_ssize_t matched
    cdef readonly Py_ssize_t contacts


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*> a)[0], y = (<const uint64_t*> b)[0]
    return (x > y) - (x < y)


cdef int _check_rows(const row_t[::1] src, Py_ssize_t r0, Py_ssize_t r1) except -1:
    """Every source row must lie in the window: rows index columns without bounds checks."""
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(src.shape[0]):
            if src[i] < r0 or src[i] >= r1:
                bad = True
                break
    if bad:
        raise ValueError(f"source row {src[i]} outside the window [{r0}, {r1})")
    return 0


cdef int _check_sorted(const uint64_t[::1] keys) except -1:
    """"Then no" keys are binary-searched: they must be ascending."""
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(1, keys.shape[0]):
            if keys[i] < keys[i - 1]:
                bad = True
                break
    if bad:
        raise ValueError(f"then_keys are not sorted at position {i}")
    return 0


cdef enum:
    # count_matches sorts the matching rows' contacts when the visited rows are at most
    # 1/SORT_RATIO of the contacts, and counts per contact otherwise.
    SORT_RATIO = 4
    CHUNK = 4096   # matching rows collected before they are counted (on the stack)


cdef inline void _reset_scratch(uint32_t* counts, double* sums, bint use_sum,
                                const cid_t* touched, Py_ssize_t n_touched,
                                const uint64_t* dkeys, Py_ssize_t n_keys) noexcept nogil:
    """Zero what a failed count touched, so the scratch stays clean for the next query
    (including the sums of rows whose code was still waiting to be counted)."""
    cdef Py_ssize_t j
    for j in range(n_touched):
        counts[touched[j]] = 0
        if use_sum:
            sums[touched[j]] = 0
    if use_sum:
        for j in range(n_keys):
            sums[<cid_t> (dkeys[j] >> 32)] = 0


cdef inline Py_ssize_t _tally(const cid_t* cb, Py_ssize_t n, uint32_t* counts,
                              cid_t* touched, Py_ssize_t n_touched) noexcept nogil:
    """Add one to the counter of each contact in `cb`, appending first-seen contacts to
    `touched`; returns the new length of `touched`.

    Branch-free on purpose: the counters are scattered over n_contacts * 4 bytes, so a
    read of one usually misses the cache. A branch on its value ("first time?") is
    mispredicted often and each misprediction discards the misses already in flight,
    which serialised them: ~150 ns per matching row at 1M contacts. Without the branch
    the misses of successive rows overlap. The append is unconditional and only the
    length moves when the contact is new.
    """
    cdef Py_ssize_t j
    cdef cid_t c
    cdef uint32_t k
    for j in range(n):
        c = cb[j]
        k = counts[c]
        touched[n_touched] = c
        n_touched += k == 0
        counts[c] = k + (k != UINT32_MAX)
    return n_touched


cdef Py_ssize_t _count_kernel(const Match* m, const row_t* src, Py_ssize_t n_rows,
                              const Rule* rule, Py_ssize_t n_contacts,
                              uint32_t* counts, double* sums, cid_t* touched,
                              word_t* yes, word_t* no, const code_t* dcodes,
                              uint64_t* dkeys, Py_ssize_t* n_matched,
                              Py_ssize_t* n_touched_out, cid_t* bad_cid) noexcept nogil:
    """The count loop: -1 (and `bad_cid`) when a row names a contact >= n_contacts.

    Matching rows are collected a chunk at a time (their contacts into `cb`), then tallied
    branch-free (`_tally`); the verdict per touched contact is branch-free too.

    With `dcodes` (the distinct-count column; `dkeys` has room for `n_rows` keys), a
    matching row with a code adds its amount at once but is counted later: its
    ``cid << 32 | code`` key is collected, the keys are sorted and each distinct key
    counts one. A row without a code (NO_CODE) counts on its own.
    """
    cdef Py_ssize_t i, r, n_touched = 0, matched = 0, n_keys = 0, n_cb = 0
    cdef cid_t c
    cdef uint32_t k
    cdef code_t code
    cdef uint64_t key, prev_key = 0, ok
    cdef double a, s
    cdef bint use_sum = rule.use_sum
    cdef bint add_amount = use_sum and m.amount != NULL  # a type without amounts sums to 0
    cdef cid_t cb[CHUNK]
    for i in range(n_rows):
        r = src[i] if src != NULL else m.r0 + i
        if not _row_matches(m, r):
            continue
        c = m.cid[r]
        if c >= n_contacts:
            n_touched = _tally(cb, n_cb, counts, touched, n_touched)
            _reset_scratch(counts, sums, use_sum, touched, n_touched, dkeys, n_keys)
            bad_cid[0] = c
            return -1
        if add_amount:
            a = m.amount[r]
            sums[c] += 0.0 if isnan(a) else a
        matched += 1
        if dcodes != NULL:
            code = dcodes[r]
            if code != NO_CODE:  # counted below, once per distinct code
                dkeys[n_keys] = ((<uint64_t> c) << 32) | code
                n_keys += 1
                continue
        cb[n_cb] = c
        n_cb += 1
        if n_cb == CHUNK:
            n_touched = _tally(cb, n_cb, counts, touched, n_touched)
            n_cb = 0
    n_touched = _tally(cb, n_cb, counts, touched, n_touched)
    if n_keys:
        qsort(dkeys, n_keys, sizeof(uint64_t), _cmp_u64)
        n_cb = 0
        for i in range(n_keys):
            key = dkeys[i]
            if i and key == prev_key:
                continue
            prev_key = key
            cb[n_cb] = <cid_t> (key >> 32)
            n_cb += 1
            if n_cb == CHUNK:
                n_touched = _tally(cb, n_cb, counts, touched, n_touched)
                n_cb = 0
        n_touched = _tally(cb, n_cb, counts, touched, n_touched)
    for i in range(n_touched):
        c = touched[i]
        k = counts[c]
        ok = (k >= rule.count_min) & (k <= rule.count_max)
        if use_sum:
            s = sums[c]
            ok &= (s >= rule.sum_min) & (s <= rule.sum_max)
            sums[c] = 0
        yes[c >> 6] |= ok << (c & 63)
        no[c >> 6] |= (ok ^ 1) << (c & 63)
        counts[c] = 0
    n_matched[0] = matched
    n_touched_out[0] = n_touched
    return 0


cdef enum:
    RADIX_BITS = 12   # digit of the contact sort: 4,096 buckets, two passes to 16M contacts
    RADIX_BUCKETS = 4096


cdef Py_ssize_t _collect_cids(const Match* m, const row_t* src, Py_ssize_t n_rows,
                              cid_t* out) noexcept nogil:
    """The contacts of the matching rows, in visiting order; returns how many."""
    cdef Py_ssize_t i, n_out = 0
    cdef Py_ssize_t r
    cdef const cid_t* cid = m.cid
    if _only_rows(m):
        # Every visited row matches (a gather of postings already applied the filter):
        # a plain gather, which keeps many cache misses in flight.
        if src != NULL:
            for i in range(n_rows):
                out[i] = cid[src[i]]
        else:
            for i in range(n_rows):
                out[i] = cid[m.r0 + i]
        return n_rows
    for i in range(n_rows):
        r = src[i] if src != NULL else m.r0 + i
        if _row_matches(m, r):
            out[n_out] = cid[r]
            n_out += 1
    return n_out


cdef void _radix_sort(cid_t* a, cid_t* tmp, Py_ssize_t n, cid_t top) noexcept nogil:
    """Sort `a` (values <= top) in place by LSD radix, `tmp` as the second buffer."""
    cdef Py_ssize_t hist[RADIX_BUCKETS]
    cdef Py_ssize_t i, total, c
    cdef int shift = 0
    cdef cid_t* x = a
    cdef cid_t* y = tmp
    cdef cid_t* t
    while True:
        memset(hist, 0, sizeof(hist))
        for i in range(n):
            hist[(x[i] >> shift) & (RADIX_BUCKETS - 1)] += 1
        total = 0
        for i in range(RADIX_BUCKETS):
            c = hist[i]
            hist[i] = total
            total += c
        for i in range(n):
            c = (x[i] >> shift) & (RADIX_BUCKETS - 1)
            y[hist[c]] = x[i]
            hist[c] += 1
        t = x
        x = y
        y = t
        shift += RADIX_BITS
        if shift >= 32 or (top >> shift) == 0:
            break
    if x != a:
        memcpy(a, x, n * sizeof(cid_t))


cdef Py_ssize_t _count_sorted_kernel(const Match* m, const row_t* src, Py_ssize_t n_rows,
                                     const Rule* rule, Py_ssize_t n_contacts,
                                     cid_t* buf, word_t* yes, word_t* no,
                                     Py_ssize_t* n_matched, Py_ssize_t* n_touched_out,
                                     cid_t* bad_cid) noexcept nogil:
    """`_count_kernel` for a count without sum or distinct codes, by sorting contacts.

    A counter per contact costs a cache miss per matching row once the counters
    outgrow the cache (4 bytes x n_contacts); collecting the matching rows' contacts,
    radix-sorting them and reading the runs touches memory in order instead: ~10x
    faster for a selective condition at 1M contacts. `buf` holds 2 * n_rows contacts.
    """
    cdef Py_ssize_t n = _collect_cids(m, src, n_rows, buf)
    cdef Py_ssize_t i, j, touched = 0
    cdef cid_t c, top = 0
    cdef uint64_t k, ok
    for i in range(n):
        if buf[i] > top:
            top = buf[i]
    if n and top >= n_contacts:
        bad_cid[0] = top
        return -1
    _radix_sort(buf, buf + n, n, top)
    i = 0
    while i < n:
        c = buf[i]
        j = i + 1
        while j < n and buf[j] == c:
            j += 1
        k = j - i
        ok = (k >= rule.count_min) & (k <= rule.count_max)
        yes[c >> 6] |= ok << (c & 63)
        no[c >> 6] |= (ok ^ 1) << (c & 63)
        touched += 1
        i = j
    n_matched[0] = n
    n_touched_out[0] = touched
    return 0


def count_matches(EventScanParams scan not None, CountRange rule not None,
                  ScanScratch scratch not None, Py_ssize_t n_contacts):
    """Count matching events per contact and split the contacts by `rule` (a CountRange).

    `scratch` must hold `n_contacts` counters (and sums when the rule has a sum range);
    it is left all-zero, so a query costs O(rows matched), never O(contacts). Returns a
    `CountResult` whose bitsets hold `n_contacts` bits. ValueError when a row names a
    contact >= `n_contacts` (a broken store invariant), with the scratch left clean.
    """
    cdef const Match* m = &scan.m
    if n_contacts < 0:
        raise ValueError(f"n_contacts must be >= 0, got {n_contacts}")
    if scratch._counts.shape[0] < n_contacts:
        raise ValueError(f"scratch holds {scratch._counts.shape[0]} counters, "
                         f"need {n_contacts}: call scratch.ensure()")
    if rule.r.use_sum and scratch._sums.shape[0] < n_contacts:
        raise ValueError("the rule sums amounts: call scratch.ensure(n, with_sums=True)")
    yes_arr = np.zeros((n_contacts + 63) >> 6, dtype=np.uint64)
    no_arr = np.zeros((n_contacts + 63) >> 6, dtype=np.uint64)
    cdef word_t[::1] yes = yes_arr
    cdef word_t[::1] no = no_arr
    cdef Py_ssize_t matched = 0, touched = 0, rc
    cdef cid_t bad_cid = 0
    cdef Py_ssize_t n_rows = scan._src.shape[0] if scan._have_src else m.r1 - m.r0
    cdef const row_t* src = NULL
    if scan._have_src and n_rows:
        src = &scan._src[0]
    # n_contacts == 0 leaves every array empty: the kernel then stops at the first
    # matching row (it names a contact >= 0) before writing anything.
    cdef bint some = n_contacts > 0
    cdef uint32_t* counts = &scratch._counts[0] if some else NULL
    cdef double* sums = &scratch._sums[0] if some and rule.r.use_sum else NULL
    cdef cid_t* touched_p = &scratch._touched[0] if some else NULL
    cdef word_t* yes_p = &yes[0] if some else NULL
    cdef word_t* no_p = &no[0] if some else NULL
    # The distinct count collects up to one key per visited row.
    cdef const code_t* dcodes = NULL
    cdef uint64_t* dkeys_p = NULL
    cdef uint64_t[::1] dkeys
    if scan._have_distinct:
        dkeys = np.empty(max(n_rows, 1), dtype=np.uint64)
        dkeys_p = &dkeys[0]
        if scan._distinct.shape[0]:  # empty only for an empty window: nothing to visit
            dcodes = &scan._distinct[0]
    # Few matching rows next to many contacts: sort their contacts instead of
    # scattering counters (see _count_sorted_kernel).
    cdef cid_t[::1] buf
    cdef bint by_sort = (not rule.r.use_sum and dcodes == NULL and some
                         and n_rows * SORT_RATIO <= n_contacts)
    if by_sort:
        buf = np.empty(2 * max(n_rows, 1), dtype=np.uint32)
        with nogil:
            rc = _count_sorted_kernel(m, src, n_rows, &rule.r, n_contacts, &buf[0],
                                      yes_p, no_p, &matched, &touched, &bad_cid)
    else:
        with nogil:
            rc = _count_kernel(m, src, n_rows, &rule.r, n_contacts, counts, sums,
                               touched_p, yes_p, no_p, dcodes, dkeys_p, &matched,
                               &touched, &bad_cid)
    if rc != 0:
        raise ValueError(f"event log names contact {bad_cid} but there are only {n_contacts}")
    cdef CountResult result = CountResult.__new__(CountResult)
    result.yes = yes_arr
    result.no = no_arr
    result.matched = matched
    result.contacts = touched
    return result


cdef Py_ssize_t _distinct_sorted(cid_t* a, Py_ssize_t n) noexcept nogil:
    """Drop repeats from the sorted `a` in place; returns the new length."""
    cdef Py_ssize_t i, k = 0
    for i in range(n):
        if k == 0 or a[i] != a[k - 1]:
            a[k] = a[i]
            k += 1
    return k


def distinct_contacts(const cid_t[::1] cids, Py_ssize_t n_contacts):
    """The distinct values of `cids` (uint32, ascending): ``matching_contacts``'s sort
    for contacts collected elsewhere (the per-category postings' contact lists,
    ``EventLog.attribute_cids``). ValueError when one is >= `n_contacts`."""
    cdef Py_ssize_t n = cids.shape[0], i, k
    cdef cid_t top = 0
    if n_contacts < 0:
        raise ValueError(f"n_contacts must be >= 0, got {n_contacts}")
    if n == 0:
        return np.empty(0, dtype=np.uint32)
    buf = np.empty(2 * n, dtype=np.uint32)
    cdef cid_t[::1] b = buf
    with nogil:
        memcpy(&b[0], &cids[0], n * sizeof(cid_t))
        for i in range(n):
            if b[i] > top:
                top = b[i]
    if top >= n_contacts:
        raise ValueError(f"contact {top} but there are only {n_contacts}")
    with nogil:
        _radix_sort(&b[0], &b[0] + n, n, top)
        k = _distinct_sorted(&b[0], n)
    return buf[:k].copy()


def matching_contacts(EventScanParams scan not None, Py_ssize_t n_contacts):
    """The distinct contacts (uint32, ascending) with at least one matching event.

    `count_matches` for the plain "at least one event" rule without its n-bit
    ``yes`` / ``no`` bitsets: an event condition's first AND operand over a small
    gathered window (the reference segment's orders of three categories: ~120k
    contacts of 10M) paid more for zeroing two bitsets of all contacts and turning
    ``yes`` back into a BitMap than for its rows. Here the matching rows' contacts
    are collected, radix-sorted and de-duplicated: O(matching rows), never
    O(contacts). ValueError when a row names a contact >= `n_contacts`.
    """
    cdef const Match* m = &scan.m
    if n_contacts < 0:
        raise ValueError(f"n_contacts must be >= 0, got {n_contacts}")
    cdef Py_ssize_t n_rows = scan._src.shape[0] if scan._have_src else m.r1 - m.r0
    cdef const row_t* src = NULL
    if scan._have_src and n_rows:
        src = &scan._src[0]
    if n_rows == 0:
        return np.empty(0, dtype=np.uint32)
    buf = np.empty(2 * n_rows, dtype=np.uint32)
    cdef cid_t[::1] b = buf
    cdef Py_ssize_t i, n, k
    cdef cid_t top = 0
    with nogil:
        n = _collect_cids(m, src, n_rows, &b[0])
        for i in range(n):
            if b[i] > top:
                top = b[i]
    if n and top >= n_contacts:
        raise ValueError(f"event log names contact {top} but there are only {n_contacts}")
    with nogil:
        _radix_sort(&b[0], &b[0] + n, n, top)
        k = _distinct_sorted(&b[0], n)
    return buf[:k].copy()


cdef Py_ssize_t _collect_kernel(const Match* m, const row_t* src, Py_ssize_t n_rows,
                                bint as_keys, row_t* out_rows,
                                uint64_t* out_keys) noexcept nogil:
    """Matching rows (or their cid << 32 | ts keys) in visiting order; returns how many."""
    cdef Py_ssize_t i, r, n_out = 0
    for i in range(n_rows):
        r = src[i] if src != NULL else m.r0 + i
        if not _row_matches(m, r):
            continue
        if as_keys:
            out_keys[n_out] = ((<uint64_t> m.cid[r]) << 32) | m.ts[r]
        else:
            out_rows[n_out] = <row_t> r
        n_out += 1
    return n_out


cdef object _collect(EventScanParams scan, bint as_keys):
    cdef const Match* m = &scan.m
    cdef Py_ssize_t n_rows = scan._src.shape[0] if scan._have_src else m.r1 - m.r0
    cdef const row_t* src = NULL
    if scan._have_src and n_rows:
        src = &scan._src[0]
    out = np.empty(n_rows, dtype=np.uint64 if as_keys else np.uint32)
    if n_rows == 0:
        return out
    cdef row_t[::1] orows
    cdef uint64_t[::1] okeys
    cdef row_t* prows = NULL
    cdef uint64_t* pkeys = NULL
    if as_keys:
        okeys = out
        pkeys = &okeys[0]
    else:
        orows = out
        prows = &orows[0]
    cdef Py_ssize_t n_out
    with nogil:
        n_out = _collect_kernel(m, src, n_rows, as_keys, prows, pkeys)
    out = out[:n_out]
    if as_keys or scan._have_src:  # a window scan visits rows in order already
        out.sort()
    return out


def collect_rows(EventScanParams scan not None):
    """Row numbers (uint32, ascending) of the matching events: explain's evidence."""
    return _collect(scan, False)


def collect_keys(EventScanParams scan not None):
    """Sorted ``cid << 32 | ts`` keys (uint64) of the matching events: the ``then_keys``
    of the condition whose "then no" part these events are."""
    return _collect(scan, True)
