"""Kernels of a bulk load's per-chunk work (``segd.ingest``): group a chunk's rows by
event type, and expand a dictionary-encoded text column into engine codes.

A chunk's rows are grouped by type so that each type's rows are one contiguous slice
(arrival order kept within a type). This was a stable ``argsort`` of the type codes and
one numpy gather per column (~0.1 CPU-s per 1M-row row group: the sort, then a random
read per column); with a few dozen types at most, a counting sort is two linear passes:

- ``type_positions``: each row's position in the grouped order (stable) and the bounds
  of each type's slice (one pass to count, one to hand out positions);
- ``scatter``: one column written to its grouped order (``out[pos[i]] = src[i]``: a
  sequential read, and as many sequential write streams as there are types), noting per
  type whether any value is present (not NO_CODE / not NaN), which says which columns a
  type carries without another pass.

``expand_codes`` turns a dictionary column (int32 indices with a validity bitmap, and
the code of each dictionary entry) into one uint32 code per row, NULL -> NO_CODE, and
``used_entries`` says which entries the indices use (only those are hashed): both
replace numpy chains (an int64 copy, ``bincount``, a gather, a masked store).
"""

from libc.math cimport NAN
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import numpy as np

from segd.native._types cimport NO_CODE

ctypedef fused scattered:
    uint32_t
    int64_t
    uint64_t
    double


cdef int _positions(const uint32_t[::1] types, int64_t n_types,
                    int64_t* bounds,          # OUT n_types + 1
                    uint32_t[::1] pos         # OUT one per row
                    ) noexcept nogil:
    """Stable counting sort of rows by type; -1 if a type code is >= n_types."""
    cdef Py_ssize_t i, n = types.shape[0]
    cdef uint32_t t
    cdef int64_t k
    for k in range(n_types + 1):
        bounds[k] = 0
    for i in range(n):
        t = types[i]
        if t >= n_types:
            return -1
        bounds[t + 1] += 1
    for k in range(n_types):
        bounds[k + 1] += bounds[k]
    # bounds[t] is now the first slot of type t; hand slots out in row order, then
    # restore (the next-free cursor of type t ends at the first slot of type t + 1).
    for i in range(n):
        t = types[i]
        pos[i] = <uint32_t>bounds[t]
        bounds[t] += 1
    for k in range(n_types, 0, -1):
        bounds[k] = bounds[k - 1]
    bounds[0] = 0
    return 0


def type_positions(const uint32_t[::1] types, Py_ssize_t n_types):
    """(pos, bounds): pos[i] is row i's slot when rows are grouped by type, stably
    (uint32); type t's rows are slots bounds[t]:bounds[t + 1] (int64, n_types + 1).
    Raises ValueError for a type code >= n_types or more than 2**32 - 1 rows."""
    cdef Py_ssize_t n = types.shape[0]
    if n_types < 0:
        raise ValueError(f"n_types must be >= 0, got {n_types}")
    if n >= 0xFFFFFFFF:
        raise ValueError(f"{n} rows: at most 2**32 - 2 in one chunk")
    pos_arr = np.empty(n, dtype=np.uint32)
    bounds_arr = np.zeros(n_types + 1, dtype=np.int64)
    cdef uint32_t[::1] pos = pos_arr
    cdef int64_t[::1] bounds = bounds_arr
    cdef int rc
    with nogil:
        rc = _positions(types, n_types, &bounds[0], pos)
    if rc < 0:
        raise ValueError(f"a type code is >= n_types ({n_types})")
    return pos_arr, bounds_arr


cdef inline bint _present(scattered v) noexcept nogil:
    if scattered is uint32_t:
        return v != NO_CODE
    elif scattered is double:
        return v == v  # not NaN
    else:
        return True


cdef void _scatter(const scattered[::1] src, const uint32_t[::1] pos,
                   const uint32_t[::1] types, scattered[::1] out,
                   uint8_t* present) noexcept nogil:
    cdef Py_ssize_t i, n = src.shape[0]
    cdef scattered v
    for i in range(n):
        v = src[i]
        out[pos[i]] = v
        if _present(v):
            present[types[i]] = 1


def scatter(const scattered[::1] src, const uint32_t[::1] pos,
            const uint32_t[::1] types, Py_ssize_t n_types):
    """(out, present): out[pos[i]] = src[i] (a column in the order of
    ``type_positions``); present[t] = 1 when a row of type t holds a value (uint32: not
    NO_CODE; float64: not NaN; int64 / uint64: any row). `pos` must be the positions
    ``type_positions(types, n_types)`` returned (a permutation: not re-checked)."""
    cdef Py_ssize_t n = src.shape[0]
    if pos.shape[0] != n or types.shape[0] != n:
        raise ValueError(
            f"src, pos and types differ in length ({n}, {pos.shape[0]}, {types.shape[0]})"
        )
    if scattered is uint32_t:
        out_arr = np.empty(n, dtype=np.uint32)
    elif scattered is int64_t:
        out_arr = np.empty(n, dtype=np.int64)
    elif scattered is uint64_t:
        out_arr = np.empty(n, dtype=np.uint64)
    else:
        out_arr = np.empty(n, dtype=np.float64)
    present_arr = np.zeros(max(n_types, 1), dtype=np.uint8)
    cdef scattered[::1] out = out_arr
    cdef uint8_t[::1] present = present_arr
    with nogil:
        _scatter(src, pos, types, out, &present[0])
    return out_arr, present_arr[:n_types].astype(bool)


cdef int64_t _used(const int32_t[::1] idx, const uint8_t* valid, int64_t offset,
                   uint8_t[::1] used) noexcept nogil:
    """Marks the entries valid rows use; the first bad row, or -1."""
    cdef Py_ssize_t i, n = idx.shape[0]
    cdef int64_t m = used.shape[0], b
    cdef int32_t j
    for i in range(n):
        if valid != NULL:
            b = offset + i
            if not (valid[b >> 3] >> (b & 7)) & 1:
                continue
        j = idx[i]
        if j < 0 or j >= m:
            return i
        used[j] = 1
    return -1


cdef int64_t _expand(const int32_t[::1] idx, const uint8_t* valid, int64_t offset,
                     const uint32_t[::1] lookup, uint32_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i, n = idx.shape[0]
    cdef int64_t m = lookup.shape[0], b
    cdef int32_t j
    for i in range(n):
        if valid != NULL:
            b = offset + i
            if not (valid[b >> 3] >> (b & 7)) & 1:
                out[i] = NO_CODE
                continue
        j = idx[i]
        if j < 0 or j >= m:
            return i
        out[i] = lookup[j]
    return -1


cdef const uint8_t* _bitmap(const uint8_t[::1] valid, int64_t n, int64_t offset) except? NULL:
    if valid is None or valid.shape[0] == 0:
        return NULL
    if valid.shape[0] * 8 < offset + n:
        raise ValueError(
            f"validity bitmap of {valid.shape[0]} bytes is short for {n} rows at bit {offset}"
        )
    return &valid[0]


def used_entries(const int32_t[::1] idx, const uint8_t[::1] valid, Py_ssize_t offset,
                 Py_ssize_t n_entries):
    """bool per dictionary entry: some valid row's index names it. `valid` is an Arrow
    validity bitmap (LSB first, row i at bit offset + i) or None (every row valid).
    Raises ValueError naming the row of an index outside 0..n_entries - 1."""
    if offset < 0 or n_entries < 0:
        raise ValueError("offset and n_entries must be >= 0")
    used_arr = np.zeros(n_entries, dtype=np.uint8)
    cdef uint8_t[::1] used = used_arr
    cdef const uint8_t* bits = _bitmap(valid, idx.shape[0], offset)
    cdef int64_t bad
    with nogil:
        bad = _used(idx, bits, offset, used)
    if bad >= 0:
        raise ValueError(f"row {bad}: dictionary index {idx[bad]} outside 0..{n_entries - 1}")
    return used_arr.view(bool)


def expand_codes(const int32_t[::1] idx, const uint8_t[::1] valid, Py_ssize_t offset,
                 const uint32_t[::1] lookup):
    """uint32 per row: lookup[idx[i]], or NO_CODE where the row is NULL (`valid` as for
    ``used_entries``). Raises ValueError naming the row of an index outside lookup."""
    if offset < 0:
        raise ValueError("offset must be >= 0")
    out_arr = np.empty(idx.shape[0], dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    cdef const uint8_t* bits = _bitmap(valid, idx.shape[0], offset)
    cdef int64_t bad
    with nogil:
        bad = _expand(idx, bits, offset, lookup, out)
    if bad >= 0:
        raise ValueError(
            f"row {bad}: dictionary index {idx[bad]} outside 0..{lookup.shape[0] - 1}"
        )
    return out_arr


cdef int64_t _remap(const uint32_t[::1] codes, const uint32_t[::1] mapping,
                    uint32_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i, n = codes.shape[0]
    cdef uint32_t c, m = <uint32_t>mapping.shape[0]
    for i in range(n):
        c = codes[i]
        if c == NO_CODE:
            out[i] = NO_CODE
        elif c < m:
            out[i] = mapping[c]
        else:
            return i
    return -1


def remap_codes(const uint32_t[::1] codes, const uint32_t[::1] mapping):
    """uint32 per row: mapping[codes[i]], NO_CODE kept (a bulk load's staged codes in
    the engine's). Raises ValueError naming the row of a code outside mapping."""
    if mapping.shape[0] >= NO_CODE:
        raise ValueError("a mapping of 2**32 - 1 codes or more")
    out_arr = np.empty(codes.shape[0], dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    cdef int64_t bad
    with nogil:
        bad = _remap(codes, mapping, out)
    if bad >= 0:
        raise ValueError(f"row {bad}: code {codes[bad]} outside 0..{mapping.shape[0] - 1}")
    return out_arr


def is_identity(const uint32_t[::1] mapping):
    """True when mapping[i] == i for every i (a bulk load into an engine that knew none
    of its values: staged codes are the engine's, nothing to remap)."""
    cdef Py_ssize_t i, n = mapping.shape[0]
    cdef bint same = True
    with nogil:
        for i in range(n):
            if mapping[i] != <uint32_t>i:
                same = False
                break
    return same


# -- sparse columns (``ingest.SPARSE_SPLIT``) ------------------------------------------
# Most event columns are sparse: at 10M an order id, a search phrase, an e-mail channel
# or an ad's advertiser / campaign / ad is set on 0.3-5% of a row group's rows (only the
# types that carry it keep it). ``used_entries``, ``expand_codes`` and ``scatter`` each
# visit every row of such a column, testing its validity bit one row at a time (~3 ns a
# row each, ~9 ms per 1M-row row group and column). The kernels below read the validity
# bitmap 64 rows at a time and visit only the valid rows:
#
# - ``sparse_used_entries``: ``used_entries``;
# - ``scatter_valid``: a column's valid values (its codes, in row order: a dictionary's
#   codes by entry, or one code per valid row) straight into the grouped order of
#   ``type_positions``: ``scatter(expand_codes(...))`` in one pass over the valid rows,
#   writing only the slots of the types that hold a value (those types' NULL rows get
#   NO_CODE; the slots of a type holding none are left unwritten — their content is
#   undefined, and callers slice only the types ``present`` names).
#
# They need a byte-aligned bitmap (the row offset a multiple of 8: every Parquet read)
# and are meant for sparse columns; ``is_sparse`` says when to use them.

cdef extern from *:
    """
    static inline int segd_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    static inline int segd_popcount64(unsigned long long x) {
        return __builtin_popcountll(x);
    }
    """
    int segd_ctz64(uint64_t x) noexcept nogil
    int segd_popcount64(uint64_t x) noexcept nogil


cdef inline uint64_t _word(const uint8_t* bits, int64_t i, int64_t n) noexcept nogil:
    """Validity bits of rows i .. i + 63 (i a multiple of 64; past row n - 1 zero): bit k
    is row i + k. `bits` points at row 0's byte (Arrow bitmaps are LSB first)."""
    cdef int64_t k, left = n - i, nb
    cdef const uint8_t* p = bits + (i >> 3)
    cdef uint64_t w = 0
    if left >= 64:
        return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
                | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
                | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))
    nb = (left + 7) >> 3
    for k in range(nb):
        w |= (<uint64_t>p[k]) << (8 * k)
    return w & (((<uint64_t>1) << left) - 1)


cdef int64_t _count_valid(const uint8_t* bits, int64_t n) noexcept nogil:
    cdef int64_t i = 0, c = 0
    while i < n:
        c += segd_popcount64(_word(bits, i, n))
        i += 64
    return c


def is_sparse(const uint8_t[::1] valid, Py_ssize_t offset, Py_ssize_t n):
    """True when rows offset .. offset + n - 1 of the validity bitmap `valid` are valid
    on fewer than a quarter of them and the bitmap is byte aligned there (offset a
    multiple of 8): the sparse kernels then pay."""
    if valid is None or offset < 0 or offset & 7 or n <= 0:
        return False
    if valid.shape[0] * 8 < offset + n:
        raise ValueError(
            f"validity bitmap of {valid.shape[0]} bytes is short for {n} rows at bit {offset}"
        )
    cdef int64_t c
    with nogil:
        c = _count_valid(&valid[offset >> 3], n)
    return c * 4 < n


cdef const uint8_t* _aligned(const uint8_t[::1] valid, int64_t n, int64_t offset) except? NULL:
    if offset < 0 or offset & 7:
        raise ValueError(f"offset {offset} is not a multiple of 8")
    if valid is None or valid.shape[0] * 8 < offset + n:
        raise ValueError(f"validity bitmap too short for {n} rows at bit {offset}")
    if n == 0:
        return NULL
    return &valid[offset >> 3]


cdef int64_t _sparse_used(const int32_t[::1] idx, const uint8_t* bits,
                          uint8_t[::1] used) noexcept nogil:
    cdef int64_t i, r, n = idx.shape[0], m = used.shape[0]
    cdef uint64_t w
    cdef int32_t j
    i = 0
    while i < n:
        w = _word(bits, i, n)
        while w:
            r = i + segd_ctz64(w)
            w &= w - 1
            j = idx[r]
            if j < 0 or j >= m:
                return r
            used[j] = 1
        i += 64
    return -1


def sparse_used_entries(const int32_t[::1] idx, const uint8_t[::1] valid,
                        Py_ssize_t offset, Py_ssize_t n_entries):
    """``used_entries`` visiting only the valid rows (`offset` a multiple of 8, `valid`
    not None)."""
    if n_entries < 0:
        raise ValueError("n_entries must be >= 0")
    used_arr = np.zeros(n_entries, dtype=np.uint8)
    cdef uint8_t[::1] used = used_arr
    cdef const uint8_t* bits = _aligned(valid, idx.shape[0], offset)
    cdef int64_t bad = -1
    if bits != NULL:
        with nogil:
            bad = _sparse_used(idx, bits, used)
    if bad >= 0:
        raise ValueError(f"row {bad}: dictionary index {idx[bad]} outside 0..{n_entries - 1}")
    return used_arr.view(bool)


cdef inline bint _valid_value(const int32_t* idx, const uint32_t[::1] values, int64_t r,
                              int64_t* k, uint32_t* v) noexcept nogil:
    """Valid row r's code into v: values[idx[r]] when `idx` is set (a dictionary
    column), else values[k[0]], the k-th valid row's, with k advanced. False when r
    has none (an index outside values, or more valid rows than values)."""
    cdef int32_t j
    if idx != NULL:
        j = idx[r]
        if j < 0 or j >= values.shape[0]:
            return False
        v[0] = values[j]
        return True
    if k[0] >= values.shape[0]:
        return False
    v[0] = values[k[0]]
    k[0] += 1
    return True


cdef int64_t _scatter_valid(const int32_t* idx, const uint32_t[::1] values,
                            const uint8_t* bits, int64_t n, const uint32_t[::1] pos,
                            const uint32_t[::1] types, const int64_t[::1] bounds,
                            uint32_t* out, uint8_t* present) noexcept nogil:
    """Rows' values: values[idx[r]] when `idx` is set (a dictionary column), else the
    k-th valid row's is values[k]. The first bad row (an index outside values, or more
    valid rows than values), or -1."""
    cdef int64_t i, r, k, t, c, n_types = bounds.shape[0] - 1
    cdef uint64_t w
    cdef uint32_t v = NO_CODE
    # 1: which types hold a value (and every row's value checked)
    i = k = 0
    while i < n:
        w = _word(bits, i, n)
        while w:
            r = i + segd_ctz64(w)
            w &= w - 1
            if not _valid_value(idx, values, r, &k, &v):
                return r
            if v != NO_CODE:
                present[types[r]] = 1
        i += 64
    # 2: those types' slots NO_CODE (their NULL rows keep it)
    for t in range(n_types):
        if present[t]:
            for c in range(bounds[t], bounds[t + 1]):
                out[c] = NO_CODE
    # 3: the values (the same rows, checked in 1)
    i = k = 0
    while i < n:
        w = _word(bits, i, n)
        while w:
            r = i + segd_ctz64(w)
            w &= w - 1
            _valid_value(idx, values, r, &k, &v)
            if v != NO_CODE:
                out[pos[r]] = v
        i += 64
    return -1


def scatter_valid(const uint32_t[::1] values, const uint8_t[::1] valid, Py_ssize_t offset,
                  Py_ssize_t n, const uint32_t[::1] pos, const uint32_t[::1] types,
                  const int64_t[::1] bounds, const int32_t[::1] idx=None):
    """(out, present) of a sparse column of n rows, as ``scatter(codes, pos, types,
    len(bounds) - 1)`` gives them for its codes (NULL rows NO_CODE), but only for the
    types present names: out[bounds[t]:bounds[t + 1]] is undefined where present[t] is
    False. A row's code is values[idx[row]] when `idx` is given (a dictionary column's
    indices; values: the code of each entry), else values holds one code per valid row,
    in row order. `valid`: the rows' validity bitmap from bit `offset` (a multiple of 8);
    `pos` and `bounds` as ``type_positions`` returned them for `types` (not re-checked).
    Raises ValueError naming the row of an index outside values, or when values holds
    fewer codes than there are valid rows."""
    cdef int64_t n_types = bounds.shape[0] - 1
    if n < 0 or pos.shape[0] != n or types.shape[0] != n:
        raise ValueError(f"pos and types must hold {n} rows")
    if idx is not None and idx.shape[0] != n:
        raise ValueError(f"idx must hold {n} rows")
    if n_types < 0 or bounds[n_types] != n:
        raise ValueError(f"bounds do not end at {n} rows")
    cdef const uint8_t* bits = _aligned(valid, n, offset)
    out_arr = np.empty(n, dtype=np.uint32)
    present_arr = np.zeros(max(n_types, 1), dtype=np.uint8)
    cdef uint32_t[::1] out = out_arr
    cdef uint8_t[::1] present = present_arr
    cdef const int32_t* ip = NULL
    cdef int64_t bad = -1
    if idx is not None and n:
        ip = &idx[0]
    if n:
        with nogil:
            bad = _scatter_valid(ip, values, bits, n, pos, types, bounds, &out[0],
                                 &present[0])
    if bad >= 0:
        if idx is not None:
            raise ValueError(
                f"row {bad}: dictionary index {idx[bad]} outside 0..{values.shape[0] - 1}"
            )
        raise ValueError(f"row {bad}: more valid rows than the {values.shape[0]} values")
    return out_arr, present_arr[:n_types].astype(bool)


# -- amounts (``ingest._amounts``) -------------------------------------------------------
cdef int64_t _amounts(const double[::1] raw, const uint8_t* valid, int64_t offset,
                      double[::1] out) noexcept nogil:
    cdef int64_t i, n = raw.shape[0], b
    cdef double v
    for i in range(n):
        b = offset + i
        if (valid[b >> 3] >> (b & 7)) & 1:
            v = raw[i]
            if not (v - v == 0.0):   # NaN or infinite (v - v is NaN for both)
                return i
            out[i] = v
        else:
            out[i] = NAN
    return -1


def amounts_with_nan(const double[::1] raw, const uint8_t[::1] valid, Py_ssize_t offset):
    """(amounts, bad row): float64 per row, raw[i] where the row is valid (`valid`: an
    Arrow validity bitmap from bit `offset`) and NaN where it is NULL, in one pass; the
    first valid row whose value is NaN or infinite (the amounts then incomplete), or
    -1. Replaces ``is_valid`` to a bool array, ``isfinite``, a mask and ``np.where``."""
    cdef int64_t n = raw.shape[0], bad = -1
    if offset < 0:
        raise ValueError("offset must be >= 0")
    cdef const uint8_t* bits = _bitmap(valid, n, offset)
    if bits == NULL and n:
        raise ValueError("amounts_with_nan needs a validity bitmap")
    out_arr = np.empty(n, dtype=np.float64)
    cdef double[::1] out = out_arr
    if n:
        with nogil:
            bad = _amounts(raw, bits, offset, out)
    return out_arr, bad
