"""Decoding kernels for dictionary-encoded Parquet text columns (``segd.pqdict``).

Arrow's Parquet reader turns a dictionary-encoded text column into an Arrow dictionary array
by inserting every entry of each column chunk's dictionary page into a hash table of its
own (``BinaryMemoTable``): at 10M contacts a 1M-row row group holds ~600k distinct customer
ids, and that re-hash was 57% of reading the column. segd hashes the values once more anyway
(into the load's id map), so ``segd.pqdict`` reads such a column chunk itself and builds
the dictionary array straight from the pages, with these two kernels:

- ``plain_byte_array``: a PLAIN BYTE_ARRAY page (4-byte little-endian length, then the
  bytes, per value: the dictionary page) into Arrow string buffers (offsets, data);
- ``rle_hybrid``: the RLE / bit-packed hybrid runs of the dictionary indices and of the
  definition levels (which rows are NULL) into int32 values.

Both validate as they go (a run or a length past the end of the page, a bit width above
32) and return an error instead of reading outside the buffer: the caller then falls back
to Arrow's reader, which names the problem.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np


cdef enum:
    ERR_TRUNCATED = -1   # a length or a run reaches past the end of the buffer
    ERR_WIDTH = -2       # a bit width outside 0..32
    ERR_TOO_LONG = -3    # the strings would not fit int32 Arrow offsets


cdef int64_t _plain_byte_array(const uint8_t* page, int64_t size, int64_t n,
                               int32_t* offsets,    # OUT n + 1
                               uint8_t* data        # OUT room for `size` + 16 bytes
                               ) noexcept nogil:
    """Bytes consumed of `page` for n PLAIN BYTE_ARRAY values, or an ERR_* code."""
    cdef int64_t pos = 0, i, total = 0
    cdef uint32_t ln
    offsets[0] = 0
    for i in range(n):
        if pos + 4 > size:
            return ERR_TRUNCATED
        ln = (<uint32_t>page[pos] | (<uint32_t>page[pos + 1] << 8)
              | (<uint32_t>page[pos + 2] << 16) | (<uint32_t>page[pos + 3] << 24))
        pos += 4
        if <int64_t>ln > size - pos:
            return ERR_TRUNCATED
        if total + ln > 2147483647:
            return ERR_TOO_LONG
        if ln <= 16 and pos + 16 <= size:
            # A fixed-size copy (two 8-byte moves) instead of a memcpy call of a
            # variable length: ids are short. The bytes past ln are overwritten by the
            # next value (`data` has 16 bytes of slack past the page's size).
            memcpy(data + total, page + pos, 16)
        elif ln > 0:
            memcpy(data + total, page + pos, ln)
        pos += ln
        total += ln
        offsets[i + 1] = <int32_t>total
    return pos


cdef int64_t _rle_hybrid(const uint8_t* buf, int64_t size, int bit_width, int64_t n,
                         int32_t* out         # OUT n values
                         ) noexcept nogil:
    """Bytes consumed of `buf` decoding n values of the RLE / bit-packed hybrid
    encoding (Parquet's Encodings.md), or an ERR_* code. A bit-packed run may hold more
    values than are asked for (runs come in groups of 8): the extra ones are skipped."""
    cdef int64_t pos = 0, k = 0, count, take, j, nbytes, bit, byte, b
    cdef uint64_t header, window
    cdef int shift, value_bytes
    cdef uint32_t value, mask
    if bit_width < 0 or bit_width > 32:
        return ERR_WIDTH
    mask = <uint32_t>((<uint64_t>1 << bit_width) - 1)
    value_bytes = (bit_width + 7) // 8
    while k < n:
        # ULEB128 run header
        header = 0
        shift = 0
        while True:
            if pos >= size or shift > 63:
                return ERR_TRUNCATED
            header |= <uint64_t>(buf[pos] & 0x7F) << shift
            pos += 1
            if not buf[pos - 1] & 0x80:
                break
            shift += 7
        if header & 1:
            # bit-packed: (header >> 1) groups of 8 values, bit_width bytes per group
            count = <int64_t>(header >> 1) * 8
            nbytes = <int64_t>(header >> 1) * bit_width
            take = count if count < n - k else n - k
            # A writer may end the last run early: only the bytes of the values taken
            # must be there.
            if (take * bit_width + 7) // 8 > size - pos:
                return ERR_TRUNCATED
            if nbytes > size - pos:
                nbytes = size - pos
            if bit_width == 0:
                for j in range(take):
                    out[k + j] = 0
            else:
                for j in range(take):
                    bit = j * bit_width
                    byte = bit >> 3
                    window = 0
                    # up to 5 bytes hold the value (bit_width <= 32, shift <= 7)
                    for b in range(5):
                        if byte + b >= nbytes:
                            break
                        window |= <uint64_t>buf[pos + byte + b] << (8 * b)
                    out[k + j] = <int32_t>((window >> (bit & 7)) & mask)
            pos += nbytes
            k += take
        else:
            count = <int64_t>(header >> 1)
            if value_bytes > size - pos:
                return ERR_TRUNCATED
            value = 0
            for b in range(value_bytes):
                value |= <uint32_t>buf[pos + b] << (8 * b)
            pos += value_bytes
            take = count if count < n - k else n - k
            for j in range(take):
                out[k + j] = <int32_t>value
            k += take
            if count == 0:
                return ERR_TRUNCATED   # a zero-length run would never end the loop
    return pos


def plain_byte_array(const uint8_t[::1] page, int64_t n):
    """(offsets int32[n + 1], data uint8[...], bytes consumed) of n PLAIN BYTE_ARRAY
    values at the start of `page`. ValueError when the page is shorter than its values
    say, or the strings exceed 2 GiB (int32 offsets)."""
    cdef int64_t size = page.shape[0], used
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    offsets = np.empty(n + 1, dtype=np.int32)
    # Room for the whole page: a page too short for its n values is found only part
    # way through, after its first values were copied (their bytes are < the page's).
    # (+ 16: the fixed-size copies of short values may write up to 16 bytes past one.)
    data = np.empty(size + 16, dtype=np.uint8)
    cdef int32_t[::1] off_v = offsets
    cdef uint8_t[::1] data_v = data
    cdef const uint8_t* p = &page[0] if size > 0 else NULL
    if n > 0 and size < 4 * n:
        raise ValueError(f"page of {size} bytes cannot hold {n} PLAIN BYTE_ARRAY values")
    with nogil:
        used = _plain_byte_array(p, size, n, &off_v[0], &data_v[0])
    if used == ERR_TOO_LONG:
        raise ValueError("strings exceed 2 GiB (int32 offsets)")
    if used < 0:
        raise ValueError(f"page of {size} bytes ends inside its {n} PLAIN BYTE_ARRAY values")
    return offsets, data[:off_v[n]], used


def rle_hybrid(const uint8_t[::1] buf, int bit_width, int64_t n):
    """(values int32[n], bytes consumed) of the RLE / bit-packed hybrid encoding at the
    start of `buf`. ValueError when a run reaches past the end of `buf` or bit_width is
    outside 0..32."""
    cdef int64_t size = buf.shape[0], used
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.empty(max(n, 1), dtype=np.int32)
    cdef int32_t[::1] out_v = out
    cdef const uint8_t* p = &buf[0] if size > 0 else NULL
    if n == 0:
        return out[:0], 0
    if size == 0:
        raise ValueError(f"empty buffer for {n} RLE / bit-packed values")
    with nogil:
        used = _rle_hybrid(p, size, bit_width, n, &out_v[0])
    if used == ERR_WIDTH:
        raise ValueError(f"bit width {bit_width} outside 0..32")
    if used < 0:
        raise ValueError(f"RLE / bit-packed runs reach past the end of {size} bytes")
    return out[:n], used
