# The slot table of a contact-major index (contactindex.pyx): where each contact's rows
# lie in the index's `rows`, in ~1.3 bytes per contact instead of a uint32 offset (4 B).
#
# A log's contact-major index needs a slot per contact whatever the log's size: with a
# plain uint32[n_contacts + 1] offsets array, ten event types cost 40 B per contact, more
# than the rows of the small logs themselves (issue 15's index budget is 12 B per event).
# Here contacts go in blocks of SLOT_BLOCK = 32:
#
# - ``counts`` (uint8 per contact, padded to whole blocks): the rows of each contact of a
#   "narrow" block; a contact's start is its block's start plus the counts before it in
#   the block (one SSE2 masked byte sum of the block's 32 bytes, which share a cache line),
#   its end is its start plus its count.
# - ``blocks`` (uint64 per block): the low 32 bits are the block's first row position; the
#   high 32 bits are 0 for a narrow block, else 1 + the block's number in ``wide``.
# - ``wide`` (uint32, 64 per wide block: 32 starts, then 32 ends): the slots of a block
#   with a contact of SLOT_NARROW_MAX + 1 rows or more (~3% of the view log's blocks at
#   the bench's mix) and of blocks an identity merge patched (a survivor's slot is moved
#   to the end of `rows`, so its rows no longer follow its block's order).
#
# Readers call `slot_span` (nogil, c < s.n checked by the caller); `Slots` (the Python
# object owning the arrays) builds, patches and validates the table.
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* Sum of block[0 .. i) for i in [0, 32): the counts before a contact in its block. */
    static inline uint32_t segd_slot_prefix(const uint8_t* block, unsigned i) {
    #if defined(__SSE2__)
        const __m128i idx0 = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7,
                                           8, 9, 10, 11, 12, 13, 14, 15);
        const __m128i idx1 = _mm_setr_epi8(16, 17, 18, 19, 20, 21, 22, 23,
                                           24, 25, 26, 27, 28, 29, 30, 31);
        const __m128i lim = _mm_set1_epi8((char)i);
        const __m128i zero = _mm_setzero_si128();
        __m128i lo = _mm_and_si128(_mm_loadu_si128((const __m128i*)block),
                                   _mm_cmplt_epi8(idx0, lim));
        __m128i hi = _mm_and_si128(_mm_loadu_si128((const __m128i*)(block + 16)),
                                   _mm_cmplt_epi8(idx1, lim));
        __m128i s = _mm_add_epi64(_mm_sad_epu8(lo, zero), _mm_sad_epu8(hi, zero));
        return (uint32_t)_mm_cvtsi128_si32(s)
               + (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(s, 8));
    #else
        uint32_t s = 0;
        for (unsigned k = 0; k < i; k++) s += block[k];
        return s;
    #endif
    }
    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_SLOT_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define SEGD_SLOT_PREFETCH(p) ((void)(p))
    #endif
    """
    uint32_t segd_slot_prefix(const uint8_t* block, unsigned i) noexcept nogil
    void SEGD_SLOT_PREFETCH(const void* p) noexcept nogil


cdef enum:
    SLOT_SHIFT = 5
    SLOT_BLOCK = 32            # contacts per block (1 << SLOT_SHIFT)
    SLOT_NARROW_MAX = 254      # a block whose contacts all have <= this many rows is narrow


ctypedef struct SlotsC:
    Py_ssize_t n               # contacts covered (ids >= n are newer than the index)
    const uint64_t* blocks     # per block: first row position | (1 + wide number) << 32
    const uint8_t* counts      # per contact, padded to whole blocks: rows (narrow blocks)
    const uint32_t* wide       # per wide block: 32 starts, then 32 ends


cdef inline void slot_span(const SlotsC* s, Py_ssize_t c, Py_ssize_t* a,
                           Py_ssize_t* b) noexcept nogil:
    """Contact c's slot [a, b) of the index's rows; 0 <= c < s.n (the caller's check)."""
    cdef uint64_t w = s.blocks[c >> SLOT_SHIFT]
    cdef uint32_t tag = <uint32_t> (w >> 32)
    cdef const uint32_t* wb
    cdef Py_ssize_t first
    if tag:
        wb = s.wide + (<Py_ssize_t> (tag - 1)) * (2 * SLOT_BLOCK)
        a[0] = wb[c & (SLOT_BLOCK - 1)]
        b[0] = wb[SLOT_BLOCK + (c & (SLOT_BLOCK - 1))]
    else:
        first = c & ~(<Py_ssize_t> (SLOT_BLOCK - 1))
        a[0] = <Py_ssize_t> (<uint32_t> w) + segd_slot_prefix(
            s.counts + first, <unsigned> (c - first))
        b[0] = a[0] + s.counts[c]


cdef inline void slot_prefetch(const SlotsC* s, Py_ssize_t c) noexcept nogil:
    """Prefetch what `slot_span` of contact c reads first (its block word and counts);
    0 <= c < s.n."""
    SEGD_SLOT_PREFETCH(&s.blocks[c >> SLOT_SHIFT])
    SEGD_SLOT_PREFETCH(&s.counts[c])


cdef class Slots:
    cdef SlotsC s
    cdef object _blocks        # numpy uint64[n_blocks]
    cdef object _counts        # numpy uint8[32 * n_blocks]
    cdef object _wide          # numpy uint32[64 * capacity], grown by merges
    cdef Py_ssize_t n_wide     # wide blocks in use
    cdef int set_slot(self, Py_ssize_t c, uint32_t a, uint32_t b) except -1
    cdef Py_ssize_t _widen(self, Py_ssize_t block) except -1
