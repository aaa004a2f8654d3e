"""Kernels of the sorted-permutation value index (segd.aggindex).

The index keeps, per indexed column, the contacts ordered by value: a value range is one
contiguous slice of that permutation (two binary searches), so a condition costs in
proportion to its result, not to the column. These kernels turn such a slice into bits of
a dense bitset (``mark_ids``) and take back the bits of contacts whose value changed since
the index was built (``clear_ids``), before those are re-checked one by one; an AND of
several conditions' answers intersects their slices through a scratch bitset
(``intersect_slices``) instead of sorting each answer into a bitmap.
"""

import numpy as np

from segd.native._types cimport cid_t, word_t


cdef inline void _check_ids(const cid_t[::1] ids, word_t[::1] out) except *:
    cdef Py_ssize_t i
    cdef cid_t top = 0
    for i in range(ids.shape[0]):
        if ids[i] > top:
            top = ids[i]
    if ids.shape[0] and <Py_ssize_t>(top >> 6) >= out.shape[0]:
        raise ValueError(f"contact {top} outside the bitset of {out.shape[0] * 64} bits")


def mark_ids(const cid_t[::1] ids, word_t[::1] out):
    """Set bit ids[i] of `out` (INOUT) for every i; ids in any order, repeats allowed."""
    _check_ids(ids, out)
    cdef Py_ssize_t i
    cdef cid_t c
    with nogil:
        for i in range(ids.shape[0]):
            c = ids[i]
            out[c >> 6] |= (<word_t>1) << (c & 63)


def clear_ids(const cid_t[::1] ids, word_t[::1] out):
    """Clear bit ids[i] of `out` (INOUT) for every i; ids in any order, repeats allowed."""
    _check_ids(ids, out)
    cdef Py_ssize_t i
    cdef cid_t c
    with nogil:
        for i in range(ids.shape[0]):
            c = ids[i]
            out[c >> 6] &= ~((<word_t>1) << (c & 63))


cdef Py_ssize_t _intersect(const cid_t* cur, Py_ssize_t n_cur, const cid_t* order,
                           const Py_ssize_t* starts, const Py_ssize_t* ends,
                           Py_ssize_t n_spans, word_t* bits, Py_ssize_t n_words,
                           cid_t* out) noexcept nogil:
    """Mark `cur`, probe the spans of `order` (ids outside the bitset are no member),
    clear each hit's bit as it is taken (an id is output once) and every mark at the
    end, so `bits` is all zero again on return. Returns the number of ids in `out`."""
    cdef Py_ssize_t i, k, got = 0
    cdef cid_t c
    cdef word_t bit
    for i in range(n_cur):
        c = cur[i]
        bits[c >> 6] |= (<word_t>1) << (c & 63)
    for k in range(n_spans):
        for i in range(starts[k], ends[k]):
            c = order[i]
            if <Py_ssize_t>(c >> 6) >= n_words:
                continue
            bit = (<word_t>1) << (c & 63)
            if bits[c >> 6] & bit:
                bits[c >> 6] &= ~bit
                out[got] = c
                got += 1
    for i in range(n_cur):
        c = cur[i]
        bits[c >> 6] = 0
    return got


def intersect_slices(const cid_t[::1] cur, const cid_t[::1] order,
                     const Py_ssize_t[::1] starts, const Py_ssize_t[::1] ends,
                     word_t[::1] scratch):
    """The ids of `cur` that occur in some slice ``order[starts[k]:ends[k]]``.

    An AND of value-index answers without sorting them: `cur` (the running answer, in
    any order) is marked in `scratch`, the next operand's slices of its sorted
    permutation probe it, and the hits come out in slice order, each once (uint32; sort
    the final, small, result once). Costs ``len(cur) + sum of slice lengths`` bit
    operations. `scratch` (INOUT) must be all zero with a bit for every id of `cur`;
    it is all zero again on return.
    """
    _check_ids(cur, scratch)
    cdef Py_ssize_t k, n_spans = starts.shape[0], most = 0
    if ends.shape[0] != n_spans:
        raise ValueError(f"starts and ends differ in length ({n_spans}, {ends.shape[0]})")
    for k in range(n_spans):
        if starts[k] < 0 or starts[k] > ends[k] or ends[k] > order.shape[0]:
            raise ValueError(f"slice [{starts[k]}, {ends[k]}) outside the permutation "
                             f"of {order.shape[0]} ids")
        most += ends[k] - starts[k]
    out = np.empty(min(most, cur.shape[0]), dtype=np.uint32)
    if out.shape[0] == 0:
        return out
    cdef cid_t[::1] o = out
    cdef Py_ssize_t got
    with nogil:
        got = _intersect(&cur[0], cur.shape[0], &order[0], &starts[0], &ends[0],
                         n_spans, &scratch[0], scratch.shape[0], &o[0])
    return out[:got]
