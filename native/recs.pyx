# cython: language_level=3
"""Recommendation kernels: baskets, item-item co-occurrence, phrase -> category, lookup.

Model build (segd.recs.build_model), all O(rows) or O(sum of squared basket sizes):

- ``basket_count`` / ``basket_fill``: the rows of a window of one event log, grouped by
  contact (CSR, int64 offsets), newest first, each tagged with the log's bit (order 1,
  cart 2, view 4). Called once per log, orders first, so a contact's basket lists its
  orders, then carts, then views.
- ``basket_dedup``: each contact's distinct items (bits OR-ed), at most ``cap`` of them
  (the first ones: orders, then the newest), and per event bit the number of distinct
  contacts per item (popularity).
- ``transpose``: item -> (contact, weight) lists and each item's squared norm.
- ``cooccur``: per item the ``k`` best neighbours by shrunk cosine
  ``c_ij / (sqrt(n_i * n_j) + shrink)`` with ``c_ij = sum_c w_ci * w_cj`` (see
  docs/recommendations.md), ties by item id rank.
- ``contact_sets``: sorted distinct items per contact (the bought lists).
- ``phrase_pairs``: (phrase, item) pairs of a search followed by an item event of the
  same contact within a time span.

Lookup: a ``Lookup`` holds one resolved lookup (the model's arrays and the arguments);
``Lookup.run`` (one contact) and ``Lookup.many`` (a batch) merge the neighbour lists of
the seed items, filter them (allowed mask, excluded codes, category node) and fill up
from popularity lists of category nodes. ``encode_batch_results`` writes a batch's
RecommendBatchResponse bytes. Every kernel runs without the GIL.
"""

from libc.math cimport sqrt
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdlib cimport free, malloc, calloc, qsort

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)


cdef inline tuple _pair(object item_id, double score):
    """``(item_id, score)``, untracked by the cycle collector: a tuple of a str and a
    float cannot be part of a cycle (the collector would untrack it itself at its next
    pass; doing it now keeps a mass send's 10,000 result tuples out of the young
    generation, so they do not trigger collections, nor full ones once they outlive
    the call)."""
    cdef tuple t = (item_id, score)
    PyObject_GC_UnTrack(<void*> t)
    return t

import numpy as np

from segd.native._types cimport NO_CODE, cid_t, code_t, row_t

NO_ITEM = 0xFFFFFFFF
cdef uint32_t HASH_MUL = 2654435761
MAX_DEPTH = 8


cdef inline bint _better(float s1, uint32_t r1, float s2, uint32_t r2) noexcept nogil:
    """Is (score s1, id rank r1) ranked before (s2, r2)? Higher score, then lower rank."""
    return s1 > s2 or (s1 == s2 and r1 < r2)


# -- baskets -------------------------------------------------------------------------

def basket_count(const cid_t[::1] cid, const code_t[::1] item, row_t r0, row_t r1,
                 int64_t[::1] counts):
    """counts[c + 1] += rows of contact c in [r0, r1) that name an item (INOUT)."""
    cdef Py_ssize_t i, n_c = counts.shape[0] - 1
    if r1 > cid.shape[0] or r1 > item.shape[0] or r0 > r1:
        raise ValueError(f"row window [{r0}, {r1}) outside the log")
    with nogil:
        for i in range(r0, r1):
            if item[i] != NO_CODE and cid[i] < n_c:
                counts[cid[i] + 1] += 1


def basket_fill(const cid_t[::1] cid, const code_t[::1] item, row_t r0, row_t r1,
                uint8_t bit, const int64_t[::1] offsets, int64_t[::1] cursor,
                uint32_t[::1] out_item, uint8_t[::1] out_bits):
    """Scatter the rows of [r0, r1) newest first to ``offsets[c] + cursor[c]`` (INOUT)."""
    cdef Py_ssize_t i, n_c = offsets.shape[0] - 1
    cdef int64_t pos
    cdef cid_t c
    if r1 > cid.shape[0] or r1 > item.shape[0] or r0 > r1:
        raise ValueError(f"row window [{r0}, {r1}) outside the log")
    if cursor.shape[0] < n_c:
        raise ValueError("cursor shorter than the contacts")
    with nogil:
        for i in range(<Py_ssize_t> r1 - 1, <Py_ssize_t> r0 - 1, -1):
            c = cid[i]
            if item[i] == NO_CODE or c >= n_c:
                continue
            pos = offsets[c] + cursor[c]
            cursor[c] += 1
            out_item[pos] = item[i]
            out_bits[pos] = bit


def basket_dedup(int64_t[::1] offsets, uint32_t[::1] items, uint8_t[::1] bits,
                 Py_ssize_t n_items, Py_ssize_t cap):
    """Distinct items per contact, compacted in place (first occurrence kept, bits OR-ed,
    at most ``cap``); ``offsets`` is rewritten. Returns the distinct contacts per item
    for bits 1, 2 and 4 (uint32[3, n_items]), counted before the cap; items >= n_items
    are dropped."""
    cdef Py_ssize_t n_c = offsets.shape[0] - 1, c, b
    cdef int64_t i, lo, hi, out = 0, start
    cdef uint32_t it
    cdef uint8_t new, got
    pop_arr = np.zeros((3, n_items), dtype=np.uint32)
    cdef uint32_t[:, ::1] pop = pop_arr
    seen_arr = np.full(n_items, -1, dtype=np.int64)
    cdef int64_t[::1] seen = seen_arr  # the contact that last saw the item
    seen_bits_arr = np.zeros(n_items, dtype=np.uint8)
    cdef uint8_t[::1] seen_bits = seen_bits_arr
    pos_arr = np.full(n_items, -1, dtype=np.int64)
    cdef int64_t[::1] pos = pos_arr  # its place in the contact's compacted basket
    with nogil:
        lo = offsets[0]
        for c in range(n_c):
            hi = offsets[c + 1]
            start = out
            for i in range(lo, hi):
                it = items[i]
                got = bits[i]  # read first: the compaction may write over row i
                if it >= n_items:
                    continue
                if seen[it] != c:
                    seen[it] = c
                    seen_bits[it] = 0
                    pos[it] = -1
                    if out - start < cap:
                        pos[it] = out
                        items[out] = it
                        bits[out] = 0
                        out += 1
                new = got & ~seen_bits[it]
                seen_bits[it] |= got
                for b in range(3):
                    if (new >> b) & 1:
                        pop[b, it] += 1
                if pos[it] >= 0:
                    bits[pos[it]] = seen_bits[it]
            offsets[c] = start
            lo = hi
        offsets[n_c] = out
    return pop_arr


def transpose(const int64_t[::1] offsets, const uint32_t[::1] items,
              const uint8_t[::1] bits, const float[::1] weight_of_bits,
              Py_ssize_t n_items):
    """(item_offsets int64[n_items + 1], contacts uint32, weights float32, norms float64):
    the contacts holding each item with the weight of their bits, and sum of squares."""
    cdef Py_ssize_t n_c = offsets.shape[0] - 1, c
    cdef int64_t i, pos
    cdef float w
    if weight_of_bits.shape[0] < 8:
        raise ValueError("weight_of_bits needs 8 entries")
    item_off_arr = np.zeros(n_items + 1, dtype=np.int64)
    cdef int64_t[::1] item_off = item_off_arr
    norms_arr = np.zeros(n_items, dtype=np.float64)
    cdef double[::1] norms = norms_arr
    with nogil:
        for c in range(n_c):
            for i in range(offsets[c], offsets[c + 1]):
                if weight_of_bits[bits[i] & 7] > 0:
                    item_off[items[i] + 1] += 1
        for c in range(n_items):
            item_off[c + 1] += item_off[c]
    contacts_arr = np.empty(item_off[n_items], dtype=np.uint32)
    weights_arr = np.empty(item_off[n_items], dtype=np.float32)
    cursor_arr = item_off_arr[:n_items].copy()
    cdef uint32_t[::1] contacts = contacts_arr
    cdef float[::1] weights = weights_arr
    cdef int64_t[::1] cursor = cursor_arr
    with nogil:
        for c in range(n_c):
            for i in range(offsets[c], offsets[c + 1]):
                w = weight_of_bits[bits[i] & 7]
                if w > 0:
                    pos = cursor[items[i]]
                    cursor[items[i]] += 1
                    contacts[pos] = <uint32_t> c
                    weights[pos] = w
                    norms[items[i]] += w * w
    return item_off_arr, contacts_arr, weights_arr, norms_arr


# -- co-occurrence ---------------------------------------------------------------------

cdef void _sift_down(float* hs, uint32_t* hr, uint32_t* hi, Py_ssize_t n,
                     Py_ssize_t i) noexcept nogil:
    """Min-heap (worst first) by (score, -rank)."""
    cdef Py_ssize_t lc, r, m
    cdef float ts
    cdef uint32_t tr, ti
    while True:
        lc = 2 * i + 1
        r = lc + 1
        m = i
        if lc < n and _better(hs[m], hr[m], hs[lc], hr[lc]):
            m = lc
        if r < n and _better(hs[m], hr[m], hs[r], hr[r]):
            m = r
        if m == i:
            return
        ts = hs[i]
        hs[i] = hs[m]
        hs[m] = ts
        tr = hr[i]
        hr[i] = hr[m]
        hr[m] = tr
        ti = hi[i]
        hi[i] = hi[m]
        hi[m] = ti
        i = m


def cooccur(const int64_t[::1] offsets, const uint32_t[::1] items,
            const uint8_t[::1] bits, const float[::1] weight_of_bits,
            const int64_t[::1] item_off, const uint32_t[::1] item_contacts,
            const float[::1] item_weights, const double[::1] norms,
            const uint32_t[::1] id_rank, Py_ssize_t k, double shrink,
            double min_score=0.0):
    """Top-``k`` neighbours per item by shrunk cosine. Returns (nbr_offsets uint32[n+1],
    nbr_items uint32, nbr_scores float32), each item's list best first."""
    cdef Py_ssize_t n_items = norms.shape[0], i, j, t, n_touched, h, c
    cdef int64_t p, q
    cdef uint32_t it
    cdef float w, s
    cdef double denom
    if id_rank.shape[0] < n_items or item_off.shape[0] != n_items + 1:
        raise ValueError("id_rank / item_off do not cover the items")
    if k <= 0:
        raise ValueError("k must be > 0")
    acc_arr = np.zeros(n_items, dtype=np.float32)
    touched_arr = np.empty(n_items, dtype=np.uint32)
    cdef float[::1] acc = acc_arr
    cdef uint32_t[::1] touched = touched_arr
    out_off_arr = np.zeros(n_items + 1, dtype=np.uint32)
    out_items_arr = np.empty(n_items * k, dtype=np.uint32)
    out_scores_arr = np.empty(n_items * k, dtype=np.float32)
    cdef uint32_t[::1] out_off = out_off_arr
    cdef uint32_t[::1] out_items = out_items_arr
    cdef float[::1] out_scores = out_scores_arr
    cdef float* hs = <float*> malloc(k * sizeof(float))
    cdef uint32_t* hr = <uint32_t*> malloc(k * sizeof(uint32_t))
    cdef uint32_t* hi = <uint32_t*> malloc(k * sizeof(uint32_t))
    cdef Py_ssize_t total = 0
    if hs == NULL or hr == NULL or hi == NULL:
        free(hs)
        free(hr)
        free(hi)
        raise MemoryError()
    with nogil:
        for i in range(n_items):
            n_touched = 0
            for p in range(item_off[i], item_off[i + 1]):
                c = item_contacts[p]
                w = item_weights[p]
                for q in range(offsets[c], offsets[c + 1]):
                    it = items[q]
                    s = weight_of_bits[bits[q] & 7]
                    if s <= 0 or it == i:
                        continue
                    if acc[it] == 0:
                        touched[n_touched] = it
                        n_touched += 1
                    acc[it] += w * s
            h = 0
            for t in range(n_touched):
                it = touched[t]
                denom = sqrt(norms[i] * norms[it]) + shrink
                s = <float> (acc[it] / denom) if denom > 0 else 0
                acc[it] = 0
                if s <= min_score:
                    continue
                if h < k:
                    hs[h] = s
                    hr[h] = id_rank[it]
                    hi[h] = it
                    h += 1
                    if h == k:  # heapify
                        for j in range(k // 2 - 1, -1, -1):
                            _sift_down(hs, hr, hi, k, j)
                elif _better(s, id_rank[it], hs[0], hr[0]):
                    hs[0] = s
                    hr[0] = id_rank[it]
                    hi[0] = it
                    _sift_down(hs, hr, hi, k, 0)
            if h < k:
                for j in range(h // 2 - 1, -1, -1):
                    _sift_down(hs, hr, hi, h, j)
            # pop worst first into the tail of this item's slots: best ends up first
            for j in range(h - 1, -1, -1):
                out_items[total + j] = hi[0]
                out_scores[total + j] = hs[0]
                hs[0] = hs[j]
                hr[0] = hr[j]
                hi[0] = hi[j]
                _sift_down(hs, hr, hi, j, 0)
            total += h
            out_off[i + 1] = <uint32_t> total
    free(hs)
    free(hr)
    free(hi)
    return out_off_arr, out_items_arr[:total].copy(), out_scores_arr[:total].copy()


# -- both neighbour models in one pass ---------------------------------------------------

cdef extern from *:
    """
    #define segd_recs_prefetch(p) __builtin_prefetch((const void*) (p))
    static inline long long segd_recs_fetch_add(long long* p, long long v) {
        return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    }
    """
    void segd_recs_prefetch(const void* p) noexcept nogil
    long long segd_recs_fetch_add(long long* p, long long v) noexcept nogil

ITEM_CHUNK = 64  # items a thread claims at a time in cooccur_pair
cdef Py_ssize_t _CHUNK = 64
cdef Py_ssize_t _AHEAD = 8  # contacts ahead whose baskets are prefetched
cdef uint32_t _PACK_LIMIT = 1 << 29


def pack_baskets(const uint32_t[::1] items, const uint8_t[::1] bits):
    """uint32 ``item << 3 | bits`` per basket entry: one load per entry in the
    co-occurrence loop (item codes must be < 2**29)."""
    cdef Py_ssize_t n = items.shape[0], q, bad = -1
    if bits.shape[0] != n:
        raise ValueError("items and bits differ in length")
    out_arr = np.empty(n, dtype=np.uint32)
    cdef uint32_t[::1] out = out_arr
    with nogil:
        for q in range(n):
            if items[q] >= _PACK_LIMIT:
                bad = q
                break
            out[q] = (items[q] << 3) | (bits[q] & 7)
    if bad >= 0:
        raise ValueError(f"item code {items[bad]} at entry {bad} too large to pack")
    return out_arr


def transpose_pair(const int64_t[::1] offsets, const uint32_t[::1] packed,
                   const float[::1] w_a, const float[::1] w_b, Py_ssize_t n_items):
    """The item -> contacts lists of two weightings at once: (item_off int64[n + 1],
    contacts uint32, bits uint8, norms_a float64[n], norms_b float64[n]). A contact is
    listed under an item when either weight of its bits is > 0; the norms are each
    weighting's sum of squared weights (summed in contact order, as ``transpose``)."""
    cdef Py_ssize_t n_c = offsets.shape[0] - 1, c
    cdef int64_t i, pos
    cdef uint32_t e, it
    cdef float wa, wb
    if w_a.shape[0] < 8 or w_b.shape[0] < 8:
        raise ValueError("weights need 8 entries")
    if n_c >= 0 and offsets[n_c] > packed.shape[0]:
        raise ValueError("offsets run past the entries")
    item_off_arr = np.zeros(n_items + 1, dtype=np.int64)
    cdef int64_t[::1] item_off = item_off_arr
    na_arr = np.zeros(n_items, dtype=np.float64)
    nb_arr = np.zeros(n_items, dtype=np.float64)
    cdef double[::1] na = na_arr
    cdef double[::1] nb = nb_arr
    with nogil:
        for c in range(n_c):
            for i in range(offsets[c], offsets[c + 1]):
                e = packed[i]
                if (e >> 3) < <uint32_t> n_items and (w_a[e & 7] > 0 or w_b[e & 7] > 0):
                    item_off[(e >> 3) + 1] += 1
        for c in range(n_items):
            item_off[c + 1] += item_off[c]
    contacts_arr = np.empty(item_off[n_items], dtype=np.uint32)
    cbits_arr = np.empty(item_off[n_items], dtype=np.uint8)
    cursor_arr = item_off_arr[:n_items].copy()
    cdef uint32_t[::1] contacts = contacts_arr
    cdef uint8_t[::1] cbits = cbits_arr
    cdef int64_t[::1] cursor = cursor_arr
    with nogil:
        for c in range(n_c):
            for i in range(offsets[c], offsets[c + 1]):
                e = packed[i]
                it = e >> 3
                wa = w_a[e & 7]
                wb = w_b[e & 7]
                if it >= <uint32_t> n_items or not (wa > 0 or wb > 0):
                    continue
                pos = cursor[it]
                cursor[it] += 1
                contacts[pos] = <uint32_t> c
                cbits[pos] = <uint8_t> (e & 7)
                na[it] += wa * wa
                nb[it] += wb * wb
    return item_off_arr, contacts_arr, cbits_arr, na_arr, nb_arr


cdef struct _Heap:
    float* s
    uint32_t* r
    uint32_t* it
    Py_ssize_t n


cdef inline void _offer(_Heap* h, Py_ssize_t k, float s, uint32_t rank,
                        uint32_t it) noexcept nogil:
    """Keep the ``k`` best (score, rank) offered; a min-heap once full."""
    cdef Py_ssize_t j
    if h.n < k:
        h.s[h.n] = s
        h.r[h.n] = rank
        h.it[h.n] = it
        h.n += 1
        if h.n == k:
            for j in range(k // 2 - 1, -1, -1):
                _sift_down(h.s, h.r, h.it, k, j)
    elif _better(s, rank, h.s[0], h.r[0]):
        h.s[0] = s
        h.r[0] = rank
        h.it[0] = it
        _sift_down(h.s, h.r, h.it, k, 0)


cdef inline Py_ssize_t _drain(_Heap* h, uint32_t* out_items,
                              float* out_scores) noexcept nogil:
    """Empty the heap into ``out_*`` best first; the count."""
    cdef Py_ssize_t j, n = h.n
    for j in range(n // 2 - 1, -1, -1):  # heapify (a full heap is one already)
        _sift_down(h.s, h.r, h.it, n, j)
    for j in range(n - 1, -1, -1):  # worst first into the tail
        out_items[j] = h.it[0]
        out_scores[j] = h.s[0]
        h.s[0] = h.s[j]
        h.r[0] = h.r[j]
        h.it[0] = h.it[j]
        _sift_down(h.s, h.r, h.it, j, 0)
    h.n = 0
    return n


cdef struct _Acc:
    uint32_t mark  # item + 1 of the item whose row this entry holds now
    uint32_t rank  # id rank (ties)
    float a  # co-occurrence under each weighting
    float b


cdef inline void _free_scratch(void* acc, void* norms, void* touched, void* hs, void* hr,
                               void* hi) noexcept nogil:
    """Frees ``_pair_items``' scratch buffers (free(NULL) is a no-op)."""
    free(acc)
    free(norms)
    free(touched)
    free(hs)
    free(hr)
    free(hi)


cdef int _pair_items(const int64_t* offsets, const uint32_t* packed,
                     const float* w_a, const float* w_b, const int64_t* item_off,
                     const uint32_t* item_contacts, const uint8_t* item_bits,
                     const double* na, const double* nb, const uint32_t* id_rank,
                     Py_ssize_t n_items, Py_ssize_t k, double shrink,
                     long long* next_chunk, uint32_t* count_a, uint32_t* count_b,
                     uint32_t* items_a, float* scores_a, uint32_t* items_b,
                     float* scores_b) noexcept nogil:
    """Claim chunks of items from ``next_chunk`` until none is left; for each item its
    ``k`` best neighbours of both weightings into its slots. -1 without memory.

    The dense row is an array of 16-byte ``_Acc`` (mark, rank and both sums of an
    item on one cache line) and the norms are interleaved: one memory access per
    basket entry and per candidate instead of three."""
    cdef _Acc* acc = <_Acc*> malloc(n_items * sizeof(_Acc))
    cdef double* norms = <double*> malloc(2 * n_items * sizeof(double))
    cdef uint32_t* touched = <uint32_t*> malloc(n_items * sizeof(uint32_t))
    cdef float* hs = <float*> malloc(2 * k * sizeof(float))
    cdef uint32_t* hr = <uint32_t*> malloc(2 * k * sizeof(uint32_t))
    cdef uint32_t* hi = <uint32_t*> malloc(2 * k * sizeof(uint32_t))
    cdef _Heap ha, hb
    cdef _Acc* x
    cdef Py_ssize_t i, i0, i1, n_touched, t
    cdef int64_t p, p1, q, q1
    cdef uint32_t c, e, it, stamp
    cdef uint8_t bi
    cdef float wa, wb, s
    cdef double denom, ni_a, ni_b
    if (acc == NULL or norms == NULL or touched == NULL or hs == NULL or hr == NULL
            or hi == NULL):
        _free_scratch(acc, norms, touched, hs, hr, hi)
        return -1
    for i in range(n_items):
        acc[i].mark = 0
        acc[i].rank = id_rank[i]
        norms[2 * i] = na[i]
        norms[2 * i + 1] = nb[i]
    ha.s, ha.r, ha.it, ha.n = hs, hr, hi, 0
    hb.s, hb.r, hb.it, hb.n = hs + k, hr + k, hi + k, 0
    while True:
        i0 = <Py_ssize_t> segd_recs_fetch_add(next_chunk, 1) * _CHUNK
        if i0 >= n_items:
            break
        i1 = i0 + _CHUNK if i0 + _CHUNK < n_items else n_items
        for i in range(i0, i1):
            n_touched = 0
            stamp = <uint32_t> i + 1
            p1 = item_off[i + 1]
            for p in range(item_off[i], p1):
                if p + _AHEAD < p1:  # the basket of a contact a few steps ahead
                    segd_recs_prefetch(&packed[offsets[item_contacts[p + _AHEAD]]])
                    if p + 2 * _AHEAD < p1:
                        segd_recs_prefetch(&offsets[item_contacts[p + 2 * _AHEAD]])
                c = item_contacts[p]
                bi = item_bits[p]
                wa = w_a[bi]
                wb = w_b[bi]
                q1 = offsets[c + 1]
                for q in range(offsets[c], q1):
                    e = packed[q]
                    it = e >> 3
                    if it == <uint32_t> i or it >= <uint32_t> n_items:
                        continue
                    x = &acc[it]
                    if x.mark != stamp:
                        x.mark = stamp
                        x.a = 0
                        x.b = 0
                        touched[n_touched] = it
                        n_touched += 1
                    x.a += wa * w_a[e & 7]
                    x.b += wb * w_b[e & 7]
            ni_a = norms[2 * i]
            ni_b = norms[2 * i + 1]
            for t in range(n_touched):
                it = touched[t]
                x = &acc[it]
                if x.a > 0:
                    denom = sqrt(ni_a * norms[2 * it]) + shrink
                    s = <float> (x.a / denom) if denom > 0 else 0
                    if s > 0:
                        _offer(&ha, k, s, x.rank, it)
                if x.b > 0:
                    denom = sqrt(ni_b * norms[2 * it + 1]) + shrink
                    s = <float> (x.b / denom) if denom > 0 else 0
                    if s > 0:
                        _offer(&hb, k, s, x.rank, it)
            count_a[i] = <uint32_t> _drain(&ha, &items_a[i * k], &scores_a[i * k])
            count_b[i] = <uint32_t> _drain(&hb, &items_b[i * k], &scores_b[i * k])
    _free_scratch(acc, norms, touched, hs, hr, hi)
    return 0


def cooccur_pair(const int64_t[::1] offsets, const uint32_t[::1] packed,
                 const float[::1] w_a, const float[::1] w_b,
                 const int64_t[::1] item_off, const uint32_t[::1] item_contacts,
                 const uint8_t[::1] item_bits, const double[::1] norms_a,
                 const double[::1] norms_b, const uint32_t[::1] id_rank,
                 Py_ssize_t k, double shrink, int64_t[::1] next_chunk,
                 uint32_t[:, ::1] counts, uint32_t[:, ::1] slot_items,
                 float[:, ::1] slot_scores):
    """Top-``k`` neighbours per item by shrunk cosine, for two weightings in one pass
    over the baskets (``cooccur``'s measure and order, the same scores: the extra
    contacts of the union add zeros). Fills each item's ``k`` slots of
    ``slot_items[w]`` / ``slot_scores[w]`` best first and ``counts[w, item]`` (w = 0:
    ``w_a``, 1: ``w_b``). Items are claimed ``ITEM_CHUNK`` at a time from the shared
    counter ``next_chunk[0]`` (start it at 0), so several threads may call this at once
    on the same arguments and split the items between them; it runs without the GIL."""
    cdef Py_ssize_t n_items = norms_a.shape[0], n_c = offsets.shape[0] - 1
    cdef int rc
    if k <= 0:
        raise ValueError("k must be > 0")
    if (norms_b.shape[0] != n_items or id_rank.shape[0] < n_items
            or item_off.shape[0] != n_items + 1 or w_a.shape[0] < 8
            or w_b.shape[0] < 8 or next_chunk.shape[0] < 1):
        raise ValueError("norms / id_rank / item_off / weights do not fit the items")
    if (counts.shape[0] < 2 or counts.shape[1] != n_items or slot_items.shape[0] < 2
            or slot_scores.shape[0] < 2 or slot_items.shape[1] != n_items * k
            or slot_scores.shape[1] != n_items * k):
        raise ValueError("output slots do not fit n_items * k")
    if item_contacts.shape[0] < item_off[n_items] or item_bits.shape[0] < item_off[n_items]:
        raise ValueError("item lists shorter than item_off says")
    if n_c < 0 or packed.shape[0] < offsets[n_c]:
        raise ValueError("baskets shorter than offsets say")
    if n_items == 0:
        return
    with nogil:
        rc = _pair_items(&offsets[0], &packed[0] if packed.shape[0] else NULL,
                         &w_a[0], &w_b[0], &item_off[0],
                         &item_contacts[0] if item_contacts.shape[0] else NULL,
                         &item_bits[0] if item_bits.shape[0] else NULL,
                         &norms_a[0], &norms_b[0], &id_rank[0], n_items, k, shrink,
                         <long long*> &next_chunk[0], &counts[0, 0], &counts[1, 0],
                         &slot_items[0, 0], &slot_scores[0, 0], &slot_items[1, 0],
                         &slot_scores[1, 0])
    if rc < 0:
        raise MemoryError()


# -- contact item sets -----------------------------------------------------------------

cdef int _cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*> a)[0], y = (<const uint32_t*> b)[0]
    return (x > y) - (x < y)


def contact_sets(const cid_t[::1] cid, const code_t[::1] item, row_t r0, row_t r1,
                 Py_ssize_t n_contacts):
    """(offsets int64[n_contacts + 1], items uint32): each contact's distinct items of
    rows [r0, r1), ascending (binary-searchable)."""
    cdef Py_ssize_t c
    cdef int64_t i, j, lo, hi, out = 0
    counts_arr = np.zeros(n_contacts + 1, dtype=np.int64)
    basket_count(cid, item, r0, r1, counts_arr)
    offsets_arr = np.cumsum(counts_arr)
    cursor_arr = np.zeros(n_contacts, dtype=np.int64)
    items_arr = np.empty(offsets_arr[n_contacts], dtype=np.uint32)
    bits_arr = np.empty(offsets_arr[n_contacts], dtype=np.uint8)
    basket_fill(cid, item, r0, r1, 1, offsets_arr, cursor_arr, items_arr, bits_arr)
    del bits_arr
    cdef int64_t[::1] offsets = offsets_arr
    cdef uint32_t[::1] items = items_arr
    with nogil:
        lo = 0
        for c in range(n_contacts):
            hi = offsets[c + 1]
            if hi - lo > 1:
                qsort(&items[lo], hi - lo, sizeof(uint32_t), _cmp_u32)
            j = out
            for i in range(lo, hi):
                if out == j or items[out - 1] != items[i]:
                    items[out] = items[i]
                    out += 1
            offsets[c] = j
            lo = hi
        offsets[n_contacts] = out
    return offsets_arr, items_arr[:out].copy()


# -- search phrase -> items ---------------------------------------------------------------

def phrase_pairs(const uint32_t[::1] s_off, const row_t[::1] s_rows,
                 const uint32_t[::1] s_ts, const code_t[::1] s_phrase,
                 const uint32_t[::1] e_off, const row_t[::1] e_rows,
                 const uint32_t[::1] e_ts, const code_t[::1] e_item,
                 uint32_t span_s, Py_ssize_t max_pairs):
    """(phrases uint32, items uint32): for each search, the items the same contact
    touched in [ts, ts + span_s) (both indexes contact-major, rows in time order; row
    numbers index the ts / code columns given). At most ``max_pairs`` pairs."""
    cdef Py_ssize_t n_c = s_off.shape[0] - 1, c
    cdef int64_t a, b, b0, n = 0
    cdef uint32_t t, ph
    if e_off.shape[0] - 1 < n_c:
        n_c = e_off.shape[0] - 1
    phr_arr = np.empty(max_pairs, dtype=np.uint32)
    itm_arr = np.empty(max_pairs, dtype=np.uint32)
    cdef uint32_t[::1] phr = phr_arr
    cdef uint32_t[::1] itm = itm_arr
    with nogil:
        for c in range(n_c):
            b0 = e_off[c]
            for a in range(s_off[c], s_off[c + 1]):
                t = s_ts[s_rows[a]]
                ph = s_phrase[s_rows[a]]
                if ph == NO_CODE:
                    continue
                while b0 < e_off[c + 1] and e_ts[e_rows[b0]] < t:
                    b0 += 1
                b = b0
                while b < e_off[c + 1] and e_ts[e_rows[b]] - t < span_s:
                    if e_item[e_rows[b]] != NO_CODE and n < max_pairs:
                        phr[n] = ph
                        itm[n] = e_item[e_rows[b]]
                        n += 1
                    b += 1
    return phr_arr[:n].copy(), itm_arr[:n].copy()


# -- lookup ----------------------------------------------------------------------------

cdef inline bint _in_sorted(const uint32_t* arr, Py_ssize_t n, uint32_t it) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] < it:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and arr[lo] == it


cdef struct Cand:
    uint32_t item
    uint32_t rank
    float score


cdef int _cmp_cand(const void* a, const void* b) noexcept nogil:
    cdef const Cand* x = <const Cand*> a
    cdef const Cand* y = <const Cand*> b
    if x.score > y.score:
        return -1
    if x.score < y.score:
        return 1
    return (x.rank > y.rank) - (x.rank < y.rank)


cdef inline bint _cand_worse(const Cand* x, const Cand* y) noexcept nogil:
    """x ranks after y (lower score, or the same score and a later id)."""
    return x.score < y.score or (x.score == y.score and x.rank > y.rank)


cdef void _cand_sift(Cand* h, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """Min-heap of the kept candidates, the worst at the root."""
    cdef Py_ssize_t lc, r, m
    cdef Cand t
    while True:
        lc = 2 * i + 1
        r = lc + 1
        m = i
        if lc < n and _cand_worse(&h[lc], &h[m]):
            m = lc
        if r < n and _cand_worse(&h[r], &h[m]):
            m = r
        if m == i:
            return
        t = h[i]
        h[i] = h[m]
        h[m] = t
        i = m


cdef Py_ssize_t _top(Cand* cands, Py_ssize_t n, Py_ssize_t limit) noexcept nogil:
    """Move the best ``limit`` candidates to the front, sorted; how many there are.
    O(n log limit): a heap of the best so far, instead of sorting all n."""
    cdef Py_ssize_t i, k = limit if limit < n else n
    if k <= 0:
        return 0
    if n > k:
        for i in range(k // 2 - 1, -1, -1):
            _cand_sift(cands, k, i)
        for i in range(k, n):
            if _cand_worse(&cands[0], &cands[i]):
                cands[0] = cands[i]
                _cand_sift(cands, k, 0)
    if k > 1:
        qsort(cands, k, sizeof(Cand), _cmp_cand)
    return k


cdef struct Shared:
    # what every contact of a lookup shares: the model's arrays and the arguments
    const uint32_t* nbr_off
    const uint32_t* nbr_items
    const float* nbr_scores
    const int64_t* rank_off
    Py_ssize_t n_rank_nodes
    const uint32_t* rank_items
    const float* rank_scores
    const uint8_t* allowed
    Py_ssize_t n_allowed
    const uint8_t* repeatable    # items never excluded (NULL: none)
    Py_ssize_t n_repeatable
    const uint32_t* id_rank
    Py_ssize_t n_model
    const uint32_t* item_nodes   # [n_model, depth]
    Py_ssize_t depth
    uint32_t within_node
    Py_ssize_t within_depth
    Py_ssize_t limit
    float fallback_scale
    bint block_seeds
    float self_weight
    const float* pop_bonus        # per item, added to a neighbour candidate (NULL: none)
    Py_ssize_t n_pop_bonus


cdef inline bint _refused(const Shared* a, uint32_t it, const uint32_t* exclude,
                          Py_ssize_t n_exclude) noexcept nogil:
    if a.n_allowed and (it >= a.n_allowed or not a.allowed[it]):
        return True
    if a.within_node != NO_CODE and (
            it >= a.n_model or a.item_nodes[it * a.depth + a.within_depth] != a.within_node):
        return True
    if n_exclude and _in_sorted(exclude, n_exclude, it):
        return not (it < a.n_repeatable and a.repeatable[it])
    return False


cdef Py_ssize_t _rank(const Shared* a, const uint32_t* seeds, const float* weights,
                      Py_ssize_t n_seeds, const uint32_t* nodes, Py_ssize_t n_nodes,
                      bint seed_nodes, const uint32_t* exclude, Py_ssize_t n_exclude,
                      uint32_t* out_items, float* out_scores) noexcept nogil:
    """One lookup (see ``recommend``); the number of items written, -1 without memory."""
    cdef Py_ssize_t n_cand = 0, total = 0, i, s, cap, n_out = 0, nd, n_walk = 0, d, w
    cdef Py_ssize_t n_steps
    cdef uint32_t node, it, sd, mask_h, h
    cdef bint dup
    cdef int64_t p
    cdef float prev, sc
    if a.limit <= 0:
        return 0
    for s in range(n_seeds):
        if seeds[s] < a.n_model:
            total += a.nbr_off[seeds[s] + 1] - a.nbr_off[seeds[s]] + 1
    cap = 16
    while cap < 2 * (total + a.limit + n_seeds):
        cap <<= 1
    mask_h = <uint32_t> (cap - 1)
    n_steps = n_nodes + (n_seeds * a.depth if seed_nodes else 0)
    # open addressing: key item + 1 (0 = empty), value index into cands
    cdef uint32_t* keys = <uint32_t*> calloc(cap, sizeof(uint32_t))
    cdef uint32_t* slot = <uint32_t*> malloc(cap * sizeof(uint32_t))
    cdef Cand* cands = <Cand*> malloc((total + 1) * sizeof(Cand))
    cdef uint32_t* walk = <uint32_t*> malloc((n_steps + 1) * sizeof(uint32_t))
    if keys == NULL or slot == NULL or cands == NULL or walk == NULL:
        free(keys)
        free(slot)
        free(cands)
        free(walk)
        return -1
    # seeds themselves are never candidates (block_seeds)
    for s in range(n_seeds if a.block_seeds else 0):
        sd = seeds[s]
        h = (sd * HASH_MUL) & mask_h
        while keys[h] != 0 and keys[h] != sd + 1:
            h = (h + 1) & mask_h
        if keys[h] == 0:
            keys[h] = sd + 1
            slot[h] = NO_CODE
    for s in range(n_seeds):
        sd = seeds[s]
        if sd >= a.n_model:
            continue
        for p in range(<int64_t> a.nbr_off[sd] - 1, a.nbr_off[sd + 1]):
            if p < <int64_t> a.nbr_off[sd]:  # the seed itself
                if a.block_seeds or a.self_weight <= 0:
                    continue
                it = sd
                sc = a.self_weight
            else:
                it = a.nbr_items[p]
                sc = a.nbr_scores[p]
            h = (it * HASH_MUL) & mask_h
            while keys[h] != 0 and keys[h] != it + 1:
                h = (h + 1) & mask_h
            if keys[h] == 0:
                keys[h] = it + 1
                if _refused(a, it, exclude, n_exclude):
                    slot[h] = NO_CODE
                    continue
                slot[h] = <uint32_t> n_cand
                cands[n_cand].item = it
                cands[n_cand].rank = a.id_rank[it]
                cands[n_cand].score = (
                    a.pop_bonus[it] if it < a.n_pop_bonus else 0)
                n_cand += 1
            if slot[h] != NO_CODE:
                cands[slot[h]].score += weights[s] * sc
    n_cand = _top(cands, n_cand, a.limit)
    prev = 3.0e38
    for i in range(n_cand):
        out_items[n_out] = cands[i].item
        out_scores[n_out] = cands[i].score
        prev = cands[i].score
        n_out += 1
    # the nodes to fill from: the explicit ones, then the seeds' (deduplicated)
    for nd in range(n_steps):
        if nd < n_nodes:
            node = nodes[nd]
        else:
            d = a.depth - 1 - (nd - n_nodes) // n_seeds
            s = (nd - n_nodes) % n_seeds
            if seeds[s] >= a.n_model:
                continue
            node = a.item_nodes[seeds[s] * a.depth + d]
        if node == NO_CODE:
            continue
        dup = False
        for w in range(n_walk):
            if walk[w] == node:
                dup = True
                break
        if not dup:
            walk[n_walk] = node
            n_walk += 1
    for nd in range(n_walk):
        if n_out == a.limit or walk[nd] >= a.n_rank_nodes:
            break
        for p in range(a.rank_off[walk[nd]], a.rank_off[walk[nd] + 1]):
            if n_out == a.limit:
                break
            it = a.rank_items[p]
            h = (it * HASH_MUL) & mask_h
            while keys[h] != 0 and keys[h] != it + 1:
                h = (h + 1) & mask_h
            if keys[h] != 0:
                continue  # a seed, a neighbour (chosen or refused), or taken
            if _refused(a, it, exclude, n_exclude):
                continue
            # the fallback keys share the table: `limit` more entries fit by `cap`
            keys[h] = it + 1
            slot[h] = NO_CODE - 1
            sc = a.fallback_scale * a.rank_scores[p]
            if sc > prev:
                sc = prev
            prev = sc
            out_items[n_out] = it
            out_scores[n_out] = sc
            n_out += 1
    free(keys)
    free(slot)
    free(cands)
    free(walk)
    return n_out


cdef Shared _shared(const uint32_t[::1] nbr_off, const uint32_t[::1] nbr_items,
                    const float[::1] nbr_scores, const int64_t[::1] rank_off,
                    const uint32_t[::1] rank_items, const float[::1] rank_scores,
                    const uint8_t[::1] allowed, const uint8_t[::1] repeatable,
                    const uint32_t[::1] id_rank, const uint32_t[:, ::1] item_nodes,
                    uint32_t within_node, Py_ssize_t within_depth, Py_ssize_t limit,
                    float fallback_scale, bint block_seeds, float self_weight,
                    const float[::1] pop_bonus) except *:
    cdef Shared a
    cdef Py_ssize_t n_model = id_rank.shape[0]
    if nbr_off.shape[0] != n_model + 1 or item_nodes.shape[0] != n_model:
        raise ValueError("model arrays differ in item count")
    if within_node != NO_CODE and not 0 <= within_depth < item_nodes.shape[1]:
        raise ValueError(f"within_depth {within_depth} outside the node levels")
    if rank_items.shape[0] != rank_scores.shape[0] or rank_off.shape[0] < 1:
        raise ValueError("rank lists do not line up")
    a.nbr_off = &nbr_off[0]
    a.nbr_items = &nbr_items[0] if nbr_items.shape[0] else NULL
    a.nbr_scores = &nbr_scores[0] if nbr_scores.shape[0] else NULL
    a.rank_off = &rank_off[0]
    a.n_rank_nodes = rank_off.shape[0] - 1
    a.rank_items = &rank_items[0] if rank_items.shape[0] else NULL
    a.rank_scores = &rank_scores[0] if rank_scores.shape[0] else NULL
    a.allowed = &allowed[0] if allowed.shape[0] else NULL
    a.n_allowed = allowed.shape[0]
    a.repeatable = &repeatable[0] if repeatable.shape[0] else NULL
    a.n_repeatable = repeatable.shape[0]
    a.id_rank = &id_rank[0] if n_model else NULL
    a.n_model = n_model
    a.item_nodes = &item_nodes[0, 0] if n_model else NULL
    a.depth = item_nodes.shape[1]
    a.within_node = within_node
    a.within_depth = within_depth
    a.limit = limit
    a.fallback_scale = fallback_scale
    a.block_seeds = block_seeds
    a.self_weight = self_weight
    a.n_pop_bonus = 0 if pop_bonus is None else pop_bonus.shape[0]
    a.pop_bonus = &pop_bonus[0] if a.n_pop_bonus else NULL
    return a


cdef inline const uint32_t* _u32p(const uint32_t[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


cdef class Lookup:
    """One resolved lookup (segd.recs.Recommender): the model's arrays and the arguments
    every contact shares, taken apart once so that a lookup is one call without
    argument checks. Built per (model, catalog version, arguments) and cached.

    Per contact: the seeds are the ones given (related, alternatives), or with
    ``personal`` the first ``max_seeds`` of its basket; the excluded items are the ones
    given (sorted), or with ``exclude_bought`` the model's bought list of the contact;
    repeatable items (``repeatable``) are never excluded. The neighbour lists of the
    seeds are merged (scores weighted and summed), filtered (``allowed``, excluded,
    ``within_node``), then filled up from the popularity lists of ``nodes`` and, with
    ``seed_nodes`` and seeds, the seeds' category nodes deepest first; without seeds
    from ``nodes_root``. Scores of the fill-up are ``fallback_scale * count``, never
    above the previous score. Best first, ties by ``id_rank``. ``names[item]`` is the
    item id returned (every item a lookup can return is a model item)."""

    cdef Shared a
    cdef tuple keep  # the arrays the pointers point into
    cdef list names
    cdef const uint32_t* nodes
    cdef Py_ssize_t n_nodes
    cdef const uint32_t* nodes_root
    cdef Py_ssize_t n_nodes_root
    cdef bint seed_nodes
    cdef bint personal
    cdef bint exclude_bought
    cdef const int64_t* basket_off
    cdef Py_ssize_t n_baskets
    cdef const uint32_t* basket_items
    cdef const float* basket_weights
    cdef Py_ssize_t max_seeds
    cdef const int64_t* bought_off
    cdef Py_ssize_t n_bought
    cdef const uint32_t* bought_items
    cdef Py_ssize_t n_bought_items

    def __init__(self, const uint32_t[::1] nbr_off, const uint32_t[::1] nbr_items,
                 const float[::1] nbr_scores, const int64_t[::1] rank_off,
                 const uint32_t[::1] rank_items, const float[::1] rank_scores,
                 const uint32_t[::1] nodes, const uint32_t[::1] nodes_root,
                 bint seed_nodes, const uint8_t[::1] allowed,
                 const uint8_t[::1] repeatable, const uint32_t[::1] id_rank,
                 const uint32_t[:, ::1] item_nodes, uint32_t within_node,
                 Py_ssize_t within_depth, Py_ssize_t limit, float fallback_scale,
                 bint personal, float self_weight, const float[::1] pop_bonus,
                 const int64_t[::1] basket_off, const uint32_t[::1] basket_items,
                 const float[::1] basket_weights, Py_ssize_t max_seeds,
                 bint exclude_bought, const int64_t[::1] bought_off,
                 const uint32_t[::1] bought_items, list names):
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        if basket_off.shape[0] < 1 or basket_items.shape[0] != basket_weights.shape[0]:
            raise ValueError("basket arrays do not line up")
        if basket_off[basket_off.shape[0] - 1] > basket_items.shape[0]:
            raise ValueError("basket offsets beyond the basket items")
        if bought_off.shape[0] < 1 or bought_off[bought_off.shape[0] - 1] > bought_items.shape[0]:
            raise ValueError("bought offsets beyond the bought items")
        if len(names) < id_rank.shape[0]:
            raise ValueError("names do not cover the model's items")
        self.a = _shared(nbr_off, nbr_items, nbr_scores, rank_off, rank_items,
                         rank_scores, allowed, repeatable, id_rank, item_nodes,
                         within_node, within_depth, limit, fallback_scale,
                         not personal, self_weight if personal else 0.0, pop_bonus)
        self.keep = (nbr_off, nbr_items, nbr_scores, rank_off, rank_items, rank_scores,
                     nodes, nodes_root, allowed, repeatable, id_rank, item_nodes,
                     pop_bonus, basket_off, basket_items, basket_weights, bought_off,
                     bought_items)
        self.names = names
        self.nodes = _u32p(nodes)
        self.n_nodes = nodes.shape[0]
        self.nodes_root = _u32p(nodes_root)
        self.n_nodes_root = nodes_root.shape[0]
        self.seed_nodes = seed_nodes
        self.personal = personal
        self.exclude_bought = exclude_bought
        self.basket_off = &basket_off[0]
        self.n_baskets = basket_off.shape[0] - 1
        self.basket_items = _u32p(basket_items)
        self.basket_weights = &basket_weights[0] if basket_weights.shape[0] else NULL
        self.max_seeds = max_seeds
        self.bought_off = &bought_off[0]
        self.n_bought = bought_off.shape[0] - 1
        self.bought_items = _u32p(bought_items)
        self.n_bought_items = bought_items.shape[0]

    @property
    def limit(self) -> int:
        return self.a.limit

    cdef inline Py_ssize_t _one(self, const uint32_t* sp, const float* wp,
                                Py_ssize_t n_seeds, Py_ssize_t cid,
                                const uint32_t* ep, Py_ssize_t n_excl, bint given_excl,
                                uint32_t* out_items, float* out_scores) noexcept nogil:
        """One contact (cid < 0: none) into ``out_*``; the count, -1 without memory."""
        cdef int64_t lo, hi
        if sp == NULL and self.personal and 0 <= cid < self.n_baskets:
            lo = self.basket_off[cid]
            hi = self.basket_off[cid + 1]
            if hi - lo > self.max_seeds:
                hi = lo + self.max_seeds
            n_seeds = hi - lo
            sp = self.basket_items + lo
            wp = self.basket_weights + lo
        if not given_excl and self.exclude_bought and 0 <= cid < self.n_bought:
            lo = self.bought_off[cid]
            ep = self.bought_items + lo
            n_excl = self.bought_off[cid + 1] - lo
        if self.seed_nodes and n_seeds > 0:
            return _rank(&self.a, sp, wp, n_seeds, self.nodes, self.n_nodes, True, ep,
                         n_excl, out_items, out_scores)
        return _rank(&self.a, sp, wp, n_seeds, self.nodes_root, self.n_nodes_root,
                     False, ep, n_excl, out_items, out_scores)

    def run(self, seeds, Py_ssize_t cid, exclude):
        """One lookup: ``[(item_id, score), ...]`` best first. ``seeds``: uint32 item
        codes (None: the contact's basket with ``personal``, else none); ``cid``: the
        contact (-1: none); ``exclude``: sorted uint32 codes to leave out (None: the
        model's bought list of ``cid`` with ``exclude_bought``)."""
        cdef const uint32_t[::1] sv
        cdef const uint32_t[::1] ev
        cdef const uint32_t* sp = NULL
        cdef const uint32_t* ep = NULL
        cdef float* wp = NULL
        cdef Py_ssize_t n_seeds = 0, n_excl = 0, got, i, limit = self.a.limit
        cdef bint given_excl = exclude is not None
        if seeds is not None:
            sv = seeds
            n_seeds = sv.shape[0]
        if given_excl:
            ev = exclude
            n_excl = ev.shape[0]
            ep = _u32p(ev)
        cdef uint32_t* out_items = <uint32_t*> malloc(limit * sizeof(uint32_t))
        cdef float* out_scores = <float*> malloc(limit * sizeof(float))
        if n_seeds:
            sp = &sv[0]
            wp = <float*> malloc(n_seeds * sizeof(float))
        if out_items == NULL or out_scores == NULL or (n_seeds and wp == NULL):
            free(out_items)
            free(out_scores)
            free(wp)
            raise MemoryError()
        with nogil:
            for i in range(n_seeds):
                wp[i] = 1.0
            got = self._one(sp, wp, n_seeds, cid, ep, n_excl, given_excl, out_items,
                            out_scores)
        cdef list out = []
        cdef list names = self.names
        try:
            if got < 0:
                raise MemoryError()
            for i in range(got):
                if out_items[i] >= <uint32_t> len(names):  # (never: model items only)
                    raise ValueError(f"item code {out_items[i]} has no name")
                out.append(_pair(names[out_items[i]], <double> out_scores[i]))
        finally:
            free(out_items)
            free(out_scores)
            free(wp)
        return out

    def many(self, const uint32_t[::1] cids, const int64_t[::1] excl_lo,
             const int64_t[::1] excl_hi, const uint8_t[::1] excl_live,
             const uint32_t[::1] live_items, const uint32_t[::1] seeds=None):
        """``run`` for many contacts at once (a mass send): the seeds are ``seeds`` for
        every contact (a cart), or with ``personal`` each contact's basket. Contact i's
        excluded items are its model bought list, or where ``excl_live[i]``
        ``live_items[excl_lo[i]:excl_hi[i]]``; NO_ITEM cids are contacts without
        history. Returns (items
        uint32[n * limit], scores float32, counts int64[n]): contact i's items are the
        first counts[i] of its ``limit`` slots."""
        cdef Py_ssize_t n = cids.shape[0], i, got, limit = self.a.limit
        cdef const uint32_t* lp = _u32p(live_items)
        cdef bint failed = False, live
        cdef Py_ssize_t n_seeds = 0 if seeds is None else seeds.shape[0]
        cdef const uint32_t* sp = NULL if n_seeds == 0 else _u32p(seeds)
        cdef float* wp = NULL
        if excl_lo.shape[0] != n or excl_hi.shape[0] != n or excl_live.shape[0] != n:
            raise ValueError("exclusion ranges do not cover the contacts")
        for i in range(n):
            if excl_live[i] and not 0 <= excl_lo[i] <= excl_hi[i] <= live_items.shape[0]:
                raise ValueError(f"exclusion range of contact {i} outside its items")
        out_items_arr = np.empty(max(n * limit, 1), dtype=np.uint32)
        out_scores_arr = np.empty(max(n * limit, 1), dtype=np.float32)
        counts_arr = np.zeros(n, dtype=np.int64)
        cdef uint32_t[::1] out_items = out_items_arr
        cdef float[::1] out_scores = out_scores_arr
        cdef int64_t[::1] counts = counts_arr
        if n_seeds:
            wp = <float*> malloc(n_seeds * sizeof(float))
            if wp == NULL:
                raise MemoryError()
        with nogil:
            for i in range(n_seeds):
                wp[i] = 1.0
            for i in range(n):
                live = excl_live[i]
                got = self._one(
                    sp, wp, n_seeds, -1 if cids[i] == NO_CODE else <Py_ssize_t> cids[i],
                    lp + excl_lo[i] if live and lp != NULL else NULL,
                    excl_hi[i] - excl_lo[i] if live else 0, live,
                    &out_items[i * limit], &out_scores[i * limit])
                if got < 0:
                    failed = True
                    break
                counts[i] = got
        free(wp)
        if failed:
            raise MemoryError()
        return out_items_arr, out_scores_arr, counts_arr


# -- RecommendBatch response, encoded here (protobuf wire format) ------------------------

cdef inline Py_ssize_t _varint_len(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _put_varint(uint8_t* p, uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        p[n] = <uint8_t> ((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    p[n] = <uint8_t> v
    return n + 1


def encode_batch_results(list customer_ids, const uint32_t[::1] items,
                         const float[::1] scores, const int64_t[::1] counts,
                         Py_ssize_t limit, const int64_t[::1] name_off,
                         const uint8_t[::1] name_data):
    """The serialized ``segd.v1.RecommendBatchResponse`` of a batch (``Lookup.many``'s
    arrays): per contact i a ``ContactRecommendations`` (field 1) holding
    ``customer_ids[i]`` (1), its item ids (2, ``name_data[name_off[c]:name_off[c+1]]``)
    and its scores (3, packed doubles). One pass to size, one to write: no message
    object per contact."""
    cdef Py_ssize_t n = len(customer_ids), i, j, k, c_len, inner, total = 0
    cdef Py_ssize_t n_names = name_off.shape[0] - 1
    cdef int64_t nlen
    cdef uint32_t it
    cdef const char* cp
    cdef double d
    cdef uint64_t bits64
    cdef int b
    if counts.shape[0] != n:
        raise ValueError("counts do not cover the contacts")
    for i in range(n):
        if not 0 <= counts[i] <= limit or (i + 1) * limit > items.shape[0] \
                or (i + 1) * limit > scores.shape[0]:
            raise ValueError(f"contact {i}: count {counts[i]} outside its slots")
        for j in range(counts[i]):
            if items[i * limit + j] >= n_names:
                raise ValueError(f"item code {items[i * limit + j]} has no name")
    encoded = [s.encode("utf-8") for s in customer_ids]
    sizes = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] inner_len = sizes
    for i in range(n):
        c_len = len(<bytes> encoded[i])
        inner = (1 + _varint_len(c_len) + c_len) if c_len else 0
        k = counts[i]
        for j in range(k):
            it = items[i * limit + j]
            nlen = name_off[it + 1] - name_off[it]
            inner += 1 + _varint_len(nlen) + nlen
        if k:
            inner += 1 + _varint_len(8 * k) + 8 * k
        inner_len[i] = inner
        total += 1 + _varint_len(inner) + inner
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    cdef Py_ssize_t pos = 0
    for i in range(n):
        pos += _put_varint(p + pos, 0x0A)
        pos += _put_varint(p + pos, inner_len[i])
        c_len = len(<bytes> encoded[i])
        if c_len:
            cp = <bytes> encoded[i]
            p[pos] = 0x0A
            pos += 1
            pos += _put_varint(p + pos, c_len)
            memcpy(p + pos, cp, c_len)
            pos += c_len
        k = counts[i]
        for j in range(k):
            it = items[i * limit + j]
            nlen = name_off[it + 1] - name_off[it]
            p[pos] = 0x12
            pos += 1
            pos += _put_varint(p + pos, nlen)
            if nlen:
                memcpy(p + pos, &name_data[name_off[it]], nlen)
            pos += nlen
        if k:
            p[pos] = 0x1A
            pos += 1
            pos += _put_varint(p + pos, 8 * k)
            for j in range(k):
                d = scores[i * limit + j]
                memcpy(&bits64, &d, 8)
                for b in range(8):  # fixed64: little-endian whatever the host
                    p[pos + b] = <uint8_t> (bits64 >> (8 * b))
                pos += 8
    if pos != total:
        raise AssertionError(f"encoded {pos} bytes, sized {total}")
    return out


cdef inline uint64_t _get_varint(const uint8_t* p, Py_ssize_t end,
                                 Py_ssize_t* pos) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef int shift = 0
    while True:
        if pos[0] >= end or shift > 63:
            raise ValueError(f"truncated varint at byte {pos[0]}")
        v |= (<uint64_t> (p[pos[0]] & 0x7F)) << shift
        pos[0] += 1
        if not (p[pos[0] - 1] & 0x80):
            return v
        shift += 7


cdef Py_ssize_t _skip(const uint8_t* p, Py_ssize_t end, Py_ssize_t pos,
                      uint64_t wire) except -1:
    """The position after a field of wire type ``wire`` whose key ends at ``pos``."""
    cdef uint64_t length
    if wire == 0:
        _get_varint(p, end, &pos)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        length = _get_varint(p, end, &pos)
        if length > <uint64_t> (end - pos):
            raise ValueError(f"field of {length} bytes at byte {pos} overruns")
        pos += <Py_ssize_t> length
    elif wire == 5:
        pos += 4
    else:
        raise ValueError(f"unsupported wire type {wire} at byte {pos}")
    if pos > end:
        raise ValueError("field overruns its message")
    return pos


cdef inline double _get_double(const uint8_t* p) noexcept:
    cdef uint64_t bits = 0
    cdef double d
    cdef int b
    for b in range(8):
        bits |= (<uint64_t> p[b]) << (8 * b)
    memcpy(&d, &bits, 8)
    return d


def decode_batch_results(const uint8_t[::1] buf, dict out):
    """Add the contacts of one serialized ``RecommendBatchResponse`` to ``out``:
    ``customer_id -> [(item_id, score), ...]`` (the client's side of
    ``encode_batch_results``: no message object per contact). The message is read by
    ``decode_batch_flat``; a malformed one is a ValueError and adds nothing to ``out``."""
    cdef list customer_ids = [], counts = [], item_ids = [], scores = []
    decode_batch_flat(buf, customer_ids, counts, item_ids, scores)
    cdef Py_ssize_t i, j, pos = 0, n
    for i in range(len(customer_ids)):
        n = counts[i]
        out[customer_ids[i]] = [_pair(item_ids[j], scores[j]) for j in range(pos, pos + n)]
        pos += n
    return out


def decode_batch_flat(const uint8_t[::1] buf, list customer_ids, list counts,
                      list item_ids, list scores):
    """``decode_batch_results`` without an object per contact: appends each contact's
    id to ``customer_ids`` and its number of items to ``counts``, and its item ids and
    scores to ``item_ids`` / ``scores`` (flat, contact after contact). A mass send's
    reply then allocates a handful of containers instead of a list and its tuples per
    contact: nothing for the cycle collector to walk (see SegdClient.
    recommend_batch_arrays). Fields it does not know are skipped; a malformed message is
    a ValueError."""
    cdef Py_ssize_t end = buf.shape[0], pos = 0, stop, cend, n_scores, j, n_items
    cdef uint64_t key, length
    cdef const uint8_t* p = &buf[0] if end else NULL
    cdef object cust
    while pos < end:
        key = _get_varint(p, end, &pos)
        if key != 0x0A:  # not results (field 1, length-delimited)
            pos = _skip(p, end, pos, key & 7)
            continue
        length = _get_varint(p, end, &pos)
        if length > <uint64_t> (end - pos):
            raise ValueError(f"result of {length} bytes at byte {pos} overruns")
        cend = pos + <Py_ssize_t> length
        cust = ""
        n_items = 0
        n_scores = 0
        while pos < cend:
            key = _get_varint(p, cend, &pos)
            if key == 0x0A or key == 0x12:  # customer_id, item_ids
                length = _get_varint(p, cend, &pos)
                if length > <uint64_t> (cend - pos):
                    raise ValueError(f"string of {length} bytes at byte {pos} overruns")
                stop = pos + <Py_ssize_t> length
                text = (<const char*> p)[pos:stop].decode("utf-8")
                if key == 0x0A:
                    cust = text
                else:
                    item_ids.append(text)
                    n_items += 1
                pos = stop
            elif key == 0x1A:  # scores, packed
                length = _get_varint(p, cend, &pos)
                if length > <uint64_t> (cend - pos) or length % 8:
                    raise ValueError(f"packed scores of {length} bytes at byte {pos}")
                for j in range(<Py_ssize_t> (length // 8)):
                    scores.append(_get_double(p + pos + 8 * j))
                n_scores += <Py_ssize_t> (length // 8)
                pos += <Py_ssize_t> length
            elif key == 0x19:  # one score, unpacked
                if cend - pos < 8:
                    raise ValueError(f"truncated score at byte {pos}")
                scores.append(_get_double(p + pos))
                n_scores += 1
                pos += 8
            else:
                pos = _skip(p, cend, pos, key & 7)
        if n_items != n_scores:
            raise ValueError(f"{n_items} item ids but {n_scores} scores")
        customer_ids.append(cust)
        counts.append(n_items)


def pair_lists(list item_ids, const float[::1] scores, const int64_t[::1] counts):
    """``[[(item_id, score), ...] per contact]`` of a flat batch (``counts[i]`` pairs
    for contact i, contact after contact), the tuples untracked (see ``_pair``)."""
    cdef Py_ssize_t n = counts.shape[0], i, j, pos = 0, total = 0
    for i in range(n):
        if counts[i] < 0:
            raise ValueError(f"count {counts[i]} of contact {i}")
        total += counts[i]
    if total != len(item_ids) or total != scores.shape[0]:
        raise ValueError(
            f"{total} pairs counted, {len(item_ids)} item ids, {scores.shape[0]} scores")
    cdef list out = [], one
    for i in range(n):
        one = []
        for j in range(pos, pos + counts[i]):
            one.append(_pair(item_ids[j], <double> scores[j]))
        pos += counts[i]
        out.append(one)
    return out
