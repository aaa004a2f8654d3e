"""One pass over an event log's window that counts matching rows for several candidate
groups at once.

An OR of ANDs such as ``(city = A and view(category = X) count >= 3 in last 30 days and
orders_count >= 2) or (city = B and view(category = Y) count >= 2 ...) or ...`` asks,
for each group g, which contacts of the group's candidates C_g (what the AND's other
operands leave) have a count of rows of the same log and window whose code passes the
group's filter within the group's bounds. Deciding each group by its candidates' own
rows (``contactindex.count_filtered_of_contacts``) costs a few cache misses per
candidate (~0.4 us at 1M contacts): 95k candidates in ten groups cost ~40 ms. Here the
window is read once, in row order, for every group together:

- per code, a 64-bit mask of the groups whose filter admits it (`code_groups`), plus the
  groups without a filter (`always`): a row of no group's code is skipped at once;
- the candidates of all groups as one bitset (L2-resident at 1M contacts: 128 KiB) with
  a rank per word, so a row's candidate slot is a popcount, not a lookup in a
  per-contact array;
- per candidate one 64-bit record, its group mask (low half) and the counter of its
  first group (high half), so a kept row costs one random access; the counters of a
  candidate's further groups (rare: the groups overlap) are kept aside.

The ``def`` layer validates (sorted candidates, groups within the bounds given, window
inside the columns); ``_count_kernel`` runs without the GIL.
"""

from libc.stdint cimport uint32_t, uint64_t

import numpy as np

from segd.native._types cimport cid_t, code_t, row_t, word_t


cdef enum:
    MAX_GROUPS = 32     # groups one pass counts (the low half of a candidate's record)
    CHUNK = 4096        # rows scanned before the kept ones are counted (on the stack)

cdef uint64_t LOW = 0xFFFFFFFFULL

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SEGD_GROUPSCAN_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 1)
    #else
    #define SEGD_GROUPSCAN_PREFETCH_W(p) ((void)(p))
    #endif
    """
    void SEGD_GROUPSCAN_PREFETCH_W(const void* p) noexcept nogil


cdef inline uint32_t _popcount(uint64_t x) noexcept nogil:
    """Bits set in x (SWAR: the build has no -march, and __builtin_popcountll alone
    would be a libgcc call)."""
    x = x - ((x >> 1) & 0x5555555555555555ULL)
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL
    return <uint32_t> ((x * 0x0101010101010101ULL) >> 56)


cdef void _count_kernel(const cid_t* cid, const code_t* codes, Py_ssize_t r0,
                        Py_ssize_t r1, const uint32_t* code_groups, Py_ssize_t n_codes,
                        uint32_t always, const word_t* bits, const uint32_t* rank,
                        Py_ssize_t n_words, uint64_t* cand, const uint32_t* extra,
                        uint32_t* side) noexcept nogil:
    """Count, for every row of [r0, r1) whose contact is candidate k, each group of k
    whose filter admits the row's code (or that has no filter).

    `code_groups` has `n_codes` >= 1 entries; `bits` / `rank` have ``n_words + 1``
    words, the last one empty (contacts past the last candidate land there);
    ``cand[k]``: group mask | first group's count << 32; ``side[extra[k] + i - 1]``:
    the count of k's i-th group (i >= 1). Three steps per chunk of rows, none with a
    branch on the data (a mispredicted branch discards the cache misses in flight,
    which then serialise): the scan keeps the rows of candidates (a bit test in the
    L2-resident bitset and a write per row; the length moves when it is kept); then
    each kept row's code gives its groups and its contact's rank in the bitset its
    candidate, whose record is prefetched; last, each record gets one added (0 when
    none of its groups admits the code); a further group of the same candidate loops
    (rare)."""
    cdef Py_ssize_t r, w, j, n_kept, top = n_words
    cdef code_t code
    cdef cid_t c
    cdef uint64_t rec, cg, m, low, first
    cdef uint32_t k, inside
    cdef row_t kept[CHUNK]           # rows of candidates, then their candidate numbers
    cdef uint32_t gms[CHUNK]
    cdef Py_ssize_t start = r0, stop
    while start < r1:
        stop = start + CHUNK if r1 - start > CHUNK else r1
        n_kept = 0
        for r in range(start, stop):
            c = cid[r]
            w = c >> 6
            w = w if w < top else top
            kept[n_kept] = <row_t> r
            n_kept += (bits[w] >> (c & 63)) & 1
        # ranks and group masks first, each record prefetched: the records' misses
        # then overlap instead of waiting in the update loop
        for j in range(n_kept):
            r = kept[j]
            c = cid[r]
            code = codes[r]
            inside = code < <code_t> n_codes
            gms[j] = always | (code_groups[code if inside else 0] & (0u - inside))
            w = c >> 6
            k = rank[w] + _popcount(bits[w] & ((<uint64_t> 1 << (c & 63)) - 1))
            kept[j] = k
            SEGD_GROUPSCAN_PREFETCH_W(&cand[k])
        for j in range(n_kept):
            k = kept[j]
            rec = cand[k]
            cg = rec & LOW
            m = cg & gms[j]
            first = cg & (~cg + 1)
            cand[k] = rec + ((<uint64_t> ((m & first) != 0)) << 32)
            m &= ~first
            while m:
                low = m & (~m + 1)
                side[extra[k] + _popcount(cg & (low - 1)) - 1] += 1
                m ^= low
        start = stop


cdef Py_ssize_t _verdicts(const word_t* bits, Py_ssize_t n_words, const uint64_t* cand,
                          const uint32_t* extra, const uint32_t* side,
                          const uint32_t* count_min, const uint32_t* count_max,
                          cid_t* out) noexcept nogil:
    """Write the candidates (ascending, from the bitset) with a group whose count lies
    in its bounds; returns how many."""
    cdef Py_ssize_t w, k = 0, n_out = 0
    cdef uint64_t word, low, m
    cdef uint32_t i, got, g
    cdef int ok
    for w in range(n_words):
        word = bits[w]
        while word:
            low = word & (~word + 1)
            m = cand[k] & LOW
            got = <uint32_t> (cand[k] >> 32)
            i = 0
            ok = 0
            while m:
                g = _popcount((m & (~m + 1)) - 1)
                if i:
                    got = side[extra[k] + i - 1]
                ok |= (got >= count_min[g]) & (got <= count_max[g])
                i += 1
                m &= m - 1
            out[n_out] = <cid_t> ((w << 6) + _popcount(low - 1))
            n_out += ok
            k += 1
            word ^= low
    return n_out


def count_groups(const cid_t[::1] cid not None, const code_t[::1] codes not None,
                 Py_ssize_t r0, Py_ssize_t r1,
                 const uint32_t[::1] code_groups not None, uint32_t always,
                 const cid_t[::1] group_cids not None,
                 const Py_ssize_t[::1] group_ends not None,
                 const uint32_t[::1] count_min not None,
                 const uint32_t[::1] count_max not None):
    """The contacts that pass at least one group: uint32, ascending, distinct.

    Group g's candidates are ``group_cids[group_ends[g - 1]:group_ends[g]]`` (any
    order; repeats count once) and its bounds ``count_min[g]`` / ``count_max[g]``
    (inclusive); a candidate c passes g when the rows r of [r0, r1) with ``cid[r] == c``
    and (bit g of `always`, or ``codes[r] < len(code_groups)`` and bit g of
    ``code_groups[codes[r]]``) number between them. At most 32 groups. ValueError for
    a window outside the columns, columns of different lengths, ends that do not
    partition `group_cids`, or a group bit without bounds.
    """
    cdef Py_ssize_t n = cid.shape[0], n_groups = count_min.shape[0]
    cdef Py_ssize_t n_all = group_cids.shape[0]
    cdef Py_ssize_t i, g, k, w, a, n_words, n_cand, n_side = 0
    cdef uint32_t allowed
    cdef cid_t top = 0
    if codes.shape[0] != n:
        raise ValueError(f"codes has {codes.shape[0]} rows, cid {n}")
    if not 0 <= r0 <= r1 <= n or r1 - r0 > LOW:
        raise ValueError(f"window [{r0}, {r1}) outside the log of {n} rows")
    if count_max.shape[0] != n_groups or n_groups > MAX_GROUPS:
        raise ValueError(
            f"count_min / count_max: {n_groups} / {count_max.shape[0]} groups "
            f"(equal, at most {MAX_GROUPS})")
    if group_ends.shape[0] != n_groups:
        raise ValueError(f"group_ends has {group_ends.shape[0]} ends for {n_groups} groups")
    a = 0
    for g in range(n_groups):
        if group_ends[g] < a or group_ends[g] > n_all:
            raise ValueError(f"group_ends[{g}] = {group_ends[g]} outside [{a}, {n_all}]")
        a = group_ends[g]
    if a != n_all:
        raise ValueError(f"group_ends end at {a}, group_cids has {n_all}")
    allowed = <uint32_t> (((<uint64_t> 1) << n_groups) - 1)
    if always & ~allowed:
        raise ValueError(f"always has a group beyond the {n_groups} bounded")
    for i in range(code_groups.shape[0]):
        if code_groups[i] & ~allowed:
            raise ValueError(f"code {i} names a group beyond the {n_groups} bounded")
    if n_all == 0:
        return np.zeros(0, dtype=np.uint32)
    with nogil:
        for i in range(n_all):
            if group_cids[i] > top:
                top = group_cids[i]
    n_words = (<Py_ssize_t> top >> 6) + 1
    bits_a = np.zeros(n_words + 1, dtype=np.uint64)  # + an empty word (see the kernel)
    rank_a = np.empty(n_words + 1, dtype=np.uint32)
    cdef word_t[::1] bits = bits_a
    cdef uint32_t[::1] rank = rank_a
    cdef uint32_t run = 0
    with nogil:
        for i in range(n_all):
            bits[group_cids[i] >> 6] |= (<uint64_t> 1) << (group_cids[i] & 63)
        for w in range(n_words + 1):
            rank[w] = run
            run += _popcount(bits[w])
    n_cand = run
    cand_a = np.zeros(n_cand, dtype=np.uint64)
    extra_a = np.empty(n_cand, dtype=np.uint32)
    cdef uint64_t[::1] cand = cand_a
    cdef uint32_t[::1] extra = extra_a
    cdef cid_t c
    with nogil:
        a = 0
        for g in range(n_groups):
            for i in range(a, group_ends[g]):
                c = group_cids[i]
                w = c >> 6
                k = rank[w] + _popcount(bits[w] & ((<uint64_t> 1 << (c & 63)) - 1))
                cand[k] |= (<uint64_t> 1) << g
            a = group_ends[g]
        for k in range(n_cand):
            extra[k] = <uint32_t> n_side
            n_side += _popcount(cand[k]) - 1
    side_a = np.zeros(max(n_side, 1), dtype=np.uint32)
    out_a = np.empty(n_cand, dtype=np.uint32)
    cdef uint32_t[::1] side = side_a
    cdef cid_t[::1] out = out_a
    cdef const uint32_t[::1] groups_of = code_groups
    if code_groups.shape[0] == 0:
        groups_of = np.zeros(1, dtype=np.uint32)  # the kernel reads entry 0 blindly
    cdef Py_ssize_t n_out
    with nogil:
        if r1 > r0:
            _count_kernel(&cid[0], &codes[0], r0, r1, &groups_of[0], groups_of.shape[0],
                          always, &bits[0], &rank[0], n_words, &cand[0], &extra[0],
                          &side[0])
        n_out = _verdicts(&bits[0], n_words, &cand[0], &extra[0], &side[0],
                          &count_min[0], &count_max[0], &out[0])
    return out_a[:n_out]
