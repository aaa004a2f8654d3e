"""RFM kernels: per-contact window rollups of the order log, scores, named segments.

All three are one pass over their input with typed memoryviews and no GIL; the ``def``
wrappers check shapes and bounds first, so the ``cdef`` loops never index out of range.
See engine/rfm.py for the definitions they implement (issue 11, docs/rfm.md).
"""

from libc.math cimport floor, isnan, rint
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

import numpy as np

from segd.native._types cimport cid_t, code_t, sec_t

cdef enum:
    NO_CODE_ = 0xFFFFFFFF
    STATE_UNSEEN = 0
    STATE_BEFORE = 1   # the (contact, order) pair was seen only before the window
    STATE_IN = 2       # ... and inside the window
    NO_SEGMENT = 255

cdef double DAY_S = 86400.0

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_RFM_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 1)
    #else
    #define SEGD_RFM_PREFETCH_W(p) ((void)(p))
    #endif
    """
    void SEGD_RFM_PREFETCH_W(const void* p) noexcept nogil

# Rows ahead whose contact's accumulator (and order id's owner) is prefetched: the order
# log is in time order, so its contacts are scattered over the whole base and every row's
# accumulator is a cache (and TLB) miss that a prefetch this far ahead overlaps.
cdef Py_ssize_t AHEAD = 16


cdef struct Acc:
    # One contact's running totals side by side: a row touches one cache line, not four
    # arrays (the contact ids of an order log are scattered over the whole base).
    double revenue_win
    uint32_t last
    uint32_t orders_all
    uint32_t orders_win
    uint32_t pad


cdef Py_ssize_t _rollup(
    const cid_t[::1] cids, const sec_t[::1] ts, const double[::1] amount, bint has_amount,
    const code_t[::1] codes, bint has_codes, Py_ssize_t r0, Py_ssize_t r1,
    Acc* acc, cid_t[::1] owner, uint8_t[::1] state, uint32_t[::1] spill,
) noexcept nogil:
    cdef Py_ssize_t i, n_spill = 0
    cdef cid_t c
    cdef code_t o
    cdef bint inwin
    cdef uint32_t new_all, new_win
    cdef Acc* a
    cdef Py_ssize_t ahead_end = r1 - AHEAD if r1 > AHEAD else 0
    for i in range(r1):
        if i < ahead_end:
            SEGD_RFM_PREFETCH_W(&acc[cids[i + AHEAD]])
            if has_codes and codes[i + AHEAD] != NO_CODE_:
                SEGD_RFM_PREFETCH_W(&owner[codes[i + AHEAD]])
        c = cids[i]
        a = &acc[c]
        if ts[i] >= a.last:
            a.last = ts[i]
        inwin = i >= r0
        new_all = 1
        new_win = inwin
        if has_codes:
            o = codes[i]
            if o != NO_CODE_:
                if owner[o] == NO_CODE_:
                    owner[o] = c
                    state[o] = STATE_IN if inwin else STATE_BEFORE
                elif owner[o] == c:
                    new_all = 0
                    new_win = 0
                    if inwin and state[o] == STATE_BEFORE:
                        new_win = 1
                        state[o] = STATE_IN
                else:
                    # An order id another contact used first: exact fallback after the loop.
                    spill[n_spill] = <uint32_t>i
                    n_spill += 1
                    new_all = 0
                    new_win = 0
        a.orders_all += new_all
        a.orders_win += new_win
        if inwin and has_amount and not isnan(amount[i]):
            a.revenue_win += amount[i]
    return n_spill


def window_rollup(
    const cid_t[::1] cids,
    const sec_t[::1] ts,
    amount,
    codes,
    Py_ssize_t r0,
    Py_ssize_t r1,
    Py_ssize_t n_contacts,
    Py_ssize_t n_codes,
):
    """Per contact over order rows [0, r1) (the log is in time order; [r0, r1) is the
    window): last order time, distinct orders before ``r1``, distinct orders and revenue
    in the window.

    ``amount`` (float64, NaN = NULL) and ``codes`` (order_id codes, NO_CODE = a line that
    is an order of its own) may be None. A (contact, order id) pair is one order however
    many lines it has. Returns ``(last, orders_all, orders_win, revenue_win, spill)``:
    ``spill`` holds the rows whose order id was first used by another contact (rare),
    which the caller folds in exactly (engine/rfm.py).
    """
    cdef Py_ssize_t n_rows = cids.shape[0]
    if ts.shape[0] != n_rows:
        raise ValueError(f"cids/ts length mismatch: {n_rows} != {ts.shape[0]}")
    if not (0 <= r0 <= r1 <= n_rows):
        raise ValueError(f"window rows [{r0}, {r1}) outside the log of {n_rows}")
    if r1 > 0xFFFFFFFE:
        raise ValueError("more than 2**32 - 2 order rows")
    cdef const double[::1] amount_v = np.zeros(1) if amount is None else amount
    cdef const code_t[::1] codes_v = np.zeros(1, np.uint32) if codes is None else codes
    if amount is not None and amount_v.shape[0] < r1:
        raise ValueError(f"amount has {amount_v.shape[0]} rows, need {r1}")
    if codes is not None and codes_v.shape[0] < r1:
        raise ValueError(f"codes have {codes_v.shape[0]} rows, need {r1}")
    cdef Py_ssize_t i
    cdef cid_t top_cid = 0
    cdef code_t top_code = 0
    with nogil:
        for i in range(r1):
            if cids[i] > top_cid:
                top_cid = cids[i]
        if codes is not None:
            for i in range(r1):
                if codes_v[i] != NO_CODE_ and codes_v[i] > top_code:
                    top_code = codes_v[i]
    if r1 and top_cid >= n_contacts:
        raise ValueError(f"contact {top_cid} outside the {n_contacts} contacts")
    if codes is not None and r1 and top_code >= n_codes and top_code != 0:
        raise ValueError(f"order code {top_code} outside the {n_codes} order ids")
    # The four outputs are carved from one buffer: one large allocation gets transparent
    # huge pages from numpy (four 4 MB arrays at 1M contacts would fault page by page).
    # Every element is written by the copy-out loop below, so no zeroing is needed.
    block = np.empty(max(n_contacts, 1) * 20, dtype=np.uint8)
    revenue_win = block[: n_contacts * 8].view(np.float64)
    last = block[n_contacts * 8: n_contacts * 12].view(np.uint32)
    orders_all = block[n_contacts * 12: n_contacts * 16].view(np.uint32)
    orders_win = block[n_contacts * 16: n_contacts * 20].view(np.uint32)
    n_owner = max(n_codes, 1) if codes is not None else 1
    owner = np.full(n_owner, 0xFFFFFFFF, dtype=np.uint32)
    state = np.zeros(n_owner, dtype=np.uint8)
    spill = np.empty(max(r1, 1), dtype=np.uint32)  # untouched pages cost nothing
    cdef sec_t[::1] last_v = last
    cdef uint32_t[::1] all_v = orders_all, win_v = orders_win, spill_v = spill
    cdef double[::1] rev_v = revenue_win
    cdef cid_t[::1] owner_v = owner
    cdef uint8_t[::1] state_v = state
    cdef bint has_amount = amount is not None, has_codes = codes is not None
    cdef Py_ssize_t n_spill
    # numpy, not calloc: numpy asks for transparent huge pages on large buffers, so the
    # accumulators cost a dozen page faults instead of one per 4 KiB page (page faults
    # are expensive on a VM, and glibc hands a buffer this size back to the OS each call).
    acc_buf = np.zeros(max(n_contacts, 1) * sizeof(Acc), dtype=np.uint8)
    cdef uint8_t[::1] acc_bytes = acc_buf
    cdef Acc* acc = <Acc*>&acc_bytes[0]
    with nogil:
        n_spill = _rollup(
            cids, ts, amount_v, has_amount, codes_v, has_codes, r0, r1,
            acc, owner_v, state_v, spill_v,
        )
        for i in range(n_contacts):
            last_v[i] = acc[i].last
            all_v[i] = acc[i].orders_all
            win_v[i] = acc[i].orders_win
            rev_v[i] = acc[i].revenue_win
    return last, orders_all, orders_win, revenue_win, spill[:n_spill].copy()


def scored_values(
    const sec_t[::1] last,
    const uint32_t[::1] orders_all,
    const uint32_t[::1] frequency,
    double[::1] revenue,
    double as_of,
    double window_start,
):
    """One pass: round ``revenue`` to 6 decimals in place (numpy's ``round``: rint of
    x * 1e6) and return the scored contacts' values for the quantile cuts:
    ``(recency_days int64, frequency int64, monetary float64)``."""
    cdef Py_ssize_t n = last.shape[0], i, k = 0
    if not (orders_all.shape[0] == frequency.shape[0] == revenue.shape[0] == n):
        raise ValueError("per-contact arrays differ in length")
    days = np.empty(n, dtype=np.int64)
    freq = np.empty(n, dtype=np.int64)
    mon = np.empty(n, dtype=np.float64)
    cdef int64_t[::1] dv = days, fv = freq
    cdef double[::1] mv = mon
    with nogil:
        for i in range(n):
            if revenue[i] != 0.0:
                revenue[i] = rint(revenue[i] * 1e6) / 1e6
            if orders_all[i] == 0 or last[i] < window_start or last[i] >= as_of:
                continue
            dv[k] = <int64_t>floor((as_of - last[i]) / DAY_S)
            fv[k] = frequency[i]
            mv[k] = revenue[i]
            k += 1
    return days[:k], freq[:k], mon[:k]


cdef inline uint8_t _score(double v, const double[::1] cuts, int mode, int scale) noexcept nogil:
    cdef Py_ssize_t k
    cdef int hits = 0
    for k in range(cuts.shape[0]):
        if mode == 0:
            hits += cuts[k] < v
        elif mode == 1:
            hits += cuts[k] > v
        else:
            hits += cuts[k] <= v
    if mode == 3:
        return <uint8_t>(scale - hits)
    return <uint8_t>(1 + hits)


def score(
    const sec_t[::1] last,
    const uint32_t[::1] orders_all,
    const uint32_t[::1] frequency,
    const double[::1] monetary,
    double as_of,
    double window_start,
    const double[::1] r_cuts,
    const double[::1] f_cuts,
    const double[::1] m_cuts,
    int r_mode,
    int fm_mode,
    int scale,
):
    """R, F, M scores per contact (0 = not scored: no order in the window).

    A contact is scored when its last order is in ``[window_start, as_of)``. Each score is
    ``1 + #(cuts compared with the value)``: mode 0 counts cuts < value (quantile F / M),
    1 cuts > value (quantile R on recency days), 2 cuts <= value (threshold F / M),
    3 gives ``scale - #(cuts <= value)`` (threshold R). Returns ``(r, f, m, recency_days)``
    (recency_days -1 where not scored).
    """
    cdef Py_ssize_t n = last.shape[0], i
    if not (orders_all.shape[0] == frequency.shape[0] == monetary.shape[0] == n):
        raise ValueError("per-contact arrays differ in length")
    if not (0 <= r_mode <= 3 and 0 <= fm_mode <= 3 and 2 <= scale <= 10):
        raise ValueError("bad score mode or scale")
    r = np.zeros(n, dtype=np.uint8)
    f = np.zeros(n, dtype=np.uint8)
    m = np.zeros(n, dtype=np.uint8)
    days = np.full(n, -1, dtype=np.int32)
    cdef uint8_t[::1] rv = r, fv = f, mv = m
    cdef int[::1] dv = days
    cdef double d
    with nogil:
        for i in range(n):
            if orders_all[i] == 0 or last[i] < window_start or last[i] >= as_of:
                continue
            d = floor((as_of - last[i]) / DAY_S)
            dv[i] = <int>d
            rv[i] = _score(d, r_cuts, r_mode, scale)
            fv[i] = _score(frequency[i], f_cuts, fm_mode, scale)
            mv[i] = _score(monetary[i], m_cuts, fm_mode, scale)
    return r, f, m, days


def classify(
    const uint32_t[::1] orders_all,
    const sec_t[::1] last,
    double as_of,
    const int64_t[:, :, ::1] rules,
    const uint8_t[:, ::1] rule_segment,
    const int64_t[::1] rule_count,
    const uint8_t[::1] group_of_code,
    const code_t[::1] group_codes,
    bint grouped,
):
    """The named segment of each contact (255: none) by the first matching rule.

    ``rules[s, j] = (orders_lo, orders_hi, days_lo, days_hi)`` (inclusive) is rule j of
    rule set s (0 = the default); ``rule_segment[s, j]`` its segment id. With ``grouped``
    a contact uses the rule set ``group_of_code[group_codes[c]]`` (NO_CODE: set 0).
    Days are ``floor((as_of - last order) / 1 day)`` over the whole history.
    """
    cdef Py_ssize_t n = orders_all.shape[0], i, j
    cdef Py_ssize_t n_sets = rules.shape[0]
    if last.shape[0] != n or (grouped and group_codes.shape[0] < n):
        raise ValueError("per-contact arrays differ in length")
    if rules.shape[2] != 4 or rule_segment.shape[0] != n_sets or rule_count.shape[0] != n_sets:
        raise ValueError("bad rule table shape")
    for i in range(n_sets):
        if not (0 <= rule_count[i] <= rules.shape[1] <= rule_segment.shape[1]):
            raise ValueError("bad rule count")
    for i in range(group_of_code.shape[0]):
        if group_of_code[i] >= n_sets:
            raise ValueError("group maps to a missing rule set")
    seg = np.full(n, NO_SEGMENT, dtype=np.uint8)
    cdef uint8_t[::1] sv = seg
    cdef Py_ssize_t s
    cdef code_t g
    cdef int64_t d, k
    cdef Py_ssize_t n_groups = group_of_code.shape[0]
    with nogil:
        for i in range(n):
            if orders_all[i] == 0 or last[i] >= as_of:
                continue
            d = <int64_t>floor((as_of - last[i]) / DAY_S)
            k = orders_all[i]
            s = 0
            if grouped:
                g = group_codes[i]
                if g != NO_CODE_ and g < n_groups:
                    s = group_of_code[g]
            for j in range(rule_count[s]):
                if (rules[s, j, 0] <= k <= rules[s, j, 1]
                        and rules[s, j, 2] <= d <= rules[s, j, 3]):
                    sv[i] = rule_segment[s, j]
                    break
    return seg


ctypedef fused small_t:
    uint8_t
    uint16_t


def small_histogram(const small_t[::1] values, Py_ssize_t minlength):
    """Counts per value of a uint8 / uint16 array (``np.bincount(values,
    minlength=minlength)`` without widening the values to intp first: RFM codes and
    segment ids of every contact, counted after each computation). Every value must be
    below ``minlength``."""
    cdef Py_ssize_t n = values.shape[0], i, bad = -1
    if minlength < 1 or minlength > 65536:
        raise ValueError(f"minlength {minlength} outside 1..65536")
    counts = np.zeros(minlength, dtype=np.int64)
    cdef int64_t[::1] cv = counts
    with nogil:
        for i in range(n):
            if values[i] >= minlength:
                bad = i
                break
            cv[values[i]] += 1
    if bad >= 0:
        raise ValueError(f"value {values[bad]} at {bad} is not below minlength {minlength}")
    return counts
