"""Kernels of the sorted-permutation value index (segd.aggindex).

The index keeps, per indexed column, the contacts ordered by value: a value range is one
contiguous slice of that permutation (two binary searches), so a condition costs in
proportion to its result, not to the column. These kernels turn such a slice into bits of
a dense bitset (``mark_ids``) and take back the bits of contacts whose value changed since
the index was built (``clear_ids``), before those are re-checked one by one.
"""

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
