"""Normalise and SHA-256 contact addresses in bulk: the retargeting export's kernel.

``hash_addresses`` takes an Arrow text column of emails or phones and, per row, applies
exactly the rules of ``segd.normalize`` (``normalize_email``: trim, lower-case, one ``@``
with text on both sides, no whitespace; ``normalize_phone``: E.164 digits) and hashes the
normalised bytes with SHA-256 (FIPS 180-4, written out below: no OpenSSL headers are
needed to build). It runs without the GIL over the Arrow buffers.

The kernel handles ASCII values. A row holding any non-ASCII byte (or longer than
``MAX_ADDRESS_BYTES``) is given back as ``NEEDS_PYTHON``: Unicode whitespace and
case rules are Python's to apply, and the caller runs ``segd.normalize`` on those rows, so
the result is the same as the Python functions for every input (tested against them).
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

cdef enum:
    # Row status.
    ST_NO_VALUE = 0  # NULL or not an address (normalises to None)
    ST_HASHED = 1  # the digest row holds SHA-256 of the normalised value
    ST_NEEDS_PYTHON = 2  # non-ASCII or very long: normalise and hash in Python
    K_EMAIL = 0
    K_PHONE = 1
    MAX_BYTES = 240

NO_VALUE = ST_NO_VALUE
HASHED = ST_HASHED
NEEDS_PYTHON = ST_NEEDS_PYTHON
EMAIL = K_EMAIL
PHONE = K_PHONE
MAX_ADDRESS_BYTES = MAX_BYTES

cdef uint32_t K[64]
_K = (
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
)
for _i in range(64):
    K[_i] = _K[_i]

cdef uint32_t H0[8]
_H0 = (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
       0x1f83d9ab, 0x5be0cd19)
for _i in range(8):
    H0[_i] = _H0[_i]


cdef inline uint32_t _rotr(uint32_t x, int n) noexcept nogil:
    return (x >> n) | (x << (32 - n))


cdef void _block(uint32_t* h, const uint8_t* p) noexcept nogil:
    cdef uint32_t w[64]
    cdef uint32_t a, b, c, d, e, f, g, hh, t1, t2, s0, s1
    cdef int i
    for i in range(16):
        w[i] = ((<uint32_t>p[4 * i] << 24) | (<uint32_t>p[4 * i + 1] << 16)
                | (<uint32_t>p[4 * i + 2] << 8) | <uint32_t>p[4 * i + 3])
    for i in range(16, 64):
        s0 = _rotr(w[i - 15], 7) ^ _rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
        s1 = _rotr(w[i - 2], 17) ^ _rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
        w[i] = w[i - 16] + s0 + w[i - 7] + s1
    a, b, c, d, e, f, g, hh = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    for i in range(64):
        s1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        t1 = hh + s1 + ((e & f) ^ ((~e) & g)) + K[i] + w[i]
        s0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        t2 = s0 + ((a & b) ^ (a & c) ^ (b & c))
        hh, g, f, e = g, f, e, d + t1
        d, c, b, a = c, b, a, t1 + t2
    h[0] += a
    h[1] += b
    h[2] += c
    h[3] += d
    h[4] += e
    h[5] += f
    h[6] += g
    h[7] += hh


cdef void _sha256(const uint8_t* msg, int64_t n, uint8_t* out) noexcept nogil:
    cdef uint32_t h[8]
    cdef uint8_t tail[128]
    cdef int64_t i, full = n - n % 64, rest = n % 64, pad
    cdef uint64_t bits = <uint64_t>n * 8
    for i in range(8):
        h[i] = H0[i]
    for i in range(0, full, 64):
        _block(h, msg + i)
    for i in range(rest):
        tail[i] = msg[full + i]
    tail[rest] = 0x80
    pad = 64 if rest < 56 else 128
    for i in range(rest + 1, pad - 8):
        tail[i] = 0
    for i in range(8):
        tail[pad - 1 - i] = <uint8_t>(bits >> (8 * i))
    _block(h, tail)
    if pad == 128:
        _block(h, tail + 64)
    for i in range(8):
        out[4 * i] = <uint8_t>(h[i] >> 24)
        out[4 * i + 1] = <uint8_t>(h[i] >> 16)
        out[4 * i + 2] = <uint8_t>(h[i] >> 8)
        out[4 * i + 3] = <uint8_t>h[i]


cdef inline bint _space(uint8_t c) noexcept nogil:
    """Python's str.isspace() on an ASCII character (\\x1c-\\x1f included)."""
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


cdef int64_t _email(const uint8_t* s, int64_t n, uint8_t* out) noexcept nogil:
    """normalize_email on ASCII: the normalised length in ``out``, or -1 (None)."""
    cdef int64_t lo = 0, hi = n, i, at = -1, m = 0
    cdef uint8_t c
    while lo < hi and _space(s[lo]):
        lo += 1
    while hi > lo and _space(s[hi - 1]):
        hi -= 1
    for i in range(lo, hi):
        c = s[i]
        if _space(c):
            return -1
        if c == 64:  # @
            if at >= 0:
                return -1  # a second @ is in the domain
            at = m
        if 65 <= c <= 90:
            c = c + 32
        out[m] = c
        m += 1
    if at <= 0 or at == m - 1:
        return -1  # no @, or nothing before / after it
    return m


cdef int64_t _phone(const uint8_t* s, int64_t n, const uint8_t* cc, int64_t ncc,
                    uint8_t* out) noexcept nogil:
    """normalize_phone on ASCII: the E.164 digits' length in ``out``, or -1 (None)."""
    cdef int64_t lo = 0, hi = n, i, m = 0, start = 0, k
    cdef uint8_t c
    cdef uint8_t digits[256]
    while lo < hi and _space(s[lo]):
        lo += 1
    while hi > lo and _space(s[hi - 1]):
        hi -= 1
    if lo == hi:
        return -1
    for i in range(lo, hi):
        c = s[i]
        if c == 43:  # +
            if i != lo:
                return -1
        elif 48 <= c <= 57:
            digits[m] = c
            m += 1
        elif not (c == 32 or c == 40 or c == 41 or c == 45 or c == 46):  # space ( ) - .
            return -1
    k = 0
    if s[lo] == 43:
        pass
    elif m >= 2 and digits[0] == 48 and digits[1] == 48:
        start = 2
    elif m == 11 and digits[0] == 56 and ncc == 1 and cc[0] == 55:  # 8... with +7
        digits[0] = 55
    elif m == 10:
        for i in range(ncc):
            out[k] = cc[i]
            k += 1
    for i in range(start, m):
        out[k] = digits[i]
        k += 1
    if k < 8 or k > 15 or out[0] == 48:
        return -1
    return k


cdef void _hash_rows(const uint8_t* data, const int64_t* offsets, const uint8_t* valid,
                     int64_t n, int kind, const uint8_t* cc, int64_t ncc,
                     uint8_t* status, uint8_t* digests) noexcept nogil:
    cdef int64_t r, i, lo, ln, m
    cdef uint8_t buf[272]
    cdef bint ascii
    for r in range(n):
        status[r] = ST_NO_VALUE
        if not valid[r]:
            continue
        lo = offsets[r]
        ln = offsets[r + 1] - lo
        if ln > MAX_BYTES:
            status[r] = ST_NEEDS_PYTHON
            continue
        ascii = True
        for i in range(ln):
            if data[lo + i] >= 128:
                ascii = False
                break
        if not ascii:
            status[r] = ST_NEEDS_PYTHON
            continue
        if kind == K_EMAIL:
            m = _email(data + lo, ln, buf)
        else:
            m = _phone(data + lo, ln, cc, ncc, buf)
        if m < 0:
            continue
        _sha256(buf, m, digests + 32 * r)
        status[r] = ST_HASHED


def sha256_many(values):
    """SHA-256 of each bytes object (for tests of the digest itself)."""
    out = []
    cdef bytes b
    cdef uint8_t digest[32]
    for v in values:
        b = bytes(v)
        _sha256(<const uint8_t*>b if len(b) else <const uint8_t*>b"", len(b), digest)
        out.append(bytes(digest[:32]))
    return out


def hash_addresses(strings, int kind, str default_country="7"):
    """(status uint8[n], digests uint8[n, 32]) for an Arrow text array (string or
    large_string, not chunked) of emails (``kind`` EMAIL) or phones (PHONE).

    status: NO_VALUE (NULL or no address), HASHED (the digest row is set) or
    NEEDS_PYTHON (non-ASCII or over MAX_ADDRESS_BYTES: use segd.normalize)."""
    if kind not in (EMAIL, PHONE):
        raise ValueError(f"kind must be EMAIL (0) or PHONE (1), got {kind}")
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if pa.types.is_string(strings.type):
        strings = strings.cast(pa.large_string())
    if not pa.types.is_large_string(strings.type):
        raise TypeError(f"expected an Arrow string array, got {strings.type}")
    cdef int64_t n = len(strings)
    status = np.zeros(n, dtype=np.uint8)
    digests = np.zeros((n, 32), dtype=np.uint8)
    if n == 0:
        return status, digests
    bufs = strings.buffers()
    offsets = np.ascontiguousarray(
        np.frombuffer(bufs[1], dtype=np.int64)[strings.offset : strings.offset + n + 1]
    )
    data = (
        np.frombuffer(bufs[2], dtype=np.uint8)
        if bufs[2] is not None and bufs[2].size
        else np.zeros(1, dtype=np.uint8)
    )
    valid = np.ascontiguousarray(pc.is_valid(strings).to_numpy(zero_copy_only=False),
                                 dtype=np.uint8)
    cc_bytes = default_country.encode("ascii")
    cc = np.frombuffer(cc_bytes + b"\0", dtype=np.uint8)
    cdef const uint8_t[::1] data_v = data
    cdef const int64_t[::1] off_v = offsets
    cdef const uint8_t[::1] valid_v = valid
    cdef const uint8_t[::1] cc_v = cc
    cdef uint8_t[::1] status_v = status
    cdef uint8_t[:, ::1] dig_v = digests
    cdef int64_t ncc = len(cc_bytes)
    if ncc > 3 or not default_country.isdigit():
        raise ValueError(f"default_country must be 1-3 digits, got {default_country!r}")
    with nogil:
        _hash_rows(&data_v[0], &off_v[0], &valid_v[0], n, kind, &cc_v[0], ncc,
                   &status_v[0], &dig_v[0, 0])
    return status, digests
