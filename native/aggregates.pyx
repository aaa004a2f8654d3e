"""Per-contact rollups maintained on ingest: last-seen times, order counts, revenue.

numpy's ``np.maximum.at`` does the same thing ~20x slower (it is a Python-level ufunc loop
per element), so these scatter updates are kernels. Each takes the batch's contact ids and a
per-row value and updates a per-contact array in place (INOUT).
"""

from libc.math cimport isnan
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort

from segd.native._types cimport NO_CODE, cid_t, code_t, row_t, sec_t
from segd.native.contactindex cimport Slots, slot_span


def _check(Py_ssize_t n_rows, Py_ssize_t n_vals, const cid_t[::1] cids, Py_ssize_t n_out):
    cdef Py_ssize_t i
    cdef cid_t top = 0
    if n_vals != n_rows:
        raise ValueError(f"cids/values length mismatch: {n_rows} != {n_vals}")
    for i in range(n_rows):
        if cids[i] > top:
            top = cids[i]
    if n_rows and top >= n_out:
        raise ValueError(f"contact {top} outside the per-contact array of {n_out}")


def max_into(const cid_t[::1] cids, const sec_t[::1] ts, sec_t[::1] out):
    """out[c] = max(out[c], ts) for each row (last-seen times; 0 means never)."""
    _check(cids.shape[0], ts.shape[0], cids, out.shape[0])
    cdef Py_ssize_t i
    cdef cid_t c
    with nogil:
        for i in range(cids.shape[0]):
            c = cids[i]
            if ts[i] > out[c]:
                out[c] = ts[i]


def min_into(const cid_t[::1] cids, const sec_t[::1] ts, sec_t[::1] out):
    """out[c] = min(out[c], ts), where out[c] == 0 means unset (first order time)."""
    _check(cids.shape[0], ts.shape[0], cids, out.shape[0])
    cdef Py_ssize_t i
    cdef cid_t c
    with nogil:
        for i in range(cids.shape[0]):
            c = cids[i]
            if out[c] == 0 or ts[i] < out[c]:
                out[c] = ts[i]


def add_into(const cid_t[::1] cids, const double[::1] values, double[::1] out):
    """out[c] += value for each row; NaN (a NULL amount) adds nothing."""
    _check(cids.shape[0], values.shape[0], cids, out.shape[0])
    cdef Py_ssize_t i
    with nogil:
        for i in range(cids.shape[0]):
            if not isnan(values[i]):
                out[cids[i]] += values[i]


def count_into(const cid_t[::1] cids, const uint8_t[::1] counts_row, uint32_t[::1] out):
    """out[c] += 1 for each row whose counts_row flag is set (new distinct orders)."""
    _check(cids.shape[0], counts_row.shape[0], cids, out.shape[0])
    cdef Py_ssize_t i
    with nogil:
        for i in range(cids.shape[0]):
            if counts_row[i]:
                out[cids[i]] += 1


def order_totals(
    const cid_t[::1] cids,
    const double[::1] amount,
    const code_t[::1] order_codes,
    const cid_t[::1] order_owner,
    uint64_t[::1] seen,
    double[::1] revenue,
    uint32_t[::1] orders,
):
    """Per-contact revenue and distinct orders of a window of order lines (INOUT arrays).

    A line without an order id (NO_CODE) is an order of its own; the first line of an
    order id in the window counts it (``seen`` is a zeroed bitset over order codes).
    ``order_owner[code]`` is the contact that first placed the order (engine.aggregates):
    returns the number of lines whose id also belongs to another contact, for which this
    per-code count is not exact (the caller then counts (contact, order) pairs instead).
    An empty ``order_codes`` means the log has no order ids: every line is an order.
    """
    cdef Py_ssize_t n = cids.shape[0]
    _check(n, amount.shape[0], cids, revenue.shape[0])
    _check(n, amount.shape[0], cids, orders.shape[0])
    cdef bint has_codes = order_codes.shape[0] != 0
    if has_codes and order_codes.shape[0] != n:
        raise ValueError(f"cids/order_codes length mismatch: {n} != {order_codes.shape[0]}")
    cdef Py_ssize_t i
    cdef cid_t c
    cdef code_t k
    cdef Py_ssize_t shared = 0
    cdef Py_ssize_t n_codes = order_owner.shape[0]
    if has_codes:
        for i in range(n):
            k = order_codes[i]
            if k != NO_CODE and (k >= n_codes or <Py_ssize_t>(k >> 6) >= seen.shape[0]):
                raise ValueError(f"order code {k} outside the owner table of {n_codes}")
    with nogil:
        for i in range(n):
            c = cids[i]
            if not isnan(amount[i]):
                revenue[c] += amount[i]
            if not has_codes:
                orders[c] += 1
                continue
            k = order_codes[i]
            if k == NO_CODE:
                orders[c] += 1
            elif order_owner[k] != c:
                shared += 1
            elif not (seen[k >> 6] >> (k & 63)) & 1:
                seen[k >> 6] |= (<uint64_t>1) << (k & 63)
                orders[c] += 1
    return shared


def merge_rollups(sec_t[::1] last_visit, sec_t[::1] last_email_open,
                  sec_t[::1] last_order, sec_t[::1] first_order, double[::1] revenue,
                  uint32_t[::1] orders_count, cid_t survivor, cid_t merged):
    """Identity merge of one contact's rollups into another's (segd.identity): last
    times are maxima, the first order a minimum (0 = never), revenue adds up; the merged
    contact's rollups become zero. Returns the merged contact's order count (the caller
    recounts the survivor's distinct orders when it is not 0)."""
    cdef Py_ssize_t n = last_visit.shape[0]
    cdef uint32_t had
    if (last_email_open.shape[0] < n or last_order.shape[0] < n
            or first_order.shape[0] < n or revenue.shape[0] < n
            or orders_count.shape[0] < n):
        raise ValueError("merge_rollups: arrays of different lengths")
    if survivor >= n or merged >= n:
        raise ValueError(f"merge_rollups: contact outside the arrays of {n}")
    if last_visit[merged] > last_visit[survivor]:
        last_visit[survivor] = last_visit[merged]
    if last_email_open[merged] > last_email_open[survivor]:
        last_email_open[survivor] = last_email_open[merged]
    if last_order[merged] > last_order[survivor]:
        last_order[survivor] = last_order[merged]
    if first_order[merged] and (
            not first_order[survivor] or first_order[merged] < first_order[survivor]):
        first_order[survivor] = first_order[merged]
    revenue[survivor] += revenue[merged]
    had = orders_count[merged]
    last_visit[merged] = 0
    last_email_open[merged] = 0
    last_order[merged] = 0
    first_order[merged] = 0
    revenue[merged] = 0.0
    orders_count[merged] = 0
    return had


cdef int _cmp_code(const void* a, const void* b) noexcept nogil:
    cdef code_t x = (<const code_t*> a)[0]
    cdef code_t y = (<const code_t*> b)[0]
    return (x > y) - (x < y)


def recount_orders(Slots slots, const row_t[::1] rows, row_t limit,
                   const cid_t[::1] cid, Py_ssize_t n, const code_t[::1] order_col,
                   uint32_t[::1] owner, cid_t survivor, cid_t merged):
    """The survivor's order count after a merge moved the merged contact's order rows
    to it (segd.identity): its rows without an order id, plus its distinct order ids (an
    id both contacts had counts once). The order ids the merged contact owned become the
    survivor's (``owner[k] == merged``; ids past ``owner`` are skipped).

    The survivor's rows: its slot of the contact-major index (``slots.span(s)``,
    those below `limit`) and the tail rows ``[limit, n)`` naming it."""
    cdef Py_ssize_t n_idx = slots.s.n, a, b, i, k = 0, count = 0
    cdef Py_ssize_t n_owner = owner.shape[0], total
    cdef row_t r
    cdef code_t code, prev
    cdef code_t* buf
    if survivor >= n_idx:
        raise ValueError("recount_orders: the survivor must be in the index")
    if n > cid.shape[0] or n > order_col.shape[0] or limit > n:
        raise ValueError("recount_orders: inconsistent log arrays")
    slot_span(&slots.s, survivor, &a, &b)
    if b > rows.shape[0] or a > b:
        raise ValueError("recount_orders: slot outside rows")
    total = (b - a) + (n - limit)
    buf = <code_t*> malloc((total if total > 0 else 1) * sizeof(code_t))
    if buf == NULL:
        raise MemoryError()
    with nogil:
        for i in range(a, b):
            r = rows[i]
            if r < limit:
                code = order_col[r]
                if code == NO_CODE:
                    count += 1
                else:
                    buf[k] = code
                    k += 1
        for r in range(limit, n):
            if cid[r] == survivor:
                code = order_col[r]
                if code == NO_CODE:
                    count += 1
                else:
                    buf[k] = code
                    k += 1
        if k > 1:
            qsort(buf, k, sizeof(code_t), _cmp_code)
        for i in range(k):
            code = buf[i]
            if i == 0 or code != prev:
                count += 1
                if code < n_owner and owner[code] == merged:
                    owner[code] = survivor
            prev = code
    free(buf)
    return count
