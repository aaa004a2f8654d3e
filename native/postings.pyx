"""Inverted postings: for one (event type, dimension), value code -> ascending row numbers.

Rows index the type's time-ordered event log (``eventlog.pyx``), so a list of rows is also a
list in time order: a time window ``[r0, r1)`` of the log is found in every list by binary
search, and two filters on one event intersect exactly (same row = same event). A posting
costs 4 bytes; the contact id and the time are read from the log's columns.

Lists live in C memory (one ``RowList`` per code) because there are ~10^5 of them per type:
Python objects per list would cost more than the postings of a rare item.
"""

from libc.stdint cimport UINT32_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

import numpy as np

from segd.native._search cimport lower_bound as _lower_bound
from segd.native._types cimport NO_CODE, code_t, row_t


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_PO_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define SEGD_PO_PREFETCH(p) ((void)(p))
    #endif
    """
    void SEGD_PO_PREFETCH(const void* p) noexcept nogil

# gather(): how many codes ahead a list's tail is prefetched (its header twice as far).
cdef enum:
    GATHER_AHEAD = 8


cdef inline Py_ssize_t _lower_bound_from_end(const row_t* rows, Py_ssize_t n,
                                             row_t key) noexcept nogil:
    """lower_bound(rows, n, key) found by galloping back from the end (steps 1, 2, 4,
    ...) and then a binary search in the last step: O(log distance from the end), so a
    recent window's bounds are found in the list's last cache line."""
    cdef Py_ssize_t hi = n, lo, step = 1
    while step <= hi:
        lo = hi - step
        if rows[lo] < key:
            return lo + 1 + _lower_bound(&rows[lo + 1], hi - lo - 1, key)
        hi = lo
        step <<= 1
    return _lower_bound(rows, hi, key)


# append_rows of a big batch over many codes (a bulk load: ~120M item views over 500k
# items at 10M contacts) writes its rows bucket by bucket instead of in row order
# (``_append_partitioned``). False: row order (the A/B; the lists are the same).
PARTITIONED_APPEND = True
# A batch is partitioned when it has at least PARTITION_MIN_ROWS rows with a code over
# more than PARTITION_MIN_CODES codes (below that the lists' tails stay in the cache),
# into at most PARTITION_BUCKETS buckets (their write streams fit in L1 / L2), a block
# of rows at a time holding PARTITION_ROWS_PER_CODE rows a code (8 bytes a row of a
# block: 128 MB for 500k codes). Module globals, so that the tests can shrink them.
PARTITION_MIN_ROWS = 1 << 20
PARTITION_MIN_CODES = 1 << 14
PARTITION_BUCKETS = 512
PARTITION_ROWS_PER_CODE = 32


cdef void _append_partitioned(RowList* lists, const row_t* rows, const code_t* codes,
                              Py_ssize_t n, int shift, Py_ssize_t n_buckets,
                              Py_ssize_t block, uint64_t* tmp,
                              int64_t* starts) noexcept nogil:
    """Append rows[i] to lists[codes[i]] (NO_CODE skipped; room reserved), the same
    lists as in row order, written in two cache-friendly passes per block of rows.

    Row order writes each row to the tail of its code's list: with ~500k lists that is
    a cache (and TLB) miss a row, ~150-240 ns on this VM. Here a block's (code, row)
    pairs are first partitioned by ``code >> shift`` (at most PARTITION_BUCKETS
    sequential write streams), then each bucket's pairs are appended in order: a
    bucket's lists (2**shift of them) and their tails fit in L2. Within a bucket the
    pairs keep row order and blocks go in row order, so every list gets its rows in
    ascending order, exactly as row by row."""
    cdef Py_ssize_t b0, i, j, end
    cdef int64_t* cur = &starts[n_buckets + 1]
    cdef int64_t k, total
    cdef code_t c
    cdef uint64_t v
    cdef RowList* lst
    b0 = 0
    while b0 < n:
        end = min(n, b0 + block)
        for k in range(n_buckets + 1):
            starts[k] = 0
        for i in range(b0, end):
            c = codes[i]
            if c != NO_CODE:
                starts[(c >> shift) + 1] += 1
        for k in range(n_buckets):
            starts[k + 1] += starts[k]
            cur[k] = starts[k]
        for i in range(b0, end):
            c = codes[i]
            if c != NO_CODE:
                k = c >> shift
                tmp[cur[k]] = (<uint64_t> c << 32) | rows[i]
                cur[k] += 1
        total = starts[n_buckets]
        for j in range(total):
            v = tmp[j]
            lst = &lists[v >> 32]
            lst.rows[lst.n] = <row_t> v  # the low 32 bits: the row
            lst.n += 1
        b0 = end


cdef class Postings:
    """Postings of one dimension of one event type (see module docstring)."""

    def __cinit__(self):
        self.lists = NULL
        self.n_codes = 0
        self.total = 0
        self.allocated = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.lists != NULL:
            for i in range(self.n_codes):
                if self.lists[i].cap:   # borrowed lists (cap 0) are not ours to free
                    free(self.lists[i].rows)
            free(self.lists)

    cdef int _ensure_codes(self, Py_ssize_t n_codes) except -1:
        cdef Py_ssize_t new_n
        cdef RowList* grown
        if n_codes <= self.n_codes:
            return 0
        new_n = max(n_codes, self.n_codes + (self.n_codes >> 1), 16)
        grown = <RowList*> realloc(self.lists, new_n * sizeof(RowList))
        if grown == NULL:
            raise MemoryError("postings: cannot grow the code table")
        memset(&grown[self.n_codes], 0, (new_n - self.n_codes) * sizeof(RowList))
        self.lists = grown
        self.n_codes = new_n
        return 0

    cdef int _reserve(self, code_t code, uint32_t extra) noexcept nogil:
        """Make room for `extra` more rows in list `code`; -1 when out of memory."""
        cdef RowList* lst = &self.lists[code]
        cdef uint64_t need = <uint64_t> lst.n + extra
        cdef uint64_t cap
        cdef row_t* grown
        if need <= lst.cap:
            return 0
        if need > UINT32_MAX:
            return -1
        # Grow by half: streaming appends stay amortised O(1); bulk loads reserve the exact
        # batch size first (append_rows counts per code), so a loaded index carries no slack.
        cap = lst.cap + (lst.cap >> 1)
        if cap < need:
            cap = need
        if cap > UINT32_MAX:
            cap = UINT32_MAX
        if lst.cap < lst.n:
            # Borrowed from a snapshot: copy into our own memory (accounted as n so far).
            grown = <row_t*> malloc(cap * sizeof(row_t))
            if grown == NULL:
                return -1
            memcpy(grown, lst.rows, lst.n * sizeof(row_t))
            self.allocated += cap - lst.n
        else:
            grown = <row_t*> realloc(lst.rows, cap * sizeof(row_t))
            if grown == NULL:
                return -1
            self.allocated += cap - lst.cap
        lst.rows = grown
        lst.cap = <uint32_t> cap
        return 0

    @property
    def postings(self) -> int:
        """Number of postings held."""
        return self.total

    def nbytes(self) -> int:
        """Bytes allocated for rows and the code table."""
        return self.allocated * sizeof(row_t) + self.n_codes * sizeof(RowList)

    def __len__(self):
        return self.n_codes

    def sizes(self):
        """Postings per code as a uint32 array (length = codes allocated)."""
        out = np.zeros(self.n_codes, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        cdef Py_ssize_t i
        for i in range(self.n_codes):
            o[i] = self.lists[i].n
        return out

    def rows_of(self, code_t code):
        """Copy of the rows of one code (ascending)."""
        if code >= self.n_codes or self.lists[code].n == 0:
            return np.empty(0, dtype=np.uint32)
        cdef RowList* lst = &self.lists[code]
        out = np.empty(lst.n, dtype=np.uint32)
        cdef row_t[::1] o = out
        cdef Py_ssize_t i
        for i in range(lst.n):
            o[i] = lst.rows[i]
        return out

    def append_rows(self, const row_t[::1] rows, const code_t[::1] codes):
        """Append rows (all greater than every row held) under their codes; NO_CODE skipped.

        The fast path of ingest: the batch lands after the end of the log.
        """
        cdef Py_ssize_t n = rows.shape[0], i
        cdef code_t c, max_code = 0
        cdef Py_ssize_t n_valid = 0
        cdef int rc = 0
        if codes.shape[0] != n:
            raise ValueError(f"rows/codes length mismatch: {n} != {codes.shape[0]}")
        with nogil:
            for i in range(n):
                c = codes[i]
                if c != NO_CODE:
                    n_valid += 1
                    if c > max_code:
                        max_code = c
        if n_valid == 0:
            return
        self._ensure_codes(<Py_ssize_t> max_code + 1)
        # Rows per code in this batch, so each list grows once (exactly, for a bulk load).
        counts = np.zeros(<Py_ssize_t> max_code + 1, dtype=np.uint32)
        cdef uint32_t[::1] cnt = counts
        # A big batch over many codes is written bucket by bucket (_append_partitioned).
        cdef int shift = 0
        cdef Py_ssize_t n_buckets = 0, block = 0
        cdef uint64_t* tmp = NULL
        cdef int64_t* starts = NULL
        cdef Py_ssize_t min_rows = PARTITION_MIN_ROWS, buckets = PARTITION_BUCKETS
        if (PARTITIONED_APPEND and n_valid >= min_rows
                and <Py_ssize_t> max_code + 1 > <Py_ssize_t> PARTITION_MIN_CODES):
            while ((<Py_ssize_t> max_code) >> shift) >= max(buckets, 1):
                shift += 1
            n_buckets = ((<Py_ssize_t> max_code) >> shift) + 1
            block = min(n, max(min_rows, 1,
                               <Py_ssize_t> PARTITION_ROWS_PER_CODE
                               * (<Py_ssize_t> max_code + 1)))
            tmp = <uint64_t*> malloc(block * sizeof(uint64_t))
            starts = <int64_t*> malloc(2 * (n_buckets + 1) * sizeof(int64_t))
            if tmp == NULL or starts == NULL:  # no room for the buckets: row by row
                free(tmp)
                free(starts)
                tmp = NULL
                starts = NULL
        with nogil:
            for i in range(n):
                c = codes[i]
                if c != NO_CODE:
                    cnt[c] += 1
            for i in range(max_code + 1):
                if cnt[i] and self._reserve(<code_t> i, cnt[i]) != 0:
                    rc = -1
                    break
            if rc == 0 and tmp != NULL:
                _append_partitioned(self.lists, &rows[0], &codes[0], n, shift,
                                    n_buckets, block, tmp, starts)
            elif rc == 0:
                for i in range(n):
                    c = codes[i]
                    if c != NO_CODE:
                        self.lists[c].rows[self.lists[c].n] = rows[i]
                        self.lists[c].n += 1
            if rc == 0:
                self.total += n_valid
        free(tmp)
        free(starts)
        if rc != 0:
            raise MemoryError("postings: cannot grow a row list")

    def remap_and_insert(self, row_t first_moved, const row_t[::1] new_pos_of_old,
                         const row_t[::1] rows, const code_t[::1] codes):
        """Late events were merged into the log: renumber and insert, keeping lists sorted.

        Rows >= `first_moved` moved: old row r is now ``new_pos_of_old[r - first_moved]``
        (monotone, so each list stays sorted). Then each new (row, code) is inserted at its
        place. Cost: one binary search per list plus the moved tails; late events usually
        land near the end of the log, so the tails are short.
        """
        cdef Py_ssize_t i, j, k, n = rows.shape[0], n_moved = new_pos_of_old.shape[0]
        cdef RowList* lst
        cdef code_t c
        cdef row_t r
        cdef int rc = 0
        if codes.shape[0] != n:
            raise ValueError(f"rows/codes length mismatch: {n} != {codes.shape[0]}")
        cdef code_t max_code = 0
        for i in range(n):
            if codes[i] != NO_CODE and codes[i] > max_code:
                max_code = codes[i]
        if n:
            self._ensure_codes(<Py_ssize_t> max_code + 1)
        with nogil:
            if n_moved:
                for k in range(self.n_codes):
                    lst = &self.lists[k]
                    if lst.n == 0:
                        continue
                    j = _lower_bound(lst.rows, lst.n, first_moved)
                    for j in range(j, lst.n):
                        lst.rows[j] = new_pos_of_old[lst.rows[j] - first_moved]
            for i in range(n):
                c = codes[i]
                if c == NO_CODE:
                    continue
                if self._reserve(c, 1) != 0:
                    rc = -1
                    break
                lst = &self.lists[c]
                r = rows[i]
                j = _lower_bound(lst.rows, lst.n, r)
                if j < lst.n:
                    memmove(&lst.rows[j + 1], &lst.rows[j], (lst.n - j) * sizeof(row_t))
                lst.rows[j] = r
                lst.n += 1
                self.total += 1
        if rc != 0:
            raise MemoryError("postings: cannot grow a row list")

    def count_in_window(self, const code_t[::1] codes, row_t r0, row_t r1) -> int:
        """Postings of the given codes with rows in [r0, r1): a selectivity estimate."""
        cdef Py_ssize_t i, n = codes.shape[0]
        cdef uint64_t total = 0
        cdef RowList* lst
        if r1 <= r0:
            return 0
        with nogil:
            for i in range(n):
                if codes[i] >= self.n_codes:
                    continue
                lst = &self.lists[codes[i]]
                if lst.n == 0:
                    continue
                total += (_lower_bound(lst.rows, lst.n, r1)
                          - _lower_bound(lst.rows, lst.n, r0))
        return total

    def gather(self, const code_t[::1] codes, row_t r0, row_t r1):
        """Rows in [r0, r1) of the given codes, concatenated (sorted within each code only).

        Counting per contact needs no global order, so the k-way merge is skipped. A
        condition over a category subtree names thousands of item codes with a few rows
        each, so the cost is one or two cache misses per code, not the rows: one pass
        (no counting pass first), each window bound found by galloping back from the
        end of its list (recent windows start in the list's last cache line), and the
        list headers / list tails of the codes ahead prefetched so their misses overlap.
        """
        cdef Py_ssize_t i, n = codes.shape[0], a, b, pos = 0, cap, need
        cdef RowList* lst
        cdef RowList* ahead
        cdef row_t* buf
        cdef row_t* grown
        cdef code_t code
        cdef bint oom = False
        if r1 <= r0 or n == 0 or self.n_codes == 0:
            return np.empty(0, dtype=np.uint32)
        cap = max(1024, 4 * n)
        buf = <row_t*> malloc(cap * sizeof(row_t))
        if buf == NULL:
            raise MemoryError("postings.gather: cannot allocate the row buffer")
        with nogil:
            for i in range(n):
                if i + 2 * GATHER_AHEAD < n and codes[i + 2 * GATHER_AHEAD] < self.n_codes:
                    SEGD_PO_PREFETCH(&self.lists[codes[i + 2 * GATHER_AHEAD]])
                if i + GATHER_AHEAD < n and codes[i + GATHER_AHEAD] < self.n_codes:
                    ahead = &self.lists[codes[i + GATHER_AHEAD]]
                    if ahead.n:
                        SEGD_PO_PREFETCH(&ahead.rows[ahead.n - 1])
                code = codes[i]
                if code >= self.n_codes:
                    continue
                lst = &self.lists[code]
                if lst.n == 0:
                    continue
                b = _lower_bound_from_end(lst.rows, lst.n, r1)
                if b == 0:
                    continue
                a = _lower_bound_from_end(lst.rows, b, r0)
                if b > a:
                    need = pos + (b - a)
                    if need > cap:
                        while cap < need:
                            cap = 2 * cap
                        grown = <row_t*> realloc(buf, cap * sizeof(row_t))
                        if grown == NULL:
                            oom = True
                            break
                        buf = grown
                    memcpy(&buf[pos], &lst.rows[a], (b - a) * sizeof(row_t))
                    pos += b - a
        if oom:
            free(buf)
            raise MemoryError("postings.gather: cannot grow the row buffer")
        out = np.empty(pos, dtype=np.uint32)
        cdef row_t[::1] o = out
        if pos:
            memcpy(&o[0], buf, pos * sizeof(row_t))
        free(buf)
        return out

    def gather_parallel(self, Postings values not None, const code_t[::1] codes,
                        row_t r0, row_t r1):
        """The entries of `values` beside this postings' rows in [r0, r1) for the given
        codes: `values` holds lists of the same lengths as these (appended in the same
        order), e.g. each row's contact (``AttributePostings``). Positions are found
        in this postings' lists as ``gather`` finds them; the values are copied
        instead of the rows. ValueError when a list's lengths differ."""
        cdef Py_ssize_t i, n = codes.shape[0], a, b, pos = 0, cap, need
        cdef RowList* lst
        cdef code_t code
        cdef row_t* buf
        cdef row_t* grown
        cdef bint oom = False
        cdef code_t bad = NO_CODE
        if r1 <= r0 or n == 0 or self.n_codes == 0:
            return np.empty(0, dtype=np.uint32)
        cap = max(1024, 4 * n)
        buf = <row_t*> malloc(cap * sizeof(row_t))
        if buf == NULL:
            raise MemoryError("postings.gather_parallel: cannot allocate the buffer")
        with nogil:
            for i in range(n):
                code = codes[i]
                if code >= self.n_codes:
                    continue
                lst = &self.lists[code]
                if lst.n == 0:
                    continue
                if code >= values.n_codes or values.lists[code].n != lst.n:
                    bad = code
                    break
                b = _lower_bound_from_end(lst.rows, lst.n, r1)
                if b == 0:
                    continue
                a = _lower_bound_from_end(lst.rows, b, r0)
                if b > a:
                    need = pos + (b - a)
                    if need > cap:
                        while cap < need:
                            cap = 2 * cap
                        grown = <row_t*> realloc(buf, cap * sizeof(row_t))
                        if grown == NULL:
                            oom = True
                            break
                        buf = grown
                    memcpy(&buf[pos], &values.lists[code].rows[a], (b - a) * sizeof(row_t))
                    pos += b - a
        if oom or bad != NO_CODE:
            free(buf)
            if oom:
                raise MemoryError("postings.gather_parallel: cannot grow the buffer")
            raise ValueError(f"code {bad}: the value list's length differs from its rows'")
        out = np.empty(pos, dtype=np.uint32)
        cdef row_t[::1] o = out
        if pos:
            memcpy(&o[0], buf, pos * sizeof(row_t))
        free(buf)
        return out

    # -- snapshots ---------------------------------------------------------------------
    def copy_rows_into(self, row_t[::1] out):
        """Every list's rows, concatenated in code order, into `out` (length = postings).

        With ``sizes()`` this is the CSR form a snapshot stores; `out` may be a
        memory-mapped file, so nothing of the size of the postings is allocated.
        """
        cdef Py_ssize_t i
        cdef uint64_t pos = 0
        if <uint64_t> out.shape[0] != self.total:
            raise ValueError(f"out holds {out.shape[0]} rows, postings are {self.total}")
        with nogil:
            for i in range(self.n_codes):
                if self.lists[i].n:
                    memcpy(&out[pos], self.lists[i].rows, self.lists[i].n * sizeof(row_t))
                    pos += self.lists[i].n
        return pos

    @classmethod
    def from_arrays(cls, const uint32_t[::1] sizes, row_t[::1] rows):
        """Postings over the CSR arrays of ``sizes()`` / ``copy_rows_into``, no copy.

        Each list borrows its slice of `rows` (kept alive here) and is copied into its own
        memory the first time it grows. `rows` must be writable (a copy-on-write mapping
        is): renumbering after a late merge rewrites rows in place. Raises ValueError when
        the sizes do not add up to len(rows) or a list is not strictly ascending.
        """
        cdef Py_ssize_t n_codes = sizes.shape[0], i
        cdef uint64_t pos = 0, total = 0, j, bad = 0
        cdef Postings p = cls()
        for i in range(n_codes):
            total += sizes[i]
        if total != <uint64_t> rows.shape[0]:
            raise ValueError(f"sizes add up to {total} rows, the rows array has "
                             f"{rows.shape[0]}")
        if n_codes:
            p._ensure_codes(n_codes)
            p.n_codes = n_codes   # exactly the saved table, as the original reported
        with nogil:
            for i in range(n_codes):
                if sizes[i]:
                    for j in range(pos + 1, pos + sizes[i]):
                        if rows[j] <= rows[j - 1]:
                            bad = 1
                    p.lists[i].rows = &rows[pos]
                    p.lists[i].n = sizes[i]
                    p.lists[i].cap = 0
                    pos += sizes[i]
        p.total = total
        p.allocated = total
        p._backing = rows
        if bad:
            raise ValueError("a posting list is not strictly ascending")
        return p

    def owns_memory(self) -> bool:
        """False while some list still borrows from ``from_arrays``' rows."""
        cdef Py_ssize_t i
        for i in range(self.n_codes):
            if self.lists[i].cap < self.lists[i].n:
                return False
        return True

    def shrink_to_fit(self):
        """Drop the slack of every list (after a bulk load)."""
        cdef Py_ssize_t i
        cdef RowList* lst
        cdef row_t* p
        for i in range(self.n_codes):
            lst = &self.lists[i]
            if lst.cap > lst.n:
                if lst.n == 0:
                    free(lst.rows)
                    lst.rows = NULL
                else:
                    p = <row_t*> realloc(lst.rows, lst.n * sizeof(row_t))
                    if p == NULL:
                        continue
                    lst.rows = p
                self.allocated -= lst.cap - lst.n
                lst.cap = lst.n


cdef void _map_codes(const code_t* codes, Py_ssize_t n, const code_t* table,
                     Py_ssize_t n_table, code_t* out) noexcept nogil:
    cdef Py_ssize_t i
    cdef code_t c
    for i in range(n):
        c = codes[i]
        out[i] = table[c] if c < n_table else NO_CODE


def map_codes(const code_t[::1] codes, const code_t[::1] table):
    """``table[codes[i]]`` per row, NO_CODE where a code is NO_CODE or past the table.

    The per-row value of an item attribute (an event's item code -> its category
    code): the codes an attribute's postings are built from (``EventLog``'s
    ``AttributePostings``). One sequential read of the rows, a look-up each in a
    table of the catalog's size (cache resident for ~10^5-10^6 items).
    """
    cdef Py_ssize_t n = codes.shape[0]
    out = np.empty(n, dtype=np.uint32)
    cdef code_t[::1] o = out
    if n == 0:
        return out
    with nogil:
        if table.shape[0]:
            _map_codes(&codes[0], n, &table[0], table.shape[0], &o[0])
        else:
            _map_codes(&codes[0], n, NULL, 0, &o[0])
    return out
