# Binary search over sorted row numbers, shared by the postings and the contact index.
from segd.native._types cimport row_t


cdef inline Py_ssize_t lower_bound(const row_t* rows, Py_ssize_t n, row_t key) noexcept nogil:
    """First index i with rows[i] >= key (n if none)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if rows[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo
