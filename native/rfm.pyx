"""RFM kernels: per-contact window rollups of the order log, scores, named segments,
transitions between two computations.

``rollup`` is one pass over the order rows into per-contact accumulators; every later
pass is over the buyers only (the contacts with an order row, a fifth of the base in the
bench data): ``take_buyers`` copies their totals out densely and zeroes the
accumulators, ``buyer_values`` feeds the quantile cuts (``select_positions``: a radix
selection), ``score_buyers`` scores, codes, classifies and counts them through lookup
tables, ``transitions`` compares two computations over their buyers. Typed memoryviews
and no GIL; the ``def`` wrappers check shapes and bounds first, so the ``cdef`` loops
never index out of range. See engine/rfm.py for the definitions they implement (issue 11,
docs/rfm.md).
"""

from libc.math cimport isnan, rint
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from segd.native._types cimport cid_t, code_t, sec_t

cdef enum:
    NO_CODE_ = 0xFFFFFFFF
    STATE_UNSEEN = 0
    STATE_BEFORE = 1   # the (contact, order) pair was seen only before the window
    STATE_IN = 2       # ... and inside the window
    NO_SEGMENT = 255

cdef double DAY_S = 86400.0


cdef inline int64_t _floor_days(double x) noexcept nogil:
    """``floor(x)`` for |x| < 2^63 without libm's ``floor`` (a call through the PLT per
    buyer: the build has no -march for ``roundsd``): truncate, then step down for a
    negative non-integer."""
    cdef int64_t t = <int64_t> x
    return t - (<double> t > x)


cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* Bit j set when p[j] != 0, for 64 values: four compares at a time with SSE2 (part
       of x86-64), where the scalar loop's variable shifts did not vectorise. */
    static inline uint64_t segd_rfm_nonzero64(const uint32_t *p) {
        uint64_t m = 0;
    #if defined(__SSE2__)
        const __m128i z = _mm_setzero_si128();
        for (int i = 0; i < 64; i += 4) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            int eq = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(v, z)));
            m |= (uint64_t)(~eq & 0xF) << i;
        }
    #else
        for (int i = 0; i < 64; i++) m |= (uint64_t)(p[i] != 0) << i;
    #endif
        return m;
    }
    """
    uint64_t segd_rfm_nonzero64(const uint32_t* p) noexcept nogil


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
    uint32_t seen      # 1 once a row of this computation named the contact (a buyer)


ACC_BYTES = sizeof(Acc)
_ACC_DTYPE = np.dtype(
    [("revenue_win", "<f8"), ("last", "<u4"), ("orders_all", "<u4"),
     ("orders_win", "<u4"), ("seen", "<u4")]
)
MAX_GENERATION = 0x7FFFFFFF


def acc_dtype():
    """The numpy dtype of one contact's totals (the ``Acc`` struct): ``revenue_win`` f8,
    ``last`` u4, ``orders_all`` u4, ``orders_win`` u4, ``seen`` u4; ``take_buyers``
    returns records of it and the later passes take them."""
    return _ACC_DTYPE


cdef inline Acc* _acc_view(uint8_t[::1] acc_bytes, Py_ssize_t n_contacts) except NULL:
    if acc_bytes.shape[0] < max(n_contacts, 1) * <Py_ssize_t>sizeof(Acc):
        raise ValueError(
            f"accumulator buffer of {acc_bytes.shape[0]} bytes is below "
            f"{n_contacts} contacts x {sizeof(Acc)}"
        )
    return <Acc*>&acc_bytes[0]


cdef Py_ssize_t _rollup(
    const cid_t[::1] cids, const sec_t[::1] ts, const double[::1] amount, bint has_amount,
    const code_t[::1] codes, bint has_codes, Py_ssize_t r0, Py_ssize_t r1,
    Acc* acc, cid_t[::1] owner, uint32_t[::1] state, uint32_t gen,
    uint64_t[::1] buyer_bits, Py_ssize_t* n_buyers, uint32_t[::1] spill,
    const uint64_t* want, Py_ssize_t start,
) noexcept nogil:
    # state[o] = generation << 1 | (seen in the window): an order id whose generation is
    # not this call's is unseen, so neither owner nor state is reset between calls.
    # With `want` (a bitset over contacts), rows of other contacts are skipped: only
    # their bit is read (the bitset of 1M contacts is 128 KiB, cache-resident).
    cdef Py_ssize_t i, n_spill = 0, nb = 0
    cdef cid_t c
    cdef code_t o
    cdef uint32_t st, stamp = gen << 1
    cdef uint32_t inwin
    cdef uint32_t new_all, new_win
    cdef Acc* a
    cdef Py_ssize_t ahead_end = r1 - AHEAD if r1 > AHEAD else 0
    cdef cid_t ca
    for i in range(start, r1):
        if i < ahead_end:
            ca = cids[i + AHEAD]
            if want == NULL or (want[ca >> 6] >> (ca & 63)) & 1:
                SEGD_RFM_PREFETCH_W(&acc[ca])
                if has_codes and codes[i + AHEAD] != NO_CODE_:
                    SEGD_RFM_PREFETCH_W(&state[codes[i + AHEAD]])
        c = cids[i]
        if want != NULL and not ((want[c >> 6] >> (c & 63)) & 1):
            continue
        a = &acc[c]
        if a.seen == 0:
            a.seen = 1
            buyer_bits[c >> 6] |= (<uint64_t>1) << (c & 63)
            nb += 1
        if ts[i] >= a.last:
            a.last = ts[i]
        inwin = i >= r0
        new_all = 1
        new_win = inwin
        if has_codes:
            o = codes[i]
            if o != NO_CODE_:
                st = state[o]
                if (st | 1) != (stamp | 1):
                    owner[o] = c
                    state[o] = stamp | inwin
                elif owner[o] == c:
                    new_all = 0
                    new_win = 0
                    if inwin and (st & 1) == 0:
                        new_win = 1
                        state[o] = stamp | 1
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
    n_buyers[0] = nb
    return n_spill


def rollup(
    const cid_t[::1] cids,
    const sec_t[::1] ts,
    amount,
    codes,
    Py_ssize_t r0,
    Py_ssize_t r1,
    Py_ssize_t n_contacts,
    Py_ssize_t n_codes,
    uint8_t[::1] acc_bytes,
    cid_t[::1] owner,
    uint32_t[::1] state,
    uint32_t generation,
    uint64_t[::1] buyer_bits,
    want=None,
    Py_ssize_t start=0,
):
    """Roll the order rows [0, r1) (the log is in time order; [r0, r1) is the window)
    up per contact into the accumulators ``acc_bytes`` (``n_contacts`` x ``ACC_BYTES``,
    **all zero on entry**; ``take_buyers`` zeroes what this call wrote): last order time,
    distinct orders before ``r1``, distinct orders and revenue in the window. The
    contacts some row names (the buyers) are set in ``buyer_bits`` (a bitset of
    ``n_contacts`` bits, all zero on entry; ``take_buyers`` clears it); returns their
    number.

    ``amount`` (float64, NaN = NULL) and ``codes`` (order_id codes, NO_CODE = a line that
    is an order of its own) may be None. A (contact, order id) pair is one order however
    many lines it has: ``owner``/``state`` (``n_codes`` each, kept between calls) remember
    each order id's first contact and whether it was seen in the window, stamped with
    ``generation`` (1 .. MAX_GENERATION, a new one per call; state all zero before the
    first). Rows whose order id another contact used first (rare) are counted exactly by
    a numpy fallback over those rows.

    ``want`` (None, or a bitset of ``n_contacts`` bits) restricts the rollup to the
    contacts it holds (``compute`` rolls up only those whose orders the per-contact
    aggregates cannot answer for); rows before ``start`` (0 <= start <= r0) are skipped,
    so ``last`` and ``orders_all`` then cover [start, r1) only.
    """
    cdef Py_ssize_t n_rows = cids.shape[0]
    if ts.shape[0] != n_rows:
        raise ValueError(f"cids/ts length mismatch: {n_rows} != {ts.shape[0]}")
    if not (0 <= r0 <= r1 <= n_rows):
        raise ValueError(f"window rows [{r0}, {r1}) outside the log of {n_rows}")
    if r1 > 0xFFFFFFFE:
        raise ValueError("more than 2**32 - 2 order rows")
    if not (1 <= generation <= MAX_GENERATION):
        raise ValueError(f"generation {generation} outside 1..{MAX_GENERATION}")
    if not (0 <= start <= r0):
        raise ValueError(f"start row {start} outside 0..{r0}")
    cdef Acc* acc = _acc_view(acc_bytes, n_contacts)
    if buyer_bits.shape[0] * 64 < n_contacts:
        raise ValueError(f"buyer bitset of {buyer_bits.shape[0]} words below {n_contacts} contacts")
    cdef const uint64_t[::1] want_v
    cdef const uint64_t* want_p = NULL
    if want is not None:
        want_v = want
        if want_v.shape[0] * 64 < n_contacts or want_v.shape[0] == 0:
            raise ValueError(f"want bitset of {want_v.shape[0]} words below {n_contacts} contacts")
        want_p = &want_v[0]
    cdef const double[::1] amount_v = np.zeros(1) if amount is None else amount
    cdef const code_t[::1] codes_v = np.zeros(1, np.uint32) if codes is None else codes
    if amount is not None and amount_v.shape[0] < r1:
        raise ValueError(f"amount has {amount_v.shape[0]} rows, need {r1}")
    if codes is not None and codes_v.shape[0] < r1:
        raise ValueError(f"codes have {codes_v.shape[0]} rows, need {r1}")
    cdef bint has_amount = amount is not None, has_codes = codes is not None
    if has_codes and (owner.shape[0] < n_codes or state.shape[0] < n_codes):
        raise ValueError(f"owner/state buffers below the {n_codes} order ids")
    cdef Py_ssize_t i, bad = -1
    cdef code_t top_code = 0
    with nogil:
        for i in range(r1):
            if cids[i] >= n_contacts:
                bad = i
                break
        if has_codes:
            for i in range(r1):
                if codes_v[i] != NO_CODE_ and codes_v[i] > top_code:
                    top_code = codes_v[i]
    if bad >= 0:
        raise ValueError(
            f"contact {cids[bad]} at row {bad} outside the {n_contacts} contacts"
        )
    if has_codes and r1 and top_code >= n_codes and top_code != 0:
        raise ValueError(f"order code {top_code} outside the {n_codes} order ids")
    cdef cid_t[::1] owner_v = owner if has_codes else np.zeros(1, np.uint32)
    cdef uint32_t[::1] state_v = state if has_codes else np.zeros(1, np.uint32)
    spill = np.empty(max(r1, 1), dtype=np.uint32)  # untouched pages cost nothing
    cdef uint32_t[::1] spill_v = spill
    cdef Py_ssize_t n_spill, n_buyers = 0
    with nogil:
        n_spill = _rollup(
            cids, ts, amount_v, has_amount, codes_v, has_codes, r0, r1,
            acc, owner_v, state_v, generation, buyer_bits, &n_buyers, spill_v,
            want_p, start,
        )
    if n_spill:
        # Count each spilled (contact, order id) pair once before r1 and once in the
        # window (exact, numpy over the few spilled rows).
        rows = spill[:n_spill].astype(np.int64)
        keys = (np.asarray(cids)[rows].astype(np.uint64) << np.uint64(32)) | np.asarray(
            codes_v
        )[rows]
        _add_orders(acc, (np.unique(keys) >> np.uint64(32)).astype(np.uint32), 0)
        win = np.unique(keys[rows >= r0]) >> np.uint64(32)
        _add_orders(acc, win.astype(np.uint32), 1)
    return n_buyers


cdef void _add_orders(Acc* acc, const cid_t[::1] cids, bint window) noexcept:
    cdef Py_ssize_t i
    for i in range(cids.shape[0]):
        if window:
            acc[cids[i]].orders_win += 1
        else:
            acc[cids[i]].orders_all += 1


cdef extern from *:
    int __builtin_ctzll(unsigned long long) noexcept nogil


def take_buyers(
    uint8_t[::1] acc_bytes,
    Py_ssize_t n_contacts,
    uint64_t[::1] buyer_bits,
    Py_ssize_t n_buyers,
):
    """The buyers ``rollup`` marked: ``(buyers, dense)``, their ascending cids and their
    accumulators as ``acc_dtype()`` records in that order. Each accumulator is zeroed once
    copied and the bitset cleared, so both are all zero again for the next ``rollup``
    without a pass over every contact (the bitset scan reads n / 64 words)."""
    cdef Acc* acc = _acc_view(acc_bytes, n_contacts)
    cdef Py_ssize_t n_words = (n_contacts + 63) >> 6
    if buyer_bits.shape[0] < n_words:
        raise ValueError(f"buyer bitset of {buyer_bits.shape[0]} words below {n_contacts} contacts")
    if not (0 <= n_buyers <= n_contacts):
        raise ValueError(f"{n_buyers} buyers of {n_contacts} contacts")
    buyers = np.empty(n_buyers, dtype=np.uint32)
    dense = np.empty(n_buyers, dtype=_ACC_DTYPE)
    cdef cid_t[::1] b_v = buyers
    cdef Acc* out = _dense_view(dense, n_buyers)
    cdef Acc* a
    cdef Py_ssize_t i, w, k = 0, bad = -1
    cdef uint64_t word
    cdef cid_t c
    with nogil:
        for w in range(n_words):
            word = buyer_bits[w]
            if word == 0:
                continue
            buyer_bits[w] = 0
            while word:
                c = <cid_t>((w << 6) + __builtin_ctzll(word))
                word &= word - 1
                if k < n_buyers and c < n_contacts:
                    b_v[k] = c
                k += 1
        if k == n_buyers:
            for i in range(n_buyers):
                if i + AHEAD < n_buyers:
                    SEGD_RFM_PREFETCH_W(&acc[b_v[i + AHEAD]])
                a = &acc[b_v[i]]
                if a.seen == 0:
                    bad = i
                out[i] = a[0]
                a.revenue_win = 0.0
                a.last = 0
                a.orders_all = 0
                a.orders_win = 0
                a.seen = 0
    if k != n_buyers or bad >= 0:
        raise ValueError(
            f"the bitset marks {k} buyers, not the {n_buyers} rollup counted"
            if k != n_buyers else f"contact {buyers[bad]} is marked but has no rows"
        )
    return buyers, dense


cdef enum:
    # ``Acc.seen`` of a record ``aggregate_buyers`` writes: answered by the aggregates,
    # or waiting for ``patch_mixed`` (orders before the window only / orders at or
    # after as_of too)
    FROM_AGGREGATES = 1
    MIXED_BEFORE = 2
    MIXED_AFTER = 3


def aggregate_buyers(
    const uint32_t[::1] orders_count,
    const sec_t[::1] first_s,
    const sec_t[::1] last_s,
    const double[::1] revenue,
    Py_ssize_t n_contacts,
    int64_t lo_s,
    int64_t hi_s,
    double as_of,
    cid_t[::1] buyers_out,
    dense_out,
    uint32_t[::1] mixed_pos,
    uint64_t[::1] mixed_bits,
    uint32_t[::1] days_out,
    uint32_t[::1] freq_out,
    double[::1] mon_out,
):
    """The buyers (contacts with an order before ``as_of``) and their records, from the
    per-contact order aggregates kept on ingest (segd.aggregates: distinct orders, revenue,
    first and last order time, all time) instead of the order rows.

    A contact whose orders all lie in the window rows ``[lo_s, hi_s)`` (whole seconds:
    ``window_bounds``) has its all-time aggregates as its window values: its record is
    complete (``seen`` = 1), its revenue rounded to 6 decimals, and its recency days,
    frequency and monetary value go to the three value outputs (it is scored). Any other
    buyer (an order before the window, or at / after ``as_of``) is *mixed*: its record is
    zero but for ``seen`` (2: orders before the window only, 3: an order at or after
    ``as_of`` too), its bit is set in ``mixed_bits`` (all zero on entry) and its record
    position appended to ``mixed_pos``; ``rollup`` (restricted to those bits) and
    ``patch_mixed`` complete it.

    Outputs have room for ``n_contacts`` entries (``dense_out``: ``acc_dtype()``
    records). Returns ``(buyers, mixed, after, scored)``: the buyers written (ascending
    cids), the mixed ones among them, those with an order at or after ``as_of``, and the
    value entries written.
    """
    if not (orders_count.shape[0] >= n_contacts and first_s.shape[0] >= n_contacts
            and last_s.shape[0] >= n_contacts and revenue.shape[0] >= n_contacts):
        raise ValueError(f"aggregates shorter than the {n_contacts} contacts")
    if not (0 <= lo_s <= hi_s):
        raise ValueError(f"window rows [{lo_s}, {hi_s}) out of order")
    if (buyers_out.shape[0] < n_contacts or mixed_pos.shape[0] < n_contacts
            or days_out.shape[0] < n_contacts or freq_out.shape[0] < n_contacts
            or mon_out.shape[0] < n_contacts or mixed_bits.shape[0] * 64 < n_contacts
            or dense_out.shape[0] < n_contacts):
        raise ValueError(f"outputs below the {n_contacts} contacts")
    cdef Acc* out = _dense_view(dense_out, dense_out.shape[0])
    cdef Py_ssize_t c, k = 0, n_mixed = 0, n_after = 0, n_val = 0, w, j, end
    cdef uint32_t cnt
    cdef sec_t first, last
    cdef double rev
    cdef Acc* a
    cdef uint64_t mask
    with nogil:
        # 64 contacts at a time: a branch-free mask of those with orders, then only its
        # set bits (a branch per contact mispredicts at every buyer / non-buyer switch)
        for w in range(0, n_contacts, 64):
            end = w + 64 if w + 64 <= n_contacts else n_contacts
            if end - w == 64:
                mask = segd_rfm_nonzero64(&orders_count[w])
            else:
                mask = 0
                for j in range(w, end):
                    mask |= (<uint64_t>(orders_count[j] != 0)) << (j - w)
            while mask:
                c = w + __builtin_ctzll(mask)
                mask &= mask - 1
                cnt = orders_count[c]
                first = first_s[c]
                if first >= hi_s:
                    continue  # every order at or after as_of
                last = last_s[c]
                buyers_out[k] = <cid_t>c
                a = &out[k]
                if first >= lo_s and last < hi_s:
                    rev = revenue[c]
                    if rev != 0.0:
                        rev = rint(rev * 1e6) / 1e6
                    a.revenue_win = rev
                    a.last = last
                    a.orders_all = cnt
                    a.orders_win = cnt
                    a.seen = FROM_AGGREGATES
                    days_out[n_val] = <uint32_t>_floor_days((as_of - last) / DAY_S)
                    freq_out[n_val] = cnt
                    mon_out[n_val] = rev
                    n_val += 1
                else:
                    a.revenue_win = 0.0
                    a.last = 0
                    a.orders_all = 0
                    a.orders_win = 0
                    if last >= hi_s:
                        a.seen = MIXED_AFTER
                        n_after += 1
                    else:
                        a.seen = MIXED_BEFORE
                    mixed_bits[c >> 6] |= (<uint64_t>1) << (c & 63)
                    mixed_pos[n_mixed] = <uint32_t>k
                    n_mixed += 1
                k += 1
    return k, n_mixed, n_after, n_val


def patch_mixed(
    dense,
    const cid_t[::1] buyers,
    const uint32_t[::1] mixed_pos,
    const uint32_t[::1] orders_count,
    const sec_t[::1] last_s,
    const cid_t[::1] rolled,
    rolled_dense,
    uint64_t[::1] mixed_bits,
    double as_of,
    double window_start,
    Py_ssize_t n_val,
    uint32_t[::1] days_out,
    uint32_t[::1] freq_out,
    double[::1] mon_out,
):
    """Complete the mixed records ``aggregate_buyers`` left (at ``mixed_pos``, ascending)
    from ``rollup`` + ``take_buyers`` over those contacts (``rolled``, ascending, and
    their records): one with an order at or after ``as_of`` takes the rolled-up record
    whole (the rollup started at row 0); one with orders before the window only takes its
    window orders and revenue from it (none when it is not in ``rolled``: no order in
    the window) and keeps its all-time order count and last order from the aggregates.
    Revenue is rounded to 6 decimals, the scored ones' values are appended to the value
    outputs from ``n_val`` on, and ``mixed_bits`` is cleared. Returns the new ``n_val``.
    """
    cdef Py_ssize_t nb = buyers.shape[0], nm = mixed_pos.shape[0], nr = rolled.shape[0]
    cdef Acc* acc = _dense_view(dense, nb)
    cdef Acc* src = _dense_view(rolled_dense, nr)
    cdef Py_ssize_t n_c = orders_count.shape[0]
    if last_s.shape[0] < n_c or mixed_bits.shape[0] * 64 < n_c:
        raise ValueError("aggregates / bitset shorter than the order counts")
    if not (0 <= n_val <= nb - nm) or days_out.shape[0] < nb or freq_out.shape[0] < nb \
            or mon_out.shape[0] < nb:
        raise ValueError(f"value outputs below the {nb} buyers")
    cdef Py_ssize_t i, j = 0, p, bad = -1
    cdef cid_t c
    cdef Acc* a
    cdef Acc* r
    cdef Acc zero
    zero.revenue_win = 0.0
    zero.last = 0
    zero.orders_all = 0
    zero.orders_win = 0
    zero.seen = 0
    with nogil:
        for i in range(nm):
            p = mixed_pos[i]
            if p >= nb or (i and p <= mixed_pos[i - 1]) or buyers[p] >= n_c:
                bad = i
                break
            a = &acc[p]
            if a.seen != MIXED_BEFORE and a.seen != MIXED_AFTER:
                bad = i
                break
            c = buyers[p]
            r = &zero
            if j < nr and rolled[j] == c:
                r = &src[j]
                j += 1
            if a.seen == MIXED_AFTER:
                a.last = r.last
                a.orders_all = r.orders_all
            else:
                a.last = last_s[c]
                a.orders_all = orders_count[c]
            a.orders_win = r.orders_win
            a.revenue_win = r.revenue_win
            if a.revenue_win != 0.0:
                a.revenue_win = rint(a.revenue_win * 1e6) / 1e6
            a.seen = FROM_AGGREGATES
            mixed_bits[c >> 6] &= ~((<uint64_t>1) << (c & 63))
            if _scored(a, as_of, window_start):
                days_out[n_val] = <uint32_t>_floor_days((as_of - a.last) / DAY_S)
                freq_out[n_val] = a.orders_win
                mon_out[n_val] = a.revenue_win
                n_val += 1
    if bad >= 0:
        raise ValueError(f"mixed_pos[{bad}] is not a mixed record of the buyers")
    if j != nr:
        raise ValueError(f"rolled contact {rolled[j]} is not a mixed buyer")
    return n_val


cdef inline bint _scored(const Acc* a, double as_of, double window_start) noexcept nogil:
    return a.orders_all != 0 and a.last >= window_start and a.last < as_of


cdef Acc* _dense_view(dense, Py_ssize_t nb) except NULL:
    if dense.dtype != _ACC_DTYPE or dense.ndim != 1 or dense.shape[0] != nb \
            or not dense.flags.c_contiguous or not dense.flags.writeable:
        raise ValueError(f"dense must be {nb} writeable contiguous acc_dtype() records")
    cdef uint8_t[::1] raw = dense.view(np.uint8) if nb else np.zeros(sizeof(Acc), np.uint8)
    return <Acc*>&raw[0]


def buyer_values(
    dense,
    double as_of,
    double window_start,
    uint32_t[::1] days_out,
    uint32_t[::1] freq_out,
    double[::1] mon_out,
):
    """One pass over the buyers' records (``take_buyers``' ``dense``): round each window
    revenue to 6 decimals in place (numpy's ``round``: rint of x * 1e6), and write the
    scored contacts' recency days, frequency and monetary value (the inputs of the
    quantile cuts) to the three outputs. Returns how many were scored."""
    cdef Py_ssize_t nb = dense.shape[0], i, k = 0
    cdef Acc* acc = _dense_view(dense, nb)
    if days_out.shape[0] < nb or freq_out.shape[0] < nb or mon_out.shape[0] < nb:
        raise ValueError(f"value buffers below the {nb} buyers")
    cdef Acc* a
    with nogil:
        for i in range(nb):
            a = &acc[i]
            if a.revenue_win != 0.0:
                a.revenue_win = rint(a.revenue_win * 1e6) / 1e6
            if not _scored(a, as_of, window_start):
                continue
            days_out[k] = <uint32_t>_floor_days((as_of - a.last) / DAY_S)
            freq_out[k] = a.orders_win
            mon_out[k] = a.revenue_win
            k += 1
    return k


cdef int _check_buyers(const cid_t[::1] buyers, Py_ssize_t n_contacts) except -1:
    cdef Py_ssize_t i, bad = -1
    with nogil:
        for i in range(buyers.shape[0]):
            if buyers[i] >= n_contacts or (i and buyers[i] <= buyers[i - 1]):
                bad = i
                break
    if bad >= 0:
        raise ValueError(
            f"buyers[{bad}] = {buyers[bad]}: buyers must be ascending contact ids "
            f"below {n_contacts}"
        )
    return 0


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


def score_buyers(
    dense,
    const cid_t[::1] buyers,
    double as_of,
    double window_start,
    const double[::1] r_cuts,
    const double[::1] f_cuts,
    const double[::1] m_cuts,
    int r_mode,
    int fm_mode,
    int scale,
    const uint8_t[::1] r_lut,
    const uint8_t[::1] f_lut,
    const uint8_t[:, :, ::1] seg_lut,
    const int64_t[:, :, ::1] rules,
    const uint8_t[:, ::1] rule_segment,
    const int64_t[::1] rule_count,
    const uint8_t[::1] group_of_code,
    const code_t[::1] group_codes,
    bint grouped,
    uint8_t[::1] r,
    uint8_t[::1] f,
    uint8_t[::1] m,
    uint8_t[::1] segment,
    uint16_t[::1] code,
    int64_t[::1] code_hist,
    int64_t[::1] seg_hist,
    values,
):
    """Scores, named segment and code of every buyer in one pass, and the histograms.

    ``dense`` holds the buyers' totals (``rollup``, rounded by ``buyer_values``), in the
    order of ``buyers`` (ascending cids). Outputs are indexed by cid over ``n = len(r)``
    contacts and must hold 0 (``r``, ``f``, ``m``, ``code``) and 255 (``segment``) on
    entry; only the buyers' entries are written. Scores: a contact is scored when its
    last order is in ``[window_start, as_of)``; each score is ``1 + #(cuts compared
    with the value)``: mode 0 counts cuts < value (quantile F / M), 1 cuts > value
    (quantile R on recency days), 2 cuts <= value (threshold F / M), 3 gives
    ``scale - #(cuts <= value)`` (threshold R). ``code`` is ``r << 8 | f << 4 | m``.
    Segment: the first rule of the contact's rule set whose
    inclusive ``rules[s, j] = (orders_lo, orders_hi, days_lo, days_hi)`` hold its orders
    before ``as_of`` and ``floor((as_of - last order) / 1 day)``; the set is
    ``group_of_code[group_codes[c]]`` with ``grouped`` (NO_CODE or out of range: set 0).
    Lookup tables stand in for the comparisons where they reach: ``r_lut[d]`` is the R
    score of recency d days, ``f_lut[v]`` the F score of frequency v (values past their
    end are compared with the cuts), and ``seg_lut[s, min(orders, O), min(days, D)]``
    (O, D: its last indexes, past every finite rule bound) the segment id; an empty
    ``seg_lut`` walks the rules. The caller builds them from the same cuts and rules.
    ``code_hist`` (4096) and ``seg_hist`` (256) count every contact, non-buyers included.
    ``values``: None, or ``(recency_days int32, frequency uint32, monetary float64,
    orders_all uint32)`` arrays of n contacts holding -1, 0, 0, 0, whose buyer entries are
    written too (the per-contact table).
    """
    cdef Py_ssize_t n = r.shape[0], nb = buyers.shape[0], i, j, s
    cdef Acc* acc = _dense_view(dense, nb)
    _check_buyers(buyers, n)
    if not (f.shape[0] == m.shape[0] == segment.shape[0] == code.shape[0] == n):
        raise ValueError("per-contact outputs differ in length")
    if code_hist.shape[0] != 4096 or seg_hist.shape[0] != 256:
        raise ValueError("histograms must have 4096 and 256 bins")
    if not (0 <= r_mode <= 3 and 0 <= fm_mode <= 3 and 2 <= scale <= 10):
        raise ValueError("bad score mode or scale")
    if r_cuts.shape[0] >= scale or f_cuts.shape[0] >= scale or m_cuts.shape[0] >= scale:
        raise ValueError(f"more than scale - 1 = {scale - 1} cut points")
    cdef Py_ssize_t n_sets = rules.shape[0]
    if n_sets < 1 or rules.shape[2] != 4 or rule_segment.shape[0] != n_sets \
            or rule_count.shape[0] != n_sets:
        raise ValueError("bad rule table shape")
    for i in range(n_sets):
        if not (0 <= rule_count[i] <= rules.shape[1] <= rule_segment.shape[1]):
            raise ValueError("bad rule count")
    for i in range(group_of_code.shape[0]):
        if group_of_code[i] >= n_sets:
            raise ValueError("group maps to a missing rule set")
    if grouped and group_codes.shape[0] < n:
        raise ValueError("group codes shorter than the contacts")
    cdef bint use_seg_lut = seg_lut.shape[0] > 0
    if use_seg_lut and (seg_lut.shape[0] != n_sets or seg_lut.shape[1] < 1
                        or seg_lut.shape[2] < 1):
        raise ValueError("segment lookup table does not match the rule sets")
    cdef int64_t o_last = seg_lut.shape[1] - 1, d_last = seg_lut.shape[2] - 1
    cdef bint with_values = values is not None
    cdef int[::1] rec_v
    cdef uint32_t[::1] freq_v, all_v
    cdef double[::1] mon_v
    if with_values:
        rec_v, freq_v, mon_v, all_v = values
        if not (rec_v.shape[0] == freq_v.shape[0] == mon_v.shape[0] == all_v.shape[0] == n):
            raise ValueError("value outputs differ in length from the contacts")
    cdef Py_ssize_t n_groups = group_of_code.shape[0]
    cdef Py_ssize_t n_scored = 0, n_segmented = 0
    cdef Acc* a
    cdef cid_t c
    cdef code_t g
    cdef int64_t d, k
    cdef uint8_t rv, fv, mv, sv
    cdef uint16_t cv
    with nogil:
        for i in range(nb):
            c = buyers[i]
            a = &acc[i]
            if a.orders_all != 0 and a.last < as_of:
                d = _floor_days((as_of - a.last) / DAY_S)
                if with_values:
                    all_v[c] = a.orders_all
                if a.last >= window_start:
                    if d < r_lut.shape[0]:
                        rv = r_lut[d]
                    else:
                        rv = _score(<double>d, r_cuts, r_mode, scale)
                    if a.orders_win < f_lut.shape[0]:
                        fv = f_lut[a.orders_win]
                    else:
                        fv = _score(a.orders_win, f_cuts, fm_mode, scale)
                    mv = _score(a.revenue_win, m_cuts, fm_mode, scale)
                    r[c] = rv
                    f[c] = fv
                    m[c] = mv
                    cv = (<uint16_t>rv << 8) | (<uint16_t>fv << 4) | mv
                    code[c] = cv
                    code_hist[cv] += 1
                    n_scored += 1
                    if with_values:
                        rec_v[c] = <int>d
                        freq_v[c] = a.orders_win
                        mon_v[c] = a.revenue_win
                k = a.orders_all
                s = 0
                if grouped:
                    g = group_codes[c]
                    if g != NO_CODE_ and g < n_groups:
                        s = group_of_code[g]
                sv = NO_SEGMENT
                if use_seg_lut:
                    sv = seg_lut[s, k if k < o_last else o_last, d if d < d_last else d_last]
                else:
                    for j in range(rule_count[s]):
                        if (rules[s, j, 0] <= k <= rules[s, j, 1]
                                and rules[s, j, 2] <= d <= rules[s, j, 3]):
                            sv = rule_segment[s, j]
                            break
                segment[c] = sv
                if sv != NO_SEGMENT:
                    seg_hist[sv] += 1
                    n_segmented += 1
        code_hist[0] += n - n_scored
        seg_hist[NO_SEGMENT] += n - n_segmented
    return n_scored


def select_positions(const double[::1] values, positions):
    """``np.sort(values)[positions]`` without sorting: a radix histogram of the top 16
    bits of each value's order-preserving integer key finds the bucket of every wanted
    position in one pass; a second pass gathers only those buckets' values, which are
    then partitioned (``np.partition``) at the positions within them. NaN sorts last."""
    cdef Py_ssize_t n = values.shape[0], i, b
    pos = np.asarray(positions, dtype=np.int64)
    if len(pos) and (pos.min() < 0 or pos.max() >= n):
        raise ValueError(f"positions outside 0..{n - 1}")
    if len(pos) == 0:
        return np.zeros(0, dtype=np.float64)
    counts = np.zeros(65536, dtype=np.int64)
    cdef int64_t[::1] cv = counts
    with nogil:
        for i in range(n):
            cv[_key(values[i]) >> 48] += 1
    starts = np.cumsum(counts) - counts  # first sorted position of each bucket
    bucket_of = np.searchsorted(starts + counts, pos, side="right")
    wanted = np.unique(bucket_of)
    slot = np.full(65536, -1, dtype=np.int32)
    slot[wanted] = np.arange(len(wanted), dtype=np.int32)
    offsets = np.zeros(len(wanted) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts[wanted])
    gathered = np.empty(offsets[len(wanted)], dtype=np.float64)
    fill = offsets[: len(wanted)].copy()
    cdef int[::1] slot_v = slot
    cdef int64_t[::1] fill_v = fill
    cdef double[::1] g_v = gathered
    cdef int sl
    with nogil:
        for i in range(n):
            sl = slot_v[_key(values[i]) >> 48]
            if sl >= 0:
                g_v[fill_v[sl]] = values[i]
                fill_v[sl] += 1
    out = np.empty(len(pos), dtype=np.float64)
    for b in range(len(wanted)):
        sel = np.flatnonzero(bucket_of == wanted[b])
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        within = pos[sel] - starts[wanted[b]]
        part = np.partition(gathered[lo:hi], np.unique(within))
        out[sel] = part[within]
    return out


cdef inline uint64_t _key(double x) noexcept nogil:
    """An unsigned integer whose order is the numeric order of ``x`` (-0.0 = 0.0, every
    NaN last)."""
    cdef uint64_t bits
    if isnan(x):
        return 0xFFFFFFFFFFFFFFFF
    x = x + 0.0  # -0.0 -> 0.0
    memcpy(&bits, &x, 8)
    if bits >> 63:
        return ~bits
    return bits | (<uint64_t>1 << 63)


def transitions(
    const cid_t[::1] old_cands,
    const cid_t[::1] new_cands,
    const uint16_t[::1] old_code,
    const uint8_t[::1] old_seg,
    const uint8_t[::1] old_lut,
    const uint16_t[::1] new_code,
    const uint8_t[::1] new_seg,
    const uint8_t[::1] new_lut,
):
    """The contacts whose code or (state-wide) segment changed between two computations:
    ``(cid, from_code, to_code, from_seg, to_seg)`` in ascending cid order.

    Only the candidates are compared: ``old_cands`` / ``new_cands`` (ascending) must hold
    every contact with a code or a segment in the old / new computation; every other
    contact has none in either. Segment ids go through ``old_lut`` / ``new_lut`` (256
    entries, 255 -> 255) onto the state's ids. Contacts past the old computation had
    neither; contacts past the new one are not compared.
    """
    cdef Py_ssize_t n_old = old_code.shape[0], n_new = new_code.shape[0]
    if old_seg.shape[0] != n_old or new_seg.shape[0] != n_new:
        raise ValueError("code and segment arrays differ in length")
    if old_lut.shape[0] != 256 or new_lut.shape[0] != 256:
        raise ValueError("segment id maps must have 256 entries")
    _check_buyers(old_cands, 0xFFFFFFFF)
    _check_buyers(new_cands, 0xFFFFFFFF)
    cdef Py_ssize_t na = old_cands.shape[0], nb = new_cands.shape[0]
    cid = np.empty(na + nb, dtype=np.uint32)
    fc = np.empty(na + nb, dtype=np.uint16)
    tc = np.empty(na + nb, dtype=np.uint16)
    fs = np.empty(na + nb, dtype=np.uint8)
    ts_ = np.empty(na + nb, dtype=np.uint8)
    cdef cid_t[::1] cid_v = cid
    cdef uint16_t[::1] fc_v = fc, tc_v = tc
    cdef uint8_t[::1] fs_v = fs, ts_v = ts_
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef cid_t c
    cdef uint16_t oc, nc
    cdef uint8_t os, ns
    with nogil:
        while i < na or j < nb:
            if j >= nb or (i < na and old_cands[i] < new_cands[j]):
                c = old_cands[i]
                i += 1
            elif i >= na or new_cands[j] < old_cands[i]:
                c = new_cands[j]
                j += 1
            else:
                c = old_cands[i]
                i += 1
                j += 1
            if c >= n_new:
                continue
            oc = 0
            os = NO_SEGMENT
            if c < n_old:
                oc = old_code[c]
                os = old_lut[old_seg[c]]
            nc = new_code[c]
            ns = new_lut[new_seg[c]]
            if oc != nc or os != ns:
                cid_v[k] = c
                fc_v[k] = oc
                tc_v[k] = nc
                fs_v[k] = os
                ts_v[k] = ns
                k += 1
    return cid[:k].copy(), fc[:k].copy(), tc[:k].copy(), fs[:k].copy(), ts_[:k].copy()


ctypedef fused small_t:
    uint8_t
    uint16_t
    uint32_t


def small_histogram(const small_t[::1] values, Py_ssize_t minlength):
    """Counts per value of a uint8 / uint16 / uint32 array (``np.bincount(values,
    minlength=minlength)`` without widening the values to intp first: RFM codes and
    segment ids of every contact, counted after each computation; the buyers' recency
    days and frequencies for the quantile cuts). Every value must be below
    ``minlength``."""
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
