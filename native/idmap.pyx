"""External string ids <-> dense uint32 codes, in order of first appearance (``IdMap``).

Customer ids, item ids, search phrases and campaign names all become ``code_t`` codes
0..n-1 here. With 10M+ customer ids a Python dict of str would cost ~100 bytes an entry, so
nothing is a Python object per entry; everything lives in four C arrays:

- ``data``: the UTF-8 bytes of every string, concatenated in code order (grows);
- ``offsets``: int64, n+1 of them; string ``c`` is ``data[offsets[c]:offsets[c + 1]]``
  (the Arrow ``large_string`` layout, so ``to_arrow`` is two memcpy);
- ``tags``: the low 32 bits of each string's 64-bit hash, per code. Past the home slot a
  probe compares the tag before touching ``offsets``/``data`` (one cache miss instead of
  two), and a resize rehashes from the tags without re-reading the strings;
- ``table``: open addressing, linear probing, power-of-two capacity, load <= 0.5; a slot
  holds a code or ``EMPTY_SLOT``. The home slot is ``tag & mask``: this is why the map is
  capped at 2^31 entries (table <= 2^32 slots, so a 32-bit tag covers the mask).

For 9-byte ids that is 9 (data) + 8 (offsets) + 4 (tags) + 8..16 (table) bytes per entry
(measured: 29.4 at 1M and 8M ids, 34.4 at 10M). Growth is 1.5x but capped by what the
current batch could add, so a bulk load of distinct ids ends with no slack.

Speed comes from two things: a prefetch pipeline (``_pipeline_step``) that overlaps the
three dependent cache misses of a probe across ~24 strings, and an inline short-string
compare (a libc ``memcmp`` call per probe had been the bottleneck of ``lookup``).

Thread safety: a per-map lock is taken around every touch of the C arrays (writers
``realloc`` them), and it is waited for with the GIL released. Lookups from several
threads are therefore serialised with each other, never corrupted.
"""

from cpython.pythread cimport (
    NOWAIT_LOCK,
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np
import pyarrow as pa

from segd.native._types cimport NO_CODE, code_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Unaligned little-endian-agnostic loads: memcpy compiles to one mov. */
    static inline uint64_t segd_rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint64_t segd_rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint64_t segd_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

    /* 64-bit string hash: xxh64-style multiply-rotate rounds over 8-byte words, the tail
       read as two overlapping 4-byte words (or 3 single bytes) so it is injective for a
       given length, and murmur3's fmix64 as final avalanche so every output bit (the low
       bits are the table's home slot) depends on every input bit. Not keyed: it is not a
       defence against deliberately colliding ids. */
    static inline uint64_t segd_hash_bytes(const uint8_t *p, int64_t n) {
        const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL;
        const uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
        uint64_t h = 0x27D4EB2F165667C5ULL ^ ((uint64_t)n * P1);
        uint64_t k;
        while (n >= 8) {
            k = segd_rotl64(segd_rd64(p) * P2, 31) * P1;
            h = segd_rotl64(h ^ k, 27) * P1 + P4;
            p += 8;
            n -= 8;
        }
        if (n > 0) {
            if (n >= 4) {
                k = segd_rd32(p) | (segd_rd32(p + n - 4) << 32);
            } else {
                k = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | (uint64_t)p[n - 1];
            }
            k = segd_rotl64(k * P2, 31) * P1;
            h = segd_rotl64(h ^ k, 23) * P2 + P4;
        }
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDULL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53ULL;
        h ^= h >> 33;
        return h;
    }

    /* Ask for transparent huge pages on a big array (Linux, THP in "madvise" mode): the
       table and the per-code arrays are read at random, and with 4 KiB pages nearly every
       probe would also miss the TLB. Only whole pages inside [p, p + n) are advised. */
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    static inline void segd_advise_huge(void *p, size_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        const uintptr_t page = 4096;
        uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t b = ((uintptr_t)p + n) & ~(page - 1);
        if (n >= ((size_t)2 << 20) && b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
    #else
        (void)p; (void)n;
    #endif
    }

    /* a[0..n) == b[0..n) for short ids without a libc call: two overlapping loads cover
       4..16 bytes, so nothing outside either string is read. */
    static inline int segd_bytes_equal(const uint8_t *a, const uint8_t *b, int64_t n) {
        if (n >= 8) {
            if (n > 16) return memcmp(a, b, (size_t)n) == 0;
            return segd_rd64(a) == segd_rd64(b) && segd_rd64(a + n - 8) == segd_rd64(b + n - 8);
        }
        if (n >= 4)
            return segd_rd32(a) == segd_rd32(b) && segd_rd32(a + n - 4) == segd_rd32(b + n - 4);
        for (int64_t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
        return 1;
    }

    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define SEGD_PREFETCH(p) ((void)(p))
    #endif
    """
    uint64_t segd_hash_bytes(const uint8_t* p, int64_t n) noexcept nogil
    uint64_t segd_rd64(const uint8_t* p) noexcept nogil
    uint64_t segd_rd32(const uint8_t* p) noexcept nogil
    bint segd_bytes_equal(const uint8_t* a, const uint8_t* b, int64_t n) noexcept nogil
    void segd_advise_huge(void* p, size_t n) noexcept nogil
    void SEGD_PREFETCH(const void* p) noexcept nogil


ctypedef fused offset_t:
    int32_t     # pa.string()
    int64_t     # pa.large_string()

cdef enum:
    EMPTY_SLOT = 0xFFFFFFFF  # table slot holding no code (same value as NO_CODE)
    RING = 32                # pipeline ring size (a power of two > AHEAD1)
    AHEAD1 = 24              # strings hashed + home slot prefetched ahead of the probe
    AHEAD2 = 12              # ... home slot read, that code's tag/offset prefetched
    AHEAD3 = 4               # ... that code's bytes prefetched

cdef int64_t MAX_CODES = 2147483648  # table <= 2^32 slots, addressed by a 32-bit tag

# Kernel return codes (the def layer turns them into exceptions after `with nogil:`).
cdef enum:
    OK = 0
    ERR_NOMEM = -1
    ERR_FULL = -2


cdef struct IdMapState:
    uint8_t* data          # UTF-8 bytes of all strings, concatenated in code order
    int64_t data_len       # bytes of `data` in use
    int64_t data_cap       # bytes of `data` allocated
    int64_t* offsets       # code c -> data[offsets[c]:offsets[c+1]]; n+1 in use
    uint32_t* tags         # code c -> low 32 bits of its hash
    int64_t code_cap       # codes allocated (`tags`: code_cap, `offsets`: code_cap + 1)
    uint32_t* table        # hash slots -> code, or EMPTY_SLOT
    uint64_t table_mask    # table capacity - 1 (capacity is a power of two)
    int64_t n              # codes in use
    # BORROWED_* bits: arrays that point into memory segd did not malloc (a memory-mapped
    # snapshot); never realloc'd or freed
    uint32_t borrowed


cdef enum:
    # An array restored from a snapshot is borrowed: the map reads (and may write in place
    # to, the mapping being copy-on-write) the snapshot's pages, and the first growth of
    # the array copies it into malloc'd memory instead of realloc'ing it.
    BORROWED_DATA = 1
    BORROWED_OFFSETS = 2
    BORROWED_TAGS = 4
    BORROWED_TABLE = 8


# ================================================================================
# nogil kernels
# ================================================================================

cdef inline bint _same(const IdMapState* st, uint32_t c, const uint8_t* s,
                       int64_t ln) noexcept nogil:
    """True if code c's string is s[:ln]."""
    return (st.offsets[c + 1] - st.offsets[c] == ln
            and segd_bytes_equal(st.data + st.offsets[c], s, ln))


cdef inline uint64_t _find_slot(const IdMapState* st, const uint8_t* s, int64_t ln,
                                uint32_t tag) noexcept nogil:
    """Slot holding the code of string s, or the empty slot where it would be inserted."""
    cdef uint64_t slot = tag & st.table_mask
    cdef uint32_t c = st.table[slot]
    if c == EMPTY_SLOT:
        return slot
    # The home slot's code had its offsets and bytes prefetched by the pipeline, so it is
    # compared directly; reading its tag first would be one more miss on the common path.
    if _same(st, c, s, ln):
        return slot
    while True:
        slot = (slot + 1) & st.table_mask
        c = st.table[slot]
        if c == EMPTY_SLOT:
            return slot
        # Past the home slot nothing was prefetched: the tag rules out most candidates
        # with one miss instead of two (offsets, then bytes).
        if st.tags[c] == tag and _same(st, c, s, ln):
            return slot


cdef inline int64_t _capped(int64_t cap, int64_t upper, int64_t batch) noexcept nogil:
    """The next capacity: 1.5x `cap`. When that passes `upper` (the call's worst case), a
    big call (`batch` >= 1/8 of `cap`: a bulk load of distinct ids) stops at `upper`, with
    no slack; a small one into a big map still grows by at least 1/8 — or every live
    batch of new ids would copy the whole map (10k new ids into a 5M map cost 0.3 s)."""
    cdef int64_t grown = cap + cap // 2
    if grown > upper:
        if batch >= cap // 8:
            grown = upper
        elif upper > cap + cap // 8:
            grown = upper
        else:
            grown = cap + cap // 8
    return grown


cdef int _grow_codes(IdMapState* st, int64_t need, int64_t upper,
                     int64_t batch) noexcept nogil:
    """Make room for `need` codes; grows 1.5x, capped by `upper` (see _capped)."""
    cdef int64_t cap = _capped(st.code_cap, upper, batch)
    cdef int64_t* offsets
    cdef uint32_t* tags
    if cap < 16:
        cap = 16
    if cap < need:
        cap = need
    if st.borrowed & BORROWED_OFFSETS:
        offsets = <int64_t*>malloc(<size_t>(cap + 1) * sizeof(int64_t))
        if offsets == NULL:
            return ERR_NOMEM
        memcpy(offsets, st.offsets, <size_t>(st.n + 1) * sizeof(int64_t))
        st.borrowed &= ~BORROWED_OFFSETS
    else:
        offsets = <int64_t*>realloc(st.offsets, <size_t>(cap + 1) * sizeof(int64_t))
        if offsets == NULL:
            return ERR_NOMEM
    st.offsets = offsets
    segd_advise_huge(offsets, <size_t>(cap + 1) * sizeof(int64_t))
    if st.borrowed & BORROWED_TAGS:
        tags = <uint32_t*>malloc(<size_t>cap * sizeof(uint32_t))
        if tags == NULL:
            return ERR_NOMEM
        if st.n > 0:
            memcpy(tags, st.tags, <size_t>st.n * sizeof(uint32_t))
        st.borrowed &= ~BORROWED_TAGS
    else:
        tags = <uint32_t*>realloc(st.tags, <size_t>cap * sizeof(uint32_t))
        if tags == NULL:
            return ERR_NOMEM
    st.tags = tags
    segd_advise_huge(tags, <size_t>cap * sizeof(uint32_t))
    st.code_cap = cap
    return OK


cdef int _grow_data(IdMapState* st, int64_t need, int64_t upper,
                    int64_t batch) noexcept nogil:
    """Make room for `need` bytes of strings; same growth rule as _grow_codes."""
    cdef int64_t cap = _capped(st.data_cap, upper, batch)
    cdef uint8_t* data
    if cap < 64:
        cap = 64
    if cap < need:
        cap = need
    if st.borrowed & BORROWED_DATA:
        data = <uint8_t*>malloc(<size_t>cap)
        if data == NULL:
            return ERR_NOMEM
        if st.data_len > 0:
            memcpy(data, st.data, <size_t>st.data_len)
        st.borrowed &= ~BORROWED_DATA
    else:
        data = <uint8_t*>realloc(st.data, <size_t>cap)
        if data == NULL:
            return ERR_NOMEM
    st.data = data
    st.data_cap = cap
    segd_advise_huge(data, <size_t>cap)
    return OK


cdef int _grow_table(IdMapState* st, uint64_t capacity) noexcept nogil:
    """Rehash every code into a fresh table of `capacity` slots (a power of two)."""
    cdef uint32_t* table = <uint32_t*>malloc(<size_t>capacity * sizeof(uint32_t))
    cdef uint64_t mask = capacity - 1, slot
    cdef int64_t c
    if table == NULL:
        return ERR_NOMEM
    segd_advise_huge(table, <size_t>capacity * sizeof(uint32_t))
    memset(table, 0xFF, <size_t>capacity * sizeof(uint32_t))   # all EMPTY_SLOT
    for c in range(st.n):
        # Codes are distinct, so no string compare: first empty slot from home. The home
        # slot of a later code is prefetched so the random writes' misses overlap.
        if c + 32 < st.n:
            SEGD_PREFETCH(table + (st.tags[c + 32] & mask))
        slot = st.tags[c] & mask
        while table[slot] != EMPTY_SLOT:
            slot = (slot + 1) & mask
        table[slot] = <uint32_t>c
    if st.borrowed & BORROWED_TABLE:
        st.borrowed &= ~BORROWED_TABLE
    else:
        free(st.table)
    st.table = table
    st.table_mask = mask
    return OK


cdef int _offsets_valid(const offset_t* offs, int64_t n, int64_t data_size) noexcept nogil:
    """1 if offs[0..n] is non-decreasing inside [0, data_size], else 0."""
    cdef int64_t i
    if offs[0] < 0 or offs[n] > data_size:
        return 0
    for i in range(n):
        if offs[i + 1] < offs[i]:
            return 0
    return 1


cdef struct Pipeline:
    # Ring of per-string state for the prefetch pipeline, indexed by i & (RING - 1).
    uint32_t tag[RING]     # low 32 bits of the string's hash (stage 1)
    uint32_t cand[RING]    # code in the home slot when stage 2 ran (a guess, or EMPTY_SLOT)


cdef inline void _pipeline_step(const IdMapState* st, Pipeline* pl,
                                const uint8_t* data, const offset_t* offs,
                                int64_t i, int64_t n) noexcept nogil:
    """Run the prefetch stages that lead string i (call for i = -AHEAD1 .. n-1, in order).

    A probe touches table[home], then offsets[c], then data[offsets[c]]: three
    dependent cache misses for a random string. Strings i + AHEAD1, i + AHEAD2, i + AHEAD3
    are at stages 1, 2, 3, so by the time string i is probed its lines are in cache and the
    misses of ~AHEAD1 strings overlap. Everything here is a hint: a table resize or insert
    between stages only makes a prefetch useless, the probe itself starts afresh.
    """
    cdef int64_t j
    cdef uint64_t slot
    cdef uint32_t c
    j = i + AHEAD1
    if 0 <= j < n:
        pl.tag[j & (RING - 1)] = <uint32_t>segd_hash_bytes(data + offs[j], offs[j + 1] - offs[j])
        SEGD_PREFETCH(st.table + (pl.tag[j & (RING - 1)] & st.table_mask))
    j = i + AHEAD2
    if 0 <= j < n:
        slot = pl.tag[j & (RING - 1)] & st.table_mask
        c = st.table[slot]
        pl.cand[j & (RING - 1)] = c
        if c != EMPTY_SLOT:
            SEGD_PREFETCH(st.offsets + c)
            # When home holds another string (~load factor of the time) the probe goes on
            # to the next slot and reads its tag: fetch that too (same table line, mostly).
            c = st.table[(slot + 1) & st.table_mask]
            if c != EMPTY_SLOT:
                SEGD_PREFETCH(st.tags + c)
    j = i + AHEAD3
    if 0 <= j < n:
        c = pl.cand[j & (RING - 1)]
        if c != EMPTY_SLOT:
            SEGD_PREFETCH(st.data + st.offsets[c])


cdef int _get_or_add(IdMapState* st,
                     const uint8_t* data,       # IN  string bytes
                     const offset_t* offs,      # IN  n + 1 validated offsets
                     int64_t n,
                     code_t* out                # OUT n codes
                     ) noexcept nogil:
    """Code of each string, adding unknown ones in order; OK, ERR_NOMEM or ERR_FULL."""
    cdef int64_t i, ln, start
    cdef int64_t bytes_left = offs[n] - offs[0]
    cdef uint64_t slot
    cdef uint32_t tag
    cdef Pipeline pl
    cdef int rc
    for i in range(-AHEAD1, n):
        _pipeline_step(st, &pl, data, offs, i, n)
        if i < 0:
            continue
        start = offs[i]
        ln = offs[i + 1] - start
        tag = pl.tag[i & (RING - 1)]
        slot = _find_slot(st, data + start, ln, tag)
        if st.table[slot] == EMPTY_SLOT:
            if st.n >= MAX_CODES:
                return ERR_FULL
            if st.n + 1 > st.code_cap:
                rc = _grow_codes(st, st.n + 1, st.n + (n - i), n)
                if rc != OK:
                    return rc
            if st.data_len + ln > st.data_cap:
                rc = _grow_data(st, st.data_len + ln, st.data_len + bytes_left,
                                offs[n] - offs[0])
                if rc != OK:
                    return rc
            if <uint64_t>(st.n + 1) * 2 > st.table_mask + 1:
                rc = _grow_table(st, (st.table_mask + 1) * 2)
                if rc != OK:
                    return rc
                slot = _find_slot(st, data + start, ln, tag)
            if ln > 0:
                memcpy(st.data + st.data_len, data + start, <size_t>ln)
            st.data_len += ln
            st.offsets[st.n + 1] = st.data_len
            st.tags[st.n] = tag
            st.table[slot] = <uint32_t>st.n
            st.n += 1
        out[i] = st.table[slot]
        bytes_left -= ln
    return OK


cdef void _lookup(const IdMapState* st,
                  const uint8_t* data,          # IN  string bytes
                  const offset_t* offs,         # IN  n + 1 validated offsets
                  const uint8_t* valid,         # IN  Arrow validity bitmap or NULL
                  int64_t bit_offset,           # first bit of `valid` for string 0
                  int64_t n,
                  code_t* out                   # OUT n codes, NO_CODE if unknown or null
                  ) noexcept nogil:
    """Code of each string, NO_CODE for unknown or null strings; never adds."""
    cdef int64_t i, b, start
    cdef Pipeline pl
    for i in range(-AHEAD1, n):
        # Null strings go through the pipeline too (their slice is empty or junk-free).
        _pipeline_step(st, &pl, data, offs, i, n)
        if i < 0:
            continue
        if valid != NULL:
            b = bit_offset + i
            if not (valid[b >> 3] >> (b & 7)) & 1:
                out[i] = NO_CODE
                continue
        start = offs[i]
        out[i] = st.table[_find_slot(st, data + start, offs[i + 1] - start,
                                     pl.tag[i & (RING - 1)])]   # EMPTY_SLOT == NO_CODE


cdef int64_t _decode_sizes(const IdMapState* st,
                           const code_t* codes,   # IN  m codes
                           int64_t m,
                           int64_t* total,        # OUT bytes of the decoded strings
                           int64_t* n_null        # OUT codes equal to NO_CODE
                           ) noexcept nogil:
    """Sizes for decode; returns the position of the first invalid code, or -1."""
    cdef int64_t i, t = 0, nn = 0
    cdef code_t c
    for i in range(m):
        if i + AHEAD1 < m and codes[i + AHEAD1] < st.n:
            SEGD_PREFETCH(st.offsets + codes[i + AHEAD1])    # random codes: overlap misses
        c = codes[i]
        if c == NO_CODE:
            nn += 1
        elif c >= st.n:
            return i
        else:
            t += st.offsets[c + 1] - st.offsets[c]
    total[0] = t
    n_null[0] = nn
    return -1


cdef void _decode_gather(const IdMapState* st,
                         const code_t* codes,    # IN  m codes, validated
                         int64_t m,
                         int64_t* offsets,       # OUT m + 1 offsets
                         uint8_t* data,          # OUT bytes of the strings
                         uint8_t* valid          # OUT validity bitmap or NULL (no nulls)
                         ) noexcept nogil:
    """Copy the strings of `codes` into Arrow large_string buffers."""
    cdef int64_t i, pos = 0, ln
    cdef code_t c
    if valid != NULL:
        memset(valid, 0, <size_t>((m + 7) >> 3))
    offsets[0] = 0
    for i in range(m):
        # Two-stage prefetch as in _pipeline_step: the offset, then the bytes it points to.
        if i + AHEAD1 < m and codes[i + AHEAD1] != NO_CODE:
            SEGD_PREFETCH(st.offsets + codes[i + AHEAD1])
        if i + AHEAD3 < m and codes[i + AHEAD3] != NO_CODE:
            SEGD_PREFETCH(st.data + st.offsets[codes[i + AHEAD3]])
        c = codes[i]
        if c != NO_CODE:
            ln = st.offsets[c + 1] - st.offsets[c]
            memcpy(data + pos, st.data + st.offsets[c], <size_t>ln)
            pos += ln
            if valid != NULL:
                valid[i >> 3] |= <uint8_t>(1 << (i & 7))
        offsets[i + 1] = pos


# ================================================================================
# Arrow input normalisation (with the GIL)
# ================================================================================

cdef const uint8_t[::1] _EMPTY_BYTES = np.zeros(8, dtype=np.uint8)


def _string_chunks(strings):
    """Arrow string chunks of `strings` (Array, ChunkedArray, or list/tuple of str)."""
    if isinstance(strings, pa.ChunkedArray):
        chunks = strings.chunks
    elif isinstance(strings, pa.Array):
        chunks = [strings]
    elif isinstance(strings, (list, tuple)):
        chunks = [pa.array(strings, type=pa.large_string())]
    else:
        raise TypeError(
            f"expected a pyarrow string array or a list of str, got {type(strings).__name__}"
        )
    out = []
    for chunk in chunks:
        t = chunk.type
        if pa.types.is_string_view(t):
            chunk = chunk.cast(pa.large_string())
        elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise TypeError(f"expected string or large_string values, got {t}")
        out.append(chunk)
    return out


cdef class _Chunk:
    """Zero-copy views of one Arrow string array's buffers, validated."""
    cdef int64_t n                    # strings
    cdef bint large                   # int64 offsets (large_string) or int32
    cdef const int32_t[::1] off32     # n + 1 offsets, when not large
    cdef const int64_t[::1] off64     # n + 1 offsets, when large
    cdef const uint8_t[::1] data      # string bytes (a dummy when the buffer is empty)
    cdef const uint8_t[::1] valid     # validity bitmap bytes, or None
    cdef int64_t bit_offset           # bit of `valid` for string 0 (= arr.offset)
    cdef int64_t null_count

    def __init__(self, arr):
        cdef int ok
        bufs = arr.buffers()
        self.n = len(arr)
        self.large = pa.types.is_large_string(arr.type)
        self.null_count = arr.null_count
        self.bit_offset = arr.offset
        self.valid = None
        if bufs[0] is not None and self.null_count > 0:
            self.valid = np.frombuffer(bufs[0], dtype=np.uint8)
        if bufs[2] is not None and bufs[2].size > 0:
            self.data = np.frombuffer(bufs[2], dtype=np.uint8)
        else:
            self.data = _EMPTY_BYTES[:0]
        if self.n == 0:
            return
        # Arrow offsets are relative to the data buffer; `arr.offset` slices the offsets.
        if self.large:
            self.off64 = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset:arr.offset + self.n + 1]
            with nogil:
                ok = _offsets_valid(&self.off64[0], self.n, self.data.shape[0])
        else:
            self.off32 = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset:arr.offset + self.n + 1]
            with nogil:
                ok = _offsets_valid(&self.off32[0], self.n, self.data.shape[0])
        if not ok:
            raise ValueError("string array has invalid offsets")

    cdef const uint8_t* data_ptr(self) noexcept nogil:
        return &self.data[0] if self.data.shape[0] > 0 else &_EMPTY_BYTES[0]


# ================================================================================
# Snapshot helpers
# ================================================================================

cdef int64_t _table_invalid(const uint32_t* table, uint64_t slots, int64_t n,
                            uint8_t* seen) noexcept nogil:
    """-1 when every code 0..n-1 sits in exactly one slot and the other slots are empty,
    else 1. `seen`: n zeroed bytes of scratch."""
    cdef uint64_t i
    cdef uint32_t c
    for i in range(slots):
        c = table[i]
        if c != EMPTY_SLOT:
            if c >= n or seen[c]:
                return 1
            seen[c] = 1
    for i in range(<uint64_t>n):
        if not seen[i]:
            return 1
    return -1


cdef object _view_u8(uint8_t* p, int64_t n):
    if n == 0 or p == NULL:
        return np.zeros(0, dtype=np.uint8)
    return np.asarray(<uint8_t[:n]> p)


cdef object _view_i64(int64_t* p, int64_t n):
    if n == 0 or p == NULL:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(<int64_t[:n]> p)


cdef object _view_u32(uint32_t* p, int64_t n):
    if n == 0 or p == NULL:
        return np.zeros(0, dtype=np.uint32)
    return np.asarray(<uint32_t[:n]> p)


# ================================================================================
# IdMap
# ================================================================================

cdef inline void _lock(PyThread_type_lock lock) noexcept:
    """Take the map's lock; wait for it without the GIL so its holder can finish."""
    if not PyThread_acquire_lock(lock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)


cdef class IdMap:
    """Dictionary of strings to dense codes 0..n-1 in order of first appearance.

    >>> m = IdMap()
    >>> m.get_or_add(["b", "a", "b"]).tolist()
    [0, 1, 0]
    >>> m.lookup(["a", "zz"]).tolist()
    [1, 4294967295]
    >>> m.decode_one(1)
    'a'
    """
    cdef IdMapState st
    cdef PyThread_type_lock lock
    cdef object _backing   # the arrays borrowed pointers point into (see from_arrays)

    def __cinit__(self, capacity_hint=0):
        memset(&self.st, 0, sizeof(IdMapState))
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __init__(self, capacity_hint: int = 0):
        """Empty map; `capacity_hint` pre-sizes the code arrays and the table (no data)."""
        cdef int64_t hint = capacity_hint
        cdef uint64_t slots = 16
        if hint < 0 or hint > MAX_CODES:
            raise ValueError(f"capacity_hint must be in [0, 2**31], got {capacity_hint}")
        if self.st.table != NULL:
            return   # __init__ called twice: keep the contents
        while slots < <uint64_t>hint * 2:
            slots <<= 1
        self.st.offsets = <int64_t*>malloc(sizeof(int64_t))
        self.st.table = <uint32_t*>malloc(<size_t>slots * sizeof(uint32_t))
        if self.st.offsets == NULL or self.st.table == NULL:
            raise MemoryError()
        self.st.offsets[0] = 0
        memset(self.st.table, 0xFF, <size_t>slots * sizeof(uint32_t))
        self.st.table_mask = slots - 1
        if hint > 0 and _grow_codes(&self.st, hint, hint, hint) != OK:
            raise MemoryError()
        if _grow_data(&self.st, 0, 64, 64) != OK:
            raise MemoryError()

    def __dealloc__(self):
        if not self.st.borrowed & BORROWED_DATA:
            free(self.st.data)
        if not self.st.borrowed & BORROWED_OFFSETS:
            free(self.st.offsets)
        if not self.st.borrowed & BORROWED_TAGS:
            free(self.st.tags)
        if not self.st.borrowed & BORROWED_TABLE:
            free(self.st.table)
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef inline void _check_ready(self) except *:
        if self.st.table == NULL:
            raise ValueError("IdMap.__init__ was not called")

    def __len__(self):
        return self.st.n

    def __repr__(self):
        return f"IdMap(n={self.st.n}, nbytes={self.nbytes()})"

    def __reduce__(self):
        return (IdMap.from_arrow, (self.to_arrow(),))

    def nbytes(self) -> int:
        """Bytes allocated by the map's C arrays (data, offsets, tags, table)."""
        if self.st.table == NULL:
            return 0
        return (self.st.data_cap
                + (self.st.code_cap + 1) * <int64_t>sizeof(int64_t)
                + self.st.code_cap * <int64_t>sizeof(uint32_t)
                + <int64_t>(self.st.table_mask + 1) * <int64_t>sizeof(uint32_t))

    # ---------------------------------------------------------------- batches

    def get_or_add(self, strings):
        """Code of each string, adding unknown ones in order of first appearance.

        `strings`: pa.StringArray / LargeStringArray / ChunkedArray, or a list of str.
        Returns a uint32 array of len(strings). A null raises ``ValueError("null at
        position N")`` before anything is added. On MemoryError, strings before the failing
        one may have been added (the map stays consistent).
        """
        self._check_ready()
        chunks = [_Chunk(c) for c in _string_chunks(strings)]
        cdef int64_t base = 0, total = 0
        cdef _Chunk ch
        for ch in chunks:
            if ch.null_count > 0:
                valid = np.unpackbits(np.asarray(ch.valid), bitorder="little")
                pos = np.flatnonzero(valid[ch.bit_offset:ch.bit_offset + ch.n] == 0)[0]
                raise ValueError(f"null at position {base + pos}")
            base += ch.n
        total = base
        out = np.empty(total, dtype=np.uint32)
        cdef code_t[::1] out_v = out
        cdef int rc = OK
        base = 0
        for ch in chunks:
            if ch.n == 0:
                continue
            _lock(self.lock)
            with nogil:
                if ch.large:
                    rc = _get_or_add(&self.st, ch.data_ptr(), &ch.off64[0], ch.n, &out_v[base])
                else:
                    rc = _get_or_add(&self.st, ch.data_ptr(), &ch.off32[0], ch.n, &out_v[base])
                PyThread_release_lock(self.lock)
            if rc == ERR_NOMEM:
                raise MemoryError("IdMap.get_or_add: out of memory")
            if rc == ERR_FULL:
                raise ValueError(f"IdMap is full ({MAX_CODES} entries)")
            base += ch.n
        return out

    def lookup(self, strings):
        """Code of each string; ``0xFFFFFFFF`` (NO_CODE) for unknown or null strings.

        `strings` as for get_or_add. Returns a uint32 array of len(strings); never adds.
        """
        self._check_ready()
        chunks = [_Chunk(c) for c in _string_chunks(strings)]
        cdef int64_t base = 0
        cdef _Chunk ch
        for ch in chunks:
            base += ch.n
        out = np.empty(base, dtype=np.uint32)
        cdef code_t[::1] out_v = out
        cdef const uint8_t* valid
        base = 0
        for ch in chunks:
            if ch.n == 0:
                continue
            valid = &ch.valid[0] if ch.valid is not None else NULL
            _lock(self.lock)
            with nogil:
                if ch.large:
                    _lookup(&self.st, ch.data_ptr(), &ch.off64[0], valid, ch.bit_offset,
                            ch.n, &out_v[base])
                else:
                    _lookup(&self.st, ch.data_ptr(), &ch.off32[0], valid, ch.bit_offset,
                            ch.n, &out_v[base])
                PyThread_release_lock(self.lock)
            base += ch.n
        return out

    def decode(self, const code_t[::1] codes):
        """Strings of `codes` as a pa.LargeStringArray; NO_CODE decodes to null.

        `codes`: uint32 array (read-only is fine). Any other code >= len(self) raises
        ValueError.
        """
        self._check_ready()
        cdef int64_t m = codes.shape[0], bad = -1, total = 0, n_null = 0
        offsets = np.empty(m + 1, dtype=np.int64)
        cdef int64_t[::1] off_v = offsets
        if m == 0:
            off_v[0] = 0
            return pa.LargeStringArray.from_buffers(0, pa.py_buffer(offsets), pa.py_buffer(b""))
        _lock(self.lock)
        with nogil:
            bad = _decode_sizes(&self.st, &codes[0], m, &total, &n_null)
            PyThread_release_lock(self.lock)
        if bad >= 0:
            raise ValueError(
                f"code {codes[bad]} at position {bad} out of range (len {self.st.n})"
            )
        data = np.empty(max(total, 1), dtype=np.uint8)
        cdef uint8_t[::1] data_v = data
        cdef uint8_t[::1] valid_v
        cdef uint8_t* valid_p = NULL
        validity = None
        if n_null > 0:
            validity = np.empty((m + 7) // 8, dtype=np.uint8)
            valid_v = validity
            valid_p = &valid_v[0]
        # Codes below len(self) stay valid and their bytes never change, so the lock can
        # be dropped between the two passes (a writer may realloc, hence the re-take).
        _lock(self.lock)
        with nogil:
            _decode_gather(&self.st, &codes[0], m, &off_v[0], &data_v[0], valid_p)
            PyThread_release_lock(self.lock)
        return pa.LargeStringArray.from_buffers(
            m,
            pa.py_buffer(offsets),
            pa.py_buffer(data[:total]),
            pa.py_buffer(validity) if validity is not None else None,
            n_null,
        )

    def to_arrow(self):
        """All strings in code order as a pa.LargeStringArray (a copy)."""
        self._check_ready()
        cdef int64_t n, total
        # Sizes under the lock, allocation without it (np.empty may raise), copy under it
        # again: codes < n and their bytes never change, so the prefix read is consistent.
        _lock(self.lock)
        n = self.st.n
        total = self.st.data_len
        PyThread_release_lock(self.lock)
        offsets = np.empty(n + 1, dtype=np.int64)
        data = np.empty(max(total, 1), dtype=np.uint8)
        cdef int64_t[::1] off_v = offsets
        cdef uint8_t[::1] data_v = data
        _lock(self.lock)
        with nogil:
            memcpy(&off_v[0], self.st.offsets, <size_t>(n + 1) * sizeof(int64_t))
            if total > 0:
                memcpy(&data_v[0], self.st.data, <size_t>total)
            PyThread_release_lock(self.lock)
        return pa.LargeStringArray.from_buffers(
            n, pa.py_buffer(offsets), pa.py_buffer(data[:total])
        )

    @classmethod
    def from_arrow(cls, arr):
        """Map whose code i is arr[i]; arr (as for get_or_add) must be distinct, non-null."""
        n = len(arr)
        m = cls(n)
        codes = m.get_or_add(arr)
        if len(m) != n:
            pos = int(np.flatnonzero(codes != np.arange(n, dtype=np.uint32))[0])
            raise ValueError(f"duplicate string at position {pos}")
        return m

    # ---------------------------------------------------------------- snapshots

    def to_arrays(self, bint copy=True):
        """The map's four arrays, for a snapshot: ``{"data": uint8[bytes],
        "offsets": int64[n + 1], "tags": uint32[n], "table": uint32[slots]}``.

        ``copy=True`` copies them under the map's lock. ``copy=False`` returns views of the
        C memory without locking: only for a caller that knows nothing can change the map
        while the views live (a forked snapshot child, where no other thread exists).
        ``IdMap.from_arrays`` of the result is an equal map, with no rehash.
        """
        self._check_ready()
        cdef int64_t n, total
        cdef uint64_t slots
        if copy:
            _lock(self.lock)
        try:
            n = self.st.n
            total = self.st.data_len
            slots = self.st.table_mask + 1
            out = {
                "data": _view_u8(self.st.data, total),
                "offsets": _view_i64(self.st.offsets, n + 1),
                "tags": _view_u32(self.st.tags, n),
                "table": _view_u32(self.st.table, <int64_t>slots),
            }
            if copy:
                out = {k: v.copy() for k, v in out.items()}
            return out
        finally:
            if copy:
                PyThread_release_lock(self.lock)

    @classmethod
    def from_arrays(cls, data, offsets, tags, table):
        """A map over the arrays of ``to_arrays`` (e.g. memory-mapped from a snapshot).

        Nothing is copied or rehashed: the map borrows the arrays (it keeps them alive)
        and copies each into its own memory the first time it has to grow it. The arrays
        must be writable (a copy-on-write mapping is): an insert that needs no growth
        writes one table slot in place. The shapes and the offsets and table contents
        are checked (ValueError), the tags are trusted (the snapshot is checksummed).
        """
        cdef uint8_t[::1] data_v = data
        cdef int64_t[::1] offsets_v = offsets
        cdef uint32_t[::1] tags_v = tags
        cdef uint32_t[::1] table_v = table
        cdef int64_t n = tags_v.shape[0], bad
        cdef uint64_t slots = table_v.shape[0]
        seen_arr = np.zeros(max(n, 1), dtype=np.uint8)
        cdef uint8_t[::1] seen = seen_arr
        if offsets_v.shape[0] != n + 1:
            raise ValueError(f"offsets: expected {n + 1} entries for {n} tags, "
                             f"got {offsets_v.shape[0]}")
        if n > MAX_CODES:
            raise ValueError(f"{n} codes exceed the map's limit of {MAX_CODES}")
        if slots < 16 or (slots & (slots - 1)) or <uint64_t>n * 2 > slots:
            raise ValueError(f"table: {slots} slots is not a power of two >= 16 "
                             f"holding {n} codes at load <= 0.5")
        with nogil:
            if offsets_v[0] != 0 or offsets_v[n] != data_v.shape[0]:
                bad = 0
            else:
                bad = -1 if _offsets_valid(&offsets_v[0], n, data_v.shape[0]) else 0
            if bad < 0:
                bad = _table_invalid(&table_v[0], slots, n, &seen[0])
        if bad >= 0:
            raise ValueError("offsets are not ascending from 0 to the data size"
                             if bad == 0 else
                             "table: a slot holds a code out of range or codes are "
                             "missing or repeated")
        cdef IdMap m = cls.__new__(cls)
        m.st.n = n
        m.st.code_cap = n
        m.st.offsets = &offsets_v[0]
        m.st.tags = &tags_v[0] if n > 0 else NULL
        m.st.table = &table_v[0]
        m.st.table_mask = slots - 1
        m.st.data_len = data_v.shape[0]
        m.st.data_cap = data_v.shape[0]
        m.st.data = &data_v[0] if data_v.shape[0] > 0 else NULL
        m.st.borrowed = BORROWED_OFFSETS | BORROWED_TABLE
        if m.st.tags != NULL:
            m.st.borrowed |= BORROWED_TAGS
        if m.st.data != NULL:
            m.st.borrowed |= BORROWED_DATA
        m._backing = (data, offsets, tags, table)
        return m

    def owns_memory(self) -> bool:
        """False while some array is still borrowed from ``from_arrays``' input."""
        return self.st.borrowed == 0

    # ---------------------------------------------------------------- scalars

    def get_or_add_one(self, str s) -> int:
        """Code of `s`, adding it if unknown."""
        self._check_ready()
        cdef bytes b = s.encode("utf-8")
        cdef const uint8_t* p = b
        cdef code_t out = 0
        cdef int rc
        cdef int64_t offs[2]
        offs[0] = 0
        offs[1] = len(b)
        _lock(self.lock)
        rc = _get_or_add(&self.st, p, offs, 1, &out)
        PyThread_release_lock(self.lock)
        if rc == ERR_NOMEM:
            raise MemoryError("IdMap.get_or_add_one: out of memory")
        if rc == ERR_FULL:
            raise ValueError(f"IdMap is full ({MAX_CODES} entries)")
        return out

    def lookup_one(self, str s) -> int:
        """Code of `s`, or -1 if unknown."""
        self._check_ready()
        cdef bytes b = s.encode("utf-8")
        cdef const uint8_t* p = b
        cdef code_t out = 0
        cdef int64_t offs[2]
        offs[0] = 0
        offs[1] = len(b)
        _lock(self.lock)
        _lookup(&self.st, p, offs, NULL, 0, 1, &out)
        PyThread_release_lock(self.lock)
        return -1 if out == NO_CODE else <int64_t>out

    def reserve(self, int64_t codes, int64_t data_bytes=0):
        """Room for `codes` codes and `data_bytes` bytes of strings in all, and a table
        that holds them at most half full. An array that must grow grows to at least
        twice its capacity, so a caller adding batch after batch of new values (a bulk
        load's staged customer map: ~10M ids over ~200 row groups) reallocates each
        array O(log n) times instead of by ~1/8 every few batches (``_capped``). Grown
        capacity that is never used is never touched, so it costs address space, not
        memory."""
        self._check_ready()
        if codes < 0 or codes > MAX_CODES or data_bytes < 0:
            raise ValueError(f"reserve({codes}, {data_bytes}): out of range")
        cdef int64_t target
        cdef uint64_t slots
        cdef int rc = OK
        _lock(self.lock)
        with nogil:
            if codes > self.st.code_cap:
                target = codes if codes > 2 * self.st.code_cap else 2 * self.st.code_cap
                if target > MAX_CODES:
                    target = MAX_CODES
                rc = _grow_codes(&self.st, target, target, target)
            if rc == OK and data_bytes > self.st.data_cap:
                target = data_bytes if data_bytes > 2 * self.st.data_cap else 2 * self.st.data_cap
                rc = _grow_data(&self.st, target, target, target)
            slots = self.st.table_mask + 1
            while <uint64_t>codes * 2 > slots:
                slots <<= 1
            if rc == OK and slots != self.st.table_mask + 1:
                rc = _grow_table(&self.st, slots)
            PyThread_release_lock(self.lock)
        if rc != OK:
            raise MemoryError("IdMap.reserve: out of memory")

    def capacity(self) -> tuple[int, int, int]:
        """(codes, string bytes, table slots) allocated."""
        return self.st.code_cap, self.st.data_cap, <int64_t>(self.st.table_mask + 1)

    def take_from(self, IdMap other):
        """Move every entry of `other` into this map, which must be empty, without
        copying or rehashing: the two maps swap their arrays, so `other` is left empty
        (and usable). Codes are kept: a string has the code it had in `other`.

        A bulk load into an engine that knows no contacts yet stages its customer ids
        in a map of its own; the engine then takes that map whole instead of hashing
        its ~10M strings a second time.
        """
        self._check_ready()
        other._check_ready()
        if other is self:
            return
        cdef IdMapState st
        cdef object backing
        _lock(self.lock)
        try:
            _lock(other.lock)
            try:
                if self.st.n != 0:
                    raise ValueError(f"take_from needs an empty map, this one has {self.st.n}")
                st = self.st
                self.st = other.st
                other.st = st
                backing = self._backing
                self._backing = other._backing
                other._backing = backing
            finally:
                PyThread_release_lock(other.lock)
        finally:
            PyThread_release_lock(self.lock)

    def decode_one(self, int64_t code) -> str:
        """String of `code`; ValueError unless 0 <= code < len(self)."""
        self._check_ready()
        if code < 0 or code >= self.st.n:
            raise ValueError(f"code {code} out of range (len {self.st.n})")
        cdef int64_t start
        _lock(self.lock)
        try:
            start = self.st.offsets[code]
            return PyUnicode_DecodeUTF8(<const char*>(self.st.data + start),
                                        self.st.offsets[code + 1] - start, "strict")
        finally:
            PyThread_release_lock(self.lock)


# ================================================================================
# ShortKeyIndex: a bulk load's front for an IdMap's short keys
# ================================================================================
#
# A code found in an IdMap costs three dependent cache misses: the table slot, the code's
# offset, the code's bytes. At 10M contacts a bulk load looks ~190M customer ids up in a
# 9M-entry map (every row group names ~800k of them), and on this machine (a VM whose
# dependent DRAM load takes ~250 ns with huge pages) that was ~155 ns an id, the largest
# part of the loading thread. A short key (at most SHORT_KEY bytes) here sits *in* its slot
# with its code, so finding it is one miss, and the misses of ~KAHEAD keys overlap.
#
# The IdMap stays the only owner of codes: a key not in the index (new, or longer than
# SHORT_KEY) is passed to ``IdMap.get_or_add`` in row order, and the short ones of those
# are then indexed with the codes it gave. So the codes are exactly the map's own.

cdef enum:
    SHORT_KEY = 11           # longest key kept inline: 8 + 3 bytes, with its length
    KRING = 64               # pipeline ring size (a power of two > KAHEAD)
    KAHEAD = 16              # keys packed, hashed and their slot prefetched ahead


cdef struct KeySlot:
    uint32_t code            # EMPTY_SLOT when the slot is free
    uint32_t hi              # the key packed by _pack (see there)
    uint64_t lo


cdef inline bint _pack(const uint8_t* p, int64_t ln, uint64_t* lo,
                       uint32_t* hi) noexcept nogil:
    """A key of at most SHORT_KEY bytes as two words, False for a longer one.

    `lo` holds the first 8 bytes (a shorter key's bytes, zero padded), `hi` bytes
    8..10 in its low 24 bits and the length in its top 8: every byte and the length
    appear once, so two keys are equal exactly when their words are. Fixed-size loads
    where the key has the bytes (no memcpy of a variable length: that was most of a
    probe's cost)."""
    cdef uint64_t a = 0
    cdef uint32_t b = 0
    if ln > SHORT_KEY:
        return False
    if ln >= 8:
        a = segd_rd64(p)
        if ln >= 9:
            b = p[8]
        if ln >= 10:
            b |= (<uint32_t>p[9]) << 8
        if ln == 11:
            b |= (<uint32_t>p[10]) << 16
    elif ln >= 4:
        a = segd_rd32(p)
        if ln >= 5:
            a |= (<uint64_t>p[4]) << 32
        if ln >= 6:
            a |= (<uint64_t>p[5]) << 40
        if ln == 7:
            a |= (<uint64_t>p[6]) << 48
    else:
        if ln >= 1:
            a = p[0]
        if ln >= 2:
            a |= (<uint64_t>p[1]) << 8
        if ln == 3:
            a |= (<uint64_t>p[2]) << 16
    lo[0] = a
    hi[0] = b | ((<uint32_t>ln) << 24)
    return True


cdef inline uint64_t _short_hash(uint64_t lo, uint32_t hi) noexcept nogil:
    """murmur3's fmix64 over both words: a probe's home slot from its packed key."""
    cdef uint64_t h = lo ^ ((<uint64_t>hi) * 0x9E3779B185EBCA87ULL)
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


cdef int _index_grow(KeySlot** table, uint64_t* mask, uint64_t capacity) noexcept nogil:
    """Rehash into `capacity` slots (a power of two); the home slot of a later key is
    prefetched so the random writes' misses overlap."""
    cdef KeySlot* fresh = <KeySlot*>malloc(<size_t>capacity * sizeof(KeySlot))
    cdef KeySlot* old = table[0]
    cdef uint64_t i, slot, m = capacity - 1, old_slots = mask[0] + 1
    if fresh == NULL:
        return ERR_NOMEM
    segd_advise_huge(fresh, <size_t>capacity * sizeof(KeySlot))
    memset(fresh, 0xFF, <size_t>capacity * sizeof(KeySlot))
    if old != NULL:
        for i in range(old_slots):
            if i + KAHEAD < old_slots and old[i + KAHEAD].code != EMPTY_SLOT:
                SEGD_PREFETCH(fresh + (_short_hash(old[i + KAHEAD].lo, old[i + KAHEAD].hi) & m))
            if old[i].code == EMPTY_SLOT:
                continue
            slot = _short_hash(old[i].lo, old[i].hi) & m
            while fresh[slot].code != EMPTY_SLOT:
                slot = (slot + 1) & m
            fresh[slot] = old[i]
        free(old)
    table[0] = fresh
    mask[0] = m
    return OK


cdef inline uint64_t _find(const KeySlot* table, uint64_t mask, uint64_t slot,
                           uint64_t lo, uint32_t hi) noexcept nogil:
    """The slot holding the key, or the empty slot ending its probe."""
    while table[slot].code != EMPTY_SLOT:
        if table[slot].lo == lo and table[slot].hi == hi:
            return slot
        slot = (slot + 1) & mask
    return slot


cdef int64_t _index_probe(const KeySlot* table, uint64_t mask,
                          const uint8_t* data, const offset_t* offs, int64_t n,
                          code_t* out, int64_t* longs) noexcept nogil:
    """out[i] = the indexed code of key i, or NO_CODE (not indexed, or long); the misses
    (`longs`: how many of them are long keys)."""
    cdef int64_t i, j, misses = 0, n_long = 0
    cdef uint64_t slot, lo
    cdef uint32_t hi
    cdef uint64_t ring_lo[KRING]
    cdef uint64_t ring_slot[KRING]
    cdef uint32_t ring_hi[KRING]
    cdef bint ring_short[KRING]
    for i in range(-KAHEAD, n):
        j = i + KAHEAD
        if 0 <= j < n:
            if _pack(data + offs[j], offs[j + 1] - offs[j], &lo, &hi):
                slot = _short_hash(lo, hi) & mask
                SEGD_PREFETCH(table + slot)
                ring_lo[j & (KRING - 1)] = lo
                ring_hi[j & (KRING - 1)] = hi
                ring_slot[j & (KRING - 1)] = slot
                ring_short[j & (KRING - 1)] = True
            else:
                ring_short[j & (KRING - 1)] = False
        if i < 0:
            continue
        out[i] = NO_CODE    # EMPTY_SLOT == NO_CODE: an empty slot's code says "not found"
        if ring_short[i & (KRING - 1)]:
            out[i] = table[_find(table, mask, ring_slot[i & (KRING - 1)],
                                 ring_lo[i & (KRING - 1)], ring_hi[i & (KRING - 1)])].code
        else:
            n_long += 1
        if out[i] == NO_CODE:
            misses += 1
    longs[0] += n_long
    return misses


cdef int64_t _index_insert(KeySlot* table, uint64_t mask,
                           const uint8_t* data, const offset_t* offs, int64_t n,
                           const code_t* codes) noexcept nogil:
    """Index each short key i with codes[i] (a key already there is left as it is);
    the keys added."""
    cdef int64_t i, j, added = 0
    cdef uint64_t slot, lo
    cdef uint32_t hi
    for i in range(n):
        j = i + KAHEAD
        if j < n and _pack(data + offs[j], offs[j + 1] - offs[j], &lo, &hi):
            SEGD_PREFETCH(table + (_short_hash(lo, hi) & mask))
        if not _pack(data + offs[i], offs[i + 1] - offs[i], &lo, &hi):
            continue
        slot = _find(table, mask, _short_hash(lo, hi) & mask, lo, hi)
        if table[slot].code == EMPTY_SLOT:
            table[slot].code = codes[i]
            table[slot].lo = lo
            table[slot].hi = hi
            added += 1
    return added


cdef class ShortKeyIndex:
    """``IdMap.get_or_add`` of one map, faster when most keys are short and known.

    Keys of at most 11 UTF-8 bytes seen before are answered from an open-addressing
    table holding the key inline with its code (one cache miss; the map's own probe
    takes three: slot, offset, bytes); every other key goes to ``ids.get_or_add``, in
    row order, and the short ones are then indexed with the code it returned. The codes
    are therefore exactly those of ``ids.get_or_add(strings)``, as long as every key
    added to `ids` while the index is in use comes through the index (a bulk load's
    staged customer and item maps). When most keys of a call are long (UUIDs, e-mail
    addresses), later calls go straight to ``ids.get_or_add``.

    The table is 16 bytes a slot, at most 3/4 full, and grows 4x at a time (each
    rehash touches every key: fewer of them); not thread safe (one thread at a time),
    not kept past the load.

    >>> ids = IdMap(); index = ShortKeyIndex(ids)
    >>> index.get_or_add(["b", "a", "b"]).tolist(), ids.get_or_add(["a", "c"]).tolist()
    ([0, 1, 0], [1, 2])
    """
    cdef readonly IdMap ids
    cdef KeySlot* table
    cdef uint64_t mask
    cdef int64_t n
    cdef readonly bint bypass    # most keys were long: calls go straight to `ids`
    cdef readonly bint reserve   # grow `ids` ahead, doubling (``IdMap.reserve``)

    def __cinit__(self, IdMap ids, int64_t capacity_hint=0, bint reserve=False):
        self.table = NULL
        self.mask = 0
        self.n = 0
        self.bypass = False
        self.reserve = reserve

    def __init__(self, IdMap ids, int64_t capacity_hint=0, bint reserve=False):
        """An empty index in front of `ids`; `capacity_hint` keys pre-size the table.
        `reserve`: before the new keys of a call go to ``ids.get_or_add``, room for them
        is reserved with ``ids.reserve`` (arrays grown at least 2x at a time: a bulk
        load's map then reallocates O(log n) times, not every few row groups)."""
        cdef uint64_t slots = 1024
        ids._check_ready()
        if capacity_hint < 0 or capacity_hint > MAX_CODES:
            raise ValueError(f"capacity_hint must be in [0, 2**31], got {capacity_hint}")
        self.ids = ids
        while slots * 3 < <uint64_t>capacity_hint * 4:
            slots <<= 1
        if self.table == NULL and _index_grow(&self.table, &self.mask, slots) != OK:
            raise MemoryError()

    def __dealloc__(self):
        free(self.table)

    def __len__(self):
        """Keys indexed."""
        return self.n

    def nbytes(self) -> int:
        """Bytes of the table."""
        return <int64_t>(self.mask + 1) * <int64_t>sizeof(KeySlot)

    cdef int _reserve(self, int64_t more) except -1:
        """Room for `more` keys at most 3/4 full (growing 4x at a time)."""
        cdef uint64_t slots = self.mask + 1
        cdef int rc
        while <uint64_t>(self.n + more) * 4 > slots * 3:
            slots <<= 2
        if slots != self.mask + 1:
            with nogil:
                rc = _index_grow(&self.table, &self.mask, slots)
            if rc != OK:
                raise MemoryError("ShortKeyIndex: out of memory")
        return 0

    cdef int _reserve_ids(self, missed) except -1:
        """``ids.reserve`` for every key of `missed` being new (an upper bound)."""
        cdef _Chunk ch
        cdef int64_t k = 0, nbytes = 0
        for ch in [_Chunk(c) for c in _string_chunks(missed)]:
            k += ch.n
            if ch.n == 0:
                continue
            if ch.large:
                nbytes += ch.off64[ch.n] - ch.off64[0]
            else:
                nbytes += ch.off32[ch.n] - ch.off32[0]
        self.ids.reserve(len(self.ids) + k, self.ids.st.data_len + nbytes)
        return 0

    def get_or_add(self, strings):
        """uint32 codes of `strings`, as ``self.ids.get_or_add(strings)`` gives them
        (a null raises its ``ValueError("null at position N")``, nothing added)."""
        if self.bypass:
            return self.ids.get_or_add(strings)
        if isinstance(strings, (list, tuple)):
            strings = pa.array(strings, type=pa.large_string())
        chunks = [_Chunk(c) for c in _string_chunks(strings)]
        cdef _Chunk ch
        cdef int64_t base = 0, misses = 0, longs = 0, added
        for ch in chunks:
            if ch.null_count > 0:
                return self.ids.get_or_add(strings)  # raises, naming the null
            base += ch.n
        out = np.empty(base, dtype=np.uint32)
        if base == 0:
            return out
        cdef code_t[::1] out_v = out
        base = 0
        for ch in chunks:
            if ch.n == 0:
                continue
            with nogil:
                if ch.large:
                    misses += _index_probe(self.table, self.mask, ch.data_ptr(),
                                           &ch.off64[0], ch.n, &out_v[base], &longs)
                else:
                    misses += _index_probe(self.table, self.mask, ch.data_ptr(),
                                           &ch.off32[0], ch.n, &out_v[base], &longs)
            base += ch.n
        if longs * 2 > base:
            self.bypass = True
        if misses == 0:
            return out
        rows = np.flatnonzero(out == <uint32_t>NO_CODE)
        missed = strings.take(pa.array(rows))
        if self.reserve:
            self._reserve_ids(missed)
        codes = self.ids.get_or_add(missed)
        out[rows] = codes
        if misses == longs:
            return out  # only long keys missed: nothing to index
        self._reserve(misses - longs)
        cdef const code_t[::1] codes_v = codes
        base = 0
        for ch in [_Chunk(c) for c in _string_chunks(missed)]:
            if ch.n == 0:
                continue
            with nogil:
                if ch.large:
                    added = _index_insert(self.table, self.mask, ch.data_ptr(),
                                          &ch.off64[0], ch.n, &codes_v[base])
                else:
                    added = _index_insert(self.table, self.mask, ch.data_ptr(),
                                          &ch.off32[0], ch.n, &codes_v[base])
            self.n += added
            base += ch.n
        return out
