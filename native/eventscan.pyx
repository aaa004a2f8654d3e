"""Kernels that scan one event type's log: match rows against filters, count per contact.

An event condition ("viewed brand B at least twice in the last 30 days, then no order within
7 days") becomes one call here. Python (engine/segments/) picks the rows to look at — the
whole time window ``[r0, r1)`` of the log, or the rows gathered from the postings of the most
selective filter — and compiles the other filters to per-code masks; these kernels then run
without the GIL and without a Python object per row.

Scratch arrays (``counts``, ``sums``, ``touched``) are sized to the number of contacts and
owned by the caller (one set per thread); they are all-zero on entry and left all-zero on
exit, so a query costs O(rows matched), never O(contacts).
"""

from libc.math cimport isnan
from libc.stdint cimport UINT32_MAX, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort

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


cdef int _prepare(Match* m, const cid_t[::1] cid, const sec_t[::1] ts, Py_ssize_t r0,
                  Py_ssize_t r1, list code_filters, object row_mask, object amount,
                  object candidates, object then_keys, uint64_t within_s,
                  int64_t only_cid) except -1:
    """Fill `m` from Python arguments, validating shapes while we hold the GIL."""
    cdef const code_t[::1] col
    cdef const uint8_t[::1] mask
    cdef const uint8_t[::1] rmask
    cdef const double[::1] amt
    cdef const word_t[::1] cand
    cdef const uint64_t[::1] keys
    cdef Py_ssize_t n = cid.shape[0]
    if ts.shape[0] != n:
        raise ValueError(f"cid/ts length mismatch: {n} != {ts.shape[0]}")
    if not (0 <= r0 <= r1 <= n):
        raise ValueError(f"window [{r0}, {r1}) outside the log of {n} rows")
    if len(code_filters) > MAX_CODE_FILTERS:
        raise ValueError(f"at most {MAX_CODE_FILTERS} code filters per event condition")
    m.cid = &cid[0] if n else NULL
    m.ts = &ts[0] if n else NULL
    m.r0 = r0
    m.r1 = r1
    m.n_filters = 0
    for col_obj, mask_obj in code_filters:
        col = col_obj
        mask = mask_obj
        if col.shape[0] < r1:
            raise ValueError("a filter column is shorter than the window")
        m.cols[m.n_filters] = &col[0] if col.shape[0] else NULL
        m.masks[m.n_filters] = &mask[0] if mask.shape[0] else NULL
        m.mask_len[m.n_filters] = mask.shape[0]
        m.n_filters += 1
    m.row_mask = NULL
    if row_mask is not None:
        rmask = row_mask
        if rmask.shape[0] != r1 - r0:
            raise ValueError(f"row_mask has {rmask.shape[0]} entries, window {r1 - r0}")
        if rmask.shape[0]:
            m.row_mask = &rmask[0]
    m.amount = NULL
    if amount is not None:
        amt = amount
        if amt.shape[0] < r1:
            raise ValueError("amount column is shorter than the window")
        if amt.shape[0]:
            m.amount = &amt[0]
    m.candidates = NULL
    m.n_candidate_words = 0
    if candidates is not None:
        cand = candidates
        m.n_candidate_words = cand.shape[0]
        if cand.shape[0]:
            m.candidates = &cand[0]
        else:
            m.candidates = <const word_t*> &m.n_candidate_words  # empty set: never a match
    m.then_keys = NULL
    m.then_bits = NULL
    m.n_then_words = 0
    m.n_then = 0
    m.within_s = within_s
    if then_keys is not None:
        keys = then_keys
        m.n_then = keys.shape[0]
        if keys.shape[0]:
            m.then_keys = &keys[0]
    m.only_cid = only_cid
    return 0


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


def count_matches(const cid_t[::1] cid, const sec_t[::1] ts, Py_ssize_t r0, Py_ssize_t r1,
                  object source_rows, list code_filters, object row_mask, object amount,
                  object candidates, object then_keys, uint64_t within_s,
                  uint64_t count_min, uint64_t count_max,
                  bint use_sum, double sum_min, double sum_max,
                  uint32_t[::1] counts, double[::1] sums, cid_t[::1] touched,
                  word_t[::1] yes, word_t[::1] no, object distinct_codes=None):
    """Count matching events per contact and sort contacts into `yes` and `no` (OUT).

    With `distinct_codes` (a code column of the log, e.g. ``order_id``), a contact's
    count is the number of distinct codes among its matching rows, a row without a code
    (NO_CODE) counting on its own: two lines of one order are one order. The matching
    rows' (cid << 32 | code) keys are sorted once (qsort, no GIL) and counted per run.

    A contact with at least one matching event goes to `yes` when its count lies in
    [count_min, count_max] and (if `use_sum`) its sum of `amount` in [sum_min, sum_max],
    else to `no`. Contacts with no matching event go to neither: the caller decides whether
    "zero events" qualifies (``{"max": 0}`` means did not happen). Rows come from
    `source_rows` (row numbers inside [r0, r1)) or, when it is None, the whole window.
    `counts`, `sums` and `touched` are scratch (INOUT, zero on entry and exit).
    Returns (events matched, contacts touched).
    """
    cdef Match m
    cdef const row_t[::1] src
    cdef bint have_src = source_rows is not None
    _prepare(&m, cid, ts, r0, r1, code_filters, row_mask, amount if use_sum else None,
             candidates, then_keys, within_s, -1)
    # A type without an amount column sums to 0 (NULL amounts add nothing).
    cdef Py_ssize_t j
    then_words = None
    cdef word_t[::1] tw
    if m.then_keys != NULL:
        then_words = np.zeros((counts.shape[0] >> 6) + 1, dtype=np.uint64)
        tw = then_words
        with nogil:
            for j in range(m.n_then):
                _bit_set(&tw[0], <cid_t> (m.then_keys[j] >> 32))
        m.then_bits = &tw[0]
        m.n_then_words = tw.shape[0]
    if touched.shape[0] < counts.shape[0] or (use_sum and sums.shape[0] < counts.shape[0]):
        raise ValueError("touched and sums must be as long as counts")
    if have_src:
        src = source_rows
        _check_rows(src, r0, r1)
    cdef Py_ssize_t n_contacts = counts.shape[0]
    if cid.shape[0] and r1 > r0:
        # The largest cid must fit the scratch arrays and the output bitsets.
        if yes.shape[0] * 64 < n_contacts or no.shape[0] * 64 < n_contacts:
            raise ValueError("output bitsets are smaller than the contact count")
    cdef Py_ssize_t i, r, n_rows = src.shape[0] if have_src else r1 - r0
    cdef Py_ssize_t n_touched = 0, matched = 0, n_keys = 0
    cdef cid_t c, bad_cid = 0
    cdef uint32_t k
    cdef code_t code
    cdef double a, s
    cdef int rc = 0
    cdef bint distinct = distinct_codes is not None
    cdef const code_t[::1] dcol
    cdef uint64_t[::1] dkeys
    cdef uint64_t key, prev_key = 0
    if distinct:
        dcol = distinct_codes
        if dcol.shape[0] < r1:
            raise ValueError("distinct_codes is shorter than the window")
        dkeys = np.empty(max(n_rows, 1), dtype=np.uint64)
    with nogil:
        for i in range(n_rows):
            r = src[i] if have_src else r0 + i
            if not _row_matches(&m, r):
                continue
            c = m.cid[r]
            if c >= n_contacts:
                rc = -1
                bad_cid = c
                break
            if use_sum and m.amount != NULL:
                a = m.amount[r]
                if not isnan(a):
                    sums[c] += a
            matched += 1
            if distinct:
                code = dcol[r]
                if code != NO_CODE:  # counted below, once per distinct code
                    dkeys[n_keys] = ((<uint64_t> c) << 32) | code
                    n_keys += 1
                    continue
            if counts[c] == 0:
                touched[n_touched] = c
                n_touched += 1
            if counts[c] != UINT32_MAX:
                counts[c] += 1
        if rc == 0 and n_keys:
            qsort(&dkeys[0], n_keys, sizeof(uint64_t), _cmp_u64)
            for i in range(n_keys):
                key = dkeys[i]
                if i and key == prev_key:
                    continue
                prev_key = key
                c = <cid_t> (key >> 32)
                if counts[c] == 0:
                    touched[n_touched] = c
                    n_touched += 1
                if counts[c] != UINT32_MAX:
                    counts[c] += 1
        for i in range(n_touched if rc == 0 else 0):
            c = touched[i]
            k = counts[c]
            if k >= count_min and k <= count_max:
                if use_sum:
                    s = sums[c]
                    if s >= sum_min and s <= sum_max:
                        _bit_set(&yes[0], c)
                    else:
                        _bit_set(&no[0], c)
                    sums[c] = 0
                else:
                    _bit_set(&yes[0], c)
            else:
                _bit_set(&no[0], c)
                if use_sum:
                    sums[c] = 0
            counts[c] = 0
    if rc != 0:
        # Reset what we touched so the scratch stays clean, then report the broken invariant.
        for i in range(n_touched):
            counts[touched[i]] = 0
            if use_sum:
                sums[touched[i]] = 0
        if use_sum:  # rows whose code was still waiting to be counted
            for i in range(n_keys):
                sums[<cid_t> (dkeys[i] >> 32)] = 0
        raise ValueError(f"event log names contact {bad_cid} but there are only {n_contacts}")
    return matched, n_touched


def collect_matches(const cid_t[::1] cid, const sec_t[::1] ts, Py_ssize_t r0, Py_ssize_t r1,
                    object source_rows, list code_filters, object row_mask,
                    object candidates, object then_keys, uint64_t within_s,
                    int64_t only_cid, bint as_keys):
    """Matching rows (uint32 row numbers) or, with `as_keys`, sorted (cid << 32 | ts) keys.

    Keys feed the "then no" check of another condition; rows feed explain (`only_cid`).
    """
    cdef Match m
    cdef const row_t[::1] src
    cdef bint have_src = source_rows is not None
    _prepare(&m, cid, ts, r0, r1, code_filters, row_mask, None, candidates, then_keys,
             within_s, only_cid)
    if have_src:
        src = source_rows
        _check_rows(src, r0, r1)
    cdef Py_ssize_t i, r, n_rows = src.shape[0] if have_src else r1 - r0, n_out = 0
    out_rows = np.empty(n_rows, dtype=np.uint32)
    out_keys = np.empty(n_rows if as_keys else 0, dtype=np.uint64)
    cdef row_t[::1] orows = out_rows
    cdef uint64_t[::1] okeys = out_keys
    with nogil:
        for i in range(n_rows):
            r = src[i] if have_src else r0 + i
            if not _row_matches(&m, r):
                continue
            if as_keys:
                okeys[n_out] = ((<uint64_t> m.cid[r]) << 32) | m.ts[r]
            else:
                orows[n_out] = <row_t> r
            n_out += 1
    if as_keys:
        keys = out_keys[:n_out]
        keys.sort()
        return keys
    rows = out_rows[:n_out]
    if have_src:
        rows.sort()
    return rows
