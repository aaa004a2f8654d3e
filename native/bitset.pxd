# Dense bitsets over contact ids: a numpy uint64 array `words`, bit i of words[i >> 6] is cid
# i (n_bits = 64 * len(words)). Inline kernels for other .pyx files (`from native.bitset
# cimport bit_set`); bounds are the caller's job: i < 64 * len(words), checked before nogil.
from segd.native._types cimport cid_t, word_t


cdef inline void bit_set(word_t* w, cid_t i) noexcept nogil:
    """Add cid i to the bitset w (INOUT)."""
    w[i >> 6] |= (<word_t>1) << (i & 63)


cdef inline void bit_clear(word_t* w, cid_t i) noexcept nogil:
    """Remove cid i from the bitset w (INOUT)."""
    w[i >> 6] &= ~((<word_t>1) << (i & 63))


cdef inline bint bit_test(const word_t* w, cid_t i) noexcept nogil:
    """True if cid i is in the bitset w."""
    return (w[i >> 6] >> (i & 63)) & 1
