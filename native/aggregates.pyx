"""Per-contact rollups maintained on ingest: last-seen times, order counts, revenue.

numpy's ``np.maximum.at`` does the same thing ~20x slower (it is a Python-level ufunc loop
per element), so these scatter updates are kernels. Each takes the batch's contact ids and a
per-row value and updates a per-contact array in place (INOUT).
"""

from libc.math cimport isnan
from libc.stdint cimport uint8_t, uint32_t

from segd.native._types cimport cid_t, sec_t


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
