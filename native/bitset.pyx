"""Dense bitsets (numpy uint64 words) <-> sorted cids <-> ``pyroaring.BitMap``.

The evaluator's kernels mark contacts in a dense bitset (bit i of ``words[i >> 6]`` is cid
i); plans combine ``pyroaring.BitMap``s. pyroaring ships no .pxd, so the bridge is its
*portable serialization* (RoaringFormatSpec), written or read here in nogil kernels:

    uint32 cookie = 12346 (SERIAL_COOKIE_NO_RUNCONTAINER), uint32 container count k
    k x (uint16 key = high 16 bits, uint16 cardinality - 1)
    k x uint32 byte offset of the container from the start of the stream
    k containers: cardinality <= 4096 -> array of sorted uint16 low bits,
                  else bitmap of 1024 uint64 words (bit j = low bits j)

A 65536-bit chunk of a dense bitset *is* a roaring bitmap container, so a dense chunk is one
memcpy. Everything is little-endian, like the host (checked at compile time).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np
from pyroaring import BitMap

from segd.native._types cimport cid_t, word_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #error "native/bitset.pyx writes roaring's little-endian format with native stores"
    #endif

    static inline int segd_ctz64(uint64_t x) {  /* x != 0 */
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int n = 0; while (!(x & 1)) { x >>= 1; n++; } return n;
    #endif
    }

    /* Bits set in w[0..n). Portable SWAR version (compilers vectorise it), and on x86 a
       POPCNT version picked at run time: the build has no -march, so __builtin_popcountll
       alone would be a libgcc call per word. */
    static int64_t segd_popcount_swar(const uint64_t *w, int64_t n) {
        int64_t total = 0;
        for (int64_t i = 0; i < n; i++) {
            uint64_t x = w[i];
            x = x - ((x >> 1) & 0x5555555555555555ULL);
            x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
            x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
            total += (int64_t)((x * 0x0101010101010101ULL) >> 56);
        }
        return total;
    }
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    __attribute__((target("popcnt")))
    static int64_t segd_popcount_hw(const uint64_t *w, int64_t n) {
        int64_t total = 0;
        for (int64_t i = 0; i < n; i++) total += __builtin_popcountll(w[i]);
        return total;
    }
    static int segd_has_popcnt = -1;  /* benign race: every thread stores the same value */
    static inline int64_t segd_popcount_words(const uint64_t *w, int64_t n) {
        if (segd_has_popcnt < 0) {
            __builtin_cpu_init();
            segd_has_popcnt = __builtin_cpu_supports("popcnt") ? 1 : 0;
        }
        return segd_has_popcnt ? segd_popcount_hw(w, n) : segd_popcount_swar(w, n);
    }
    #else
    static inline int64_t segd_popcount_words(const uint64_t *w, int64_t n) {
        return segd_popcount_swar(w, n);
    }
    #endif

    /* Write base + the index of every set bit of w[0..n) to out, ascending; returns how
       many. out needs EXTRACT_SLACK (2) slots past the count: the x86 version stores two
       positions per word whatever its bit count (tzcnt of 0 is 64, a slot the next word
       overwrites) and advances by the popcount, so the one-or-two-bits words of a sparse
       bitset take no branch (the bit loop's exit mispredicted on about every other word:
       0.53 ms instead of 1.25 for 156k words holding 194k bits). */
    static int64_t segd_extract_plain(const uint64_t *w, int64_t n, uint64_t base,
                                      uint32_t *out) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            uint64_t x = w[i];
            uint32_t b = (uint32_t)(base + ((uint64_t)i << 6));
            while (x) {
                out[m++] = b + (uint32_t)segd_ctz64(x);
                x &= x - 1;
            }
        }
        return m;
    }
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #include <immintrin.h>
    __attribute__((target("popcnt,bmi")))
    static int64_t segd_extract_hw(const uint64_t *w, int64_t n, uint64_t base,
                                   uint32_t *out) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            uint64_t x = w[i];
            uint32_t b = (uint32_t)(base + ((uint64_t)i << 6));
            int64_t c = __builtin_popcountll(x);
            out[m] = b + (uint32_t)_tzcnt_u64(x);
            x &= x - 1;
            out[m + 1] = b + (uint32_t)_tzcnt_u64(x);
            if (c > 2) {
                int64_t k = m + 2;
                x &= x - 1;
                while (x) {
                    out[k++] = b + (uint32_t)_tzcnt_u64(x);
                    x &= x - 1;
                }
            }
            m += c;
        }
        return m;
    }
    static int segd_has_bmi = -1;  /* benign race, as segd_has_popcnt */
    static inline int64_t segd_extract(const uint64_t *w, int64_t n, uint64_t base,
                                       uint32_t *out) {
        if (segd_has_bmi < 0) {
            __builtin_cpu_init();
            segd_has_bmi = (__builtin_cpu_supports("popcnt")
                            && __builtin_cpu_supports("bmi")) ? 1 : 0;
        }
        return segd_has_bmi ? segd_extract_hw(w, n, base, out)
                            : segd_extract_plain(w, n, base, out);
    }
    #else
    static inline int64_t segd_extract(const uint64_t *w, int64_t n, uint64_t base,
                                       uint32_t *out) {
        return segd_extract_plain(w, n, base, out);
    }
    #endif

    static inline void segd_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
    static inline void segd_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
    static inline uint16_t segd_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline uint32_t segd_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    """
    int segd_ctz64(uint64_t x) noexcept nogil
    int64_t segd_popcount_words(const uint64_t* w, int64_t n) noexcept nogil
    int64_t segd_extract(const uint64_t* w, int64_t n, uint64_t base,
                         uint32_t* out) noexcept nogil
    void segd_put16(uint8_t* p, uint16_t v) noexcept nogil
    void segd_put32(uint8_t* p, uint32_t v) noexcept nogil
    uint16_t segd_get16(const uint8_t* p) noexcept nogil
    uint32_t segd_get32(const uint8_t* p) noexcept nogil


cdef enum:
    CHUNK_WORDS = 1024             # words per roaring container (65536 bits)
    ARRAY_MAX = 4096               # largest cardinality stored as an array container
    BITMAP_BYTES = 8192            # bytes of a bitmap container
    COOKIE_NO_RUN = 12346          # SERIAL_COOKIE_NO_RUNCONTAINER
    COOKIE_RUN = 12347             # SERIAL_COOKIE (low 16 bits; high 16 = count - 1)
    NO_OFFSET_THRESHOLD = 4        # with COOKIE_RUN, offsets only from this many containers
    EXTRACT_SLACK = 2              # slots _extract may write past its count

cdef int64_t MAX_WORDS = 1 << 26   # 2^32 bits: every cid_t


# ================================================================================
# nogil kernels
# ================================================================================

cdef inline int64_t _container_bytes(int64_t card) noexcept nogil:
    return 2 * card if card <= ARRAY_MAX else BITMAP_BYTES


cdef int64_t _chunk_cards(const word_t* words, int64_t n_words,
                          uint32_t* cards,          # OUT one per 1024-word chunk
                          int64_t* n_containers     # OUT chunks with card > 0
                          ) noexcept nogil:
    """Cardinality of every 65536-bit chunk; returns the portable serialization's size."""
    cdef int64_t c, lo, hi, k = 0, size = 8
    for c in range((n_words + CHUNK_WORDS - 1) // CHUNK_WORDS):
        lo = c * CHUNK_WORDS
        hi = min(lo + CHUNK_WORDS, n_words)
        cards[c] = <uint32_t>segd_popcount_words(words + lo, hi - lo)
        if cards[c] > 0:
            k += 1
            size += 8 + _container_bytes(cards[c])   # descriptive + offset header + data
    n_containers[0] = k
    return size


cdef inline int64_t _extract(const word_t* words, int64_t n_words, uint64_t base,
                             uint32_t* out) noexcept nogil:
    """Write base + index of every set bit of words[0..n_words), ascending; returns count.
    `out` needs EXTRACT_SLACK slots past the count (``segd_extract``)."""
    return segd_extract(words, n_words, base, out)


cdef void _write_from_words(const word_t* words, int64_t n_words,
                            const uint32_t* cards, int64_t k,
                            uint8_t* out            # OUT the portable serialization
                            ) noexcept nogil:
    """Portable serialization of the bitset, given _chunk_cards' cardinalities."""
    cdef int64_t c, lo, hi, t = 0, m, j
    cdef int64_t pos = 8 + 8 * k                     # first container byte
    cdef uint32_t vals[ARRAY_MAX + EXTRACT_SLACK]
    segd_put32(out, COOKIE_NO_RUN)
    segd_put32(out + 4, <uint32_t>k)
    for c in range((n_words + CHUNK_WORDS - 1) // CHUNK_WORDS):
        if cards[c] == 0:
            continue
        lo = c * CHUNK_WORDS
        hi = min(lo + CHUNK_WORDS, n_words)
        segd_put16(out + 8 + 4 * t, <uint16_t>c)
        segd_put16(out + 10 + 4 * t, <uint16_t>(cards[c] - 1))
        segd_put32(out + 8 + 4 * k + 4 * t, <uint32_t>pos)
        if cards[c] > ARRAY_MAX:
            memcpy(out + pos, words + lo, <size_t>(hi - lo) * 8)
            if hi - lo < CHUNK_WORDS:                # last, partial chunk: zero the rest
                memset(out + pos + (hi - lo) * 8, 0, <size_t>(CHUNK_WORDS - (hi - lo)) * 8)
        else:
            m = _extract(words + lo, hi - lo, 0, vals)
            for j in range(m):
                segd_put16(out + pos + 2 * j, <uint16_t>vals[j])
        pos += _container_bytes(cards[c])
        t += 1


cdef int64_t _scan_cids(const cid_t* cids, int64_t n,
                        int64_t* n_containers       # OUT distinct high-16-bit keys
                        ) noexcept nogil:
    """Portable serialization size of strictly increasing cids; -(i + 1) if cids[i] <= cids[i-1]."""
    cdef int64_t i, start = 0, k = 0, size = 8
    for i in range(1, n + 1):
        if i < n and cids[i] <= cids[i - 1]:
            return -(i + 1)
        if i == n or (cids[i] >> 16) != (cids[start] >> 16):
            k += 1
            size += 8 + _container_bytes(i - start)
            start = i
    n_containers[0] = k
    return size


cdef void _write_from_cids(const cid_t* cids, int64_t n, int64_t k,
                           uint8_t* out             # OUT the portable serialization
                           ) noexcept nogil:
    """Portable serialization of strictly increasing cids (k containers, from _scan_cids)."""
    cdef int64_t i, i2, j, start = 0, t = 0, card
    cdef int64_t pos = 8 + 8 * k
    cdef uint64_t w
    cdef uint32_t low
    segd_put32(out, COOKIE_NO_RUN)
    segd_put32(out + 4, <uint32_t>k)
    for i in range(1, n + 1):
        if i < n and (cids[i] >> 16) == (cids[start] >> 16):
            continue
        card = i - start
        segd_put16(out + 8 + 4 * t, <uint16_t>(cids[start] >> 16))
        segd_put16(out + 10 + 4 * t, <uint16_t>(card - 1))
        segd_put32(out + 8 + 4 * k + 4 * t, <uint32_t>pos)
        if card > ARRAY_MAX:
            # Each word is built in a register and stored with memcpy: `out + pos` is only
            # 2-byte aligned (array containers before it have even sizes).
            memset(out + pos, 0, BITMAP_BYTES)
            w = 0
            j = -1
            for i2 in range(start, i):
                low = cids[i2] & 0xFFFF
                if <int64_t>(low >> 6) != j:
                    if j >= 0:
                        memcpy(out + pos + 8 * j, &w, 8)
                    j = low >> 6
                    w = 0
                w |= (<uint64_t>1) << (low & 63)
            memcpy(out + pos + 8 * j, &w, 8)
        else:
            for j in range(card):
                segd_put16(out + pos + 2 * j, <uint16_t>(cids[start + j] & 0xFFFF))
        pos += _container_bytes(card)
        t += 1
        start = i


cdef inline void _set_range(word_t* words, uint64_t first, uint64_t last) noexcept nogil:
    """Set bits first..last (inclusive) of words."""
    cdef uint64_t a = first >> 6, b = last >> 6, i
    cdef word_t lo_mask = (~(<word_t>0)) << (first & 63)
    cdef word_t hi_mask = (~(<word_t>0)) >> (63 - (last & 63))
    if a == b:
        words[a] |= lo_mask & hi_mask
        return
    words[a] |= lo_mask
    for i in range(a + 1, b):
        words[i] = ~(<word_t>0)
    words[b] |= hi_mask


cdef int _read_portable(const uint8_t* buf, int64_t size,
                        word_t* words, int64_t n_words   # INOUT zeroed, large enough
                        ) noexcept nogil:
    """OR a portable serialization (any cookie) into words; -1 if malformed or too big."""
    cdef uint32_t cookie, key, card, n_runs
    cdef int64_t k, i, j, pos, hdr, base, nw
    cdef bint has_runs = False
    cdef const uint8_t* run_flags = NULL
    cdef uint64_t start, length
    if size < 4:
        return -1
    cookie = segd_get32(buf)
    if cookie == COOKIE_NO_RUN:
        if size < 8:
            return -1
        k = segd_get32(buf + 4)
        hdr = 8
        pos = hdr + 8 * k                      # descriptive + offset headers
    elif (cookie & 0xFFFF) == COOKIE_RUN:
        k = (cookie >> 16) + 1
        has_runs = True
        run_flags = buf + 4
        hdr = 4 + (k + 7) // 8
        pos = hdr + 4 * k + (4 * k if k >= NO_OFFSET_THRESHOLD else 0)
    else:
        return -1
    if pos > size:
        return -1
    for i in range(k):
        key = segd_get16(buf + hdr + 4 * i)
        card = <uint32_t>segd_get16(buf + hdr + 4 * i + 2) + 1
        base = <int64_t>key * CHUNK_WORDS
        if has_runs and (run_flags[i >> 3] >> (i & 7)) & 1:
            if pos + 2 > size:
                return -1
            n_runs = segd_get16(buf + pos)
            pos += 2
            if pos + 4 * <int64_t>n_runs > size:
                return -1
            for j in range(n_runs):
                start = (<uint64_t>key << 16) + segd_get16(buf + pos + 4 * j)
                length = segd_get16(buf + pos + 4 * j + 2)
                if <int64_t>((start + length) >> 6) >= n_words:
                    return -1
                _set_range(words, start, start + length)
            pos += 4 * <int64_t>n_runs
        elif card > ARRAY_MAX:
            if pos + BITMAP_BYTES > size or base >= n_words:
                return -1
            nw = min(<int64_t>CHUNK_WORDS, n_words - base)
            # Bits past n_words must be zero; the caller checked the bitmap's max.
            memcpy(words + base, buf + pos, <size_t>nw * 8)
            pos += BITMAP_BYTES
        else:
            if pos + 2 * <int64_t>card > size:
                return -1
            for j in range(card):
                start = (<uint64_t>key << 16) + segd_get16(buf + pos + 2 * j)
                if <int64_t>(start >> 6) >= n_words:
                    return -1
                words[start >> 6] |= (<word_t>1) << (start & 63)
            pos += 2 * <int64_t>card
    return 0


cdef uint64_t _max_cid(const cid_t* cids, int64_t n) noexcept nogil:
    cdef int64_t i
    cdef cid_t m = 0
    for i in range(n):
        if cids[i] > m:
            m = cids[i]
    return m


# ================================================================================
# Python API
# ================================================================================

def words_for(int64_t n_bits):
    """Zeroed bitset able to hold cids 0..n_bits-1 (uint64 array of ceil(n_bits / 64))."""
    if n_bits < 0 or n_bits > (<int64_t>1 << 32):
        raise ValueError(f"n_bits must be in [0, 2**32], got {n_bits}")
    return np.zeros((n_bits + 63) >> 6, dtype=np.uint64)


def popcount(const word_t[::1] words):
    """Number of set bits (contacts) in the bitset."""
    cdef int64_t total = 0
    if words.shape[0] == 0:
        return 0
    with nogil:
        total = segd_popcount_words(&words[0], words.shape[0])
    return total


def bitset_to_cids(const word_t[::1] words):
    """Sorted uint32 array of the cids set in the bitset."""
    cdef int64_t nw = words.shape[0], total = 0
    if nw > MAX_WORDS:
        raise ValueError(f"bitset of {nw} words exceeds 2**26 (cids are uint32)")
    if nw == 0:
        return np.empty(0, dtype=np.uint32)
    with nogil:
        total = segd_popcount_words(&words[0], nw)
    out = np.empty(total + EXTRACT_SLACK, dtype=np.uint32)
    cdef cid_t[::1] out_v = out
    if total > 0:
        with nogil:
            _extract(&words[0], nw, 0, &out_v[0])
    return out[:total]


def bitset_to_bitmap(const word_t[::1] words):
    """pyroaring.BitMap of the cids set in the bitset (read-only `words` is fine).

    >>> w = words_for(200); set_cids(w, np.array([3, 150], dtype=np.uint32))
    >>> bitset_to_bitmap(w)
    BitMap([3, 150])
    """
    cdef int64_t nw = words.shape[0], size, k = 0
    if nw > MAX_WORDS:
        raise ValueError(f"bitset of {nw} words exceeds 2**26 (cids are uint32)")
    if nw == 0:
        return BitMap()
    cards = np.empty((nw + CHUNK_WORDS - 1) // CHUNK_WORDS, dtype=np.uint32)
    cdef uint32_t[::1] cards_v = cards
    with nogil:
        size = _chunk_cards(&words[0], nw, &cards_v[0], &k)
    if k == 0:
        return BitMap()
    # A fresh bytes object is private until returned, so filling it in place is safe.
    buf = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(buf)
    with nogil:
        _write_from_words(&words[0], nw, &cards_v[0], k, p)
    return BitMap.deserialize(buf)


def cids_to_bitmap(const cid_t[::1] cids):
    """pyroaring.BitMap of strictly increasing uint32 `cids` (ValueError otherwise).

    >>> cids_to_bitmap(np.array([1, 70000], dtype=np.uint32))
    BitMap([1, 70000])
    """
    cdef int64_t n = cids.shape[0], size, k = 0, i
    if n == 0:
        return BitMap()
    with nogil:
        size = _scan_cids(&cids[0], n, &k)
    if size < 0:
        i = -size - 1
        raise ValueError(
            f"cids not strictly increasing at position {i}: {cids[i - 1]} then {cids[i]}"
        )
    buf = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(buf)
    with nogil:
        _write_from_cids(&cids[0], n, k, p)
    return BitMap.deserialize(buf)


def distinct_to_bitmap(const cid_t[::1] cids, word_t[::1] scratch):
    """pyroaring.BitMap of the distinct values of `cids` (uint32, any order, repeats
    allowed), by setting their bits in `scratch` and serializing the chunks that hold
    any (no sort): the first leaf of the reference segment turns 196k contacts of its
    rows into 118k distinct ones.

    `scratch` is a bitset of at least max(cids) + 1 bits that is all zero on entry; it
    is all zero again on return (the chunks that got bits are cleared), so one scratch
    serves every call of a thread. ValueError (scratch untouched) when a cid does not
    fit in it.

    >>> s = words_for(1 << 20)
    >>> distinct_to_bitmap(np.array([70000, 3, 70000], dtype=np.uint32), s)
    BitMap([3, 70000])
    """
    cdef int64_t n = cids.shape[0], nw, i, c, size = 0, k = 0, n_chunks
    cdef uint64_t mx
    if n == 0:
        return BitMap()
    with nogil:
        mx = _max_cid(&cids[0], n)
    if <int64_t>(mx >> 6) >= scratch.shape[0]:
        raise ValueError(f"cid {mx} >= n_bits {scratch.shape[0] * 64} of the scratch")
    nw = <int64_t>(mx >> 6) + 1          # words past the largest cid hold no bit
    n_chunks = (nw + CHUNK_WORDS - 1) // CHUNK_WORDS
    cards = np.empty(n_chunks, dtype=np.uint32)
    cdef uint32_t[::1] cards_v = cards
    cdef word_t* w = &scratch[0]
    cdef uint8_t* p
    try:
        with nogil:
            for i in range(n):
                bit_set(w, cids[i])
            size = _chunk_cards(w, nw, &cards_v[0], &k)
        # A fresh bytes object is private until returned, so filling it in place is safe.
        buf = PyBytes_FromStringAndSize(NULL, size)
        p = <uint8_t*>PyBytes_AS_STRING(buf)
        with nogil:
            _write_from_words(w, nw, &cards_v[0], k, p)
    finally:
        with nogil:
            for c in range(n_chunks):   # zero again (every chunk if counting failed)
                if size == 0 or cards_v[c] > 0:
                    memset(w + c * CHUNK_WORDS, 0,
                           <size_t>(min(nw, (c + 1) * CHUNK_WORDS) - c * CHUNK_WORDS) * 8)
    return BitMap.deserialize(buf)


def bitmap_to_bitset(bm, int64_t n_bits):
    """Bitset of n_bits holding the cids of `bm` (a BitMap or FrozenBitMap).

    Reads bm.serialize() in a nogil kernel (bitmap containers are one memcpy). ValueError
    if bm holds a cid >= n_bits.
    """
    words = words_for(n_bits)
    if len(bm) == 0:
        return words
    if bm.max() >= n_bits:
        raise ValueError(f"bitmap holds cid {bm.max()} >= n_bits {n_bits}")
    cdef bytes buf = bm.serialize()
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf)
    cdef int64_t size = len(buf)
    cdef word_t[::1] w = words
    cdef int rc
    with nogil:
        rc = _read_portable(p, size, &w[0], w.shape[0])
    if rc != 0:
        raise ValueError("unreadable roaring serialization")
    return words


def set_cids(word_t[::1] words, const cid_t[::1] cids):
    """Add `cids` (any order, uint32) to the bitset `words` (INOUT); ValueError if out of range.

    Nothing is set when a cid is out of range.
    """
    cdef int64_t n = cids.shape[0], i
    cdef uint64_t mx
    if n == 0:
        return
    with nogil:
        mx = _max_cid(&cids[0], n)
    if <int64_t>(mx >> 6) >= words.shape[0]:
        raise ValueError(f"cid {mx} >= n_bits {words.shape[0] * 64}")
    cdef word_t* w = &words[0]
    with nogil:
        for i in range(n):
            bit_set(w, cids[i])


def clear_cids(word_t[::1] words, const cid_t[::1] cids):
    """Remove `cids` (any order, uint32) from the bitset `words` (INOUT); as set_cids."""
    cdef int64_t n = cids.shape[0], i
    cdef uint64_t mx
    if n == 0:
        return
    with nogil:
        mx = _max_cid(&cids[0], n)
    if <int64_t>(mx >> 6) >= words.shape[0]:
        raise ValueError(f"cid {mx} >= n_bits {words.shape[0] * 64}")
    cdef word_t* w = &words[0]
    with nogil:
        for i in range(n):
            bit_clear(w, cids[i])
