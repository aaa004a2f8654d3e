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

Lookup: ``recommend`` merges the neighbour lists of seed items, filters them (allowed
mask, excluded codes, category node) and fills up from popularity lists of category
nodes. Every kernel runs without the GIL.
"""

from libc.math cimport sqrt
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, calloc, qsort
from libc.string cimport memset

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
    cdef Py_ssize_t l, r, m
    cdef float ts
    cdef uint32_t tr, ti
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < n and _better(hs[m], hr[m], hs[l], hr[l]):
            m = l
        if r < n and _better(hs[m], hr[m], hs[r], hr[r]):
            m = r
        if m == i:
            return
        ts = hs[i]; hs[i] = hs[m]; hs[m] = ts
        tr = hr[i]; hr[i] = hr[m]; hr[m] = tr
        ti = hi[i]; hi[i] = hi[m]; hi[m] = ti
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
        free(hs); free(hr); free(hi)
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
                    hs[h] = s; hr[h] = id_rank[it]; hi[h] = it
                    h += 1
                    if h == k:  # heapify
                        for j in range(k // 2 - 1, -1, -1):
                            _sift_down(hs, hr, hi, k, j)
                elif _better(s, id_rank[it], hs[0], hr[0]):
                    hs[0] = s; hr[0] = id_rank[it]; hi[0] = it
                    _sift_down(hs, hr, hi, k, 0)
            if h < k:
                for j in range(h // 2 - 1, -1, -1):
                    _sift_down(hs, hr, hi, h, j)
            # pop worst first into the tail of this item's slots: best ends up first
            for j in range(h - 1, -1, -1):
                out_items[total + j] = hi[0]
                out_scores[total + j] = hs[0]
                hs[0] = hs[j]; hr[0] = hr[j]; hi[0] = hi[j]
                _sift_down(hs, hr, hi, j, 0)
            total += h
            out_off[i + 1] = <uint32_t> total
    free(hs); free(hr); free(hi)
    return out_off_arr, out_items_arr[:total].copy(), out_scores_arr[:total].copy()


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
    cdef Py_ssize_t l, r, m
    cdef Cand t
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < n and _cand_worse(&h[l], &h[m]):
            m = l
        if r < n and _cand_worse(&h[r], &h[m]):
            m = r
        if m == i:
            return
        t = h[i]; h[i] = h[m]; h[m] = t
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
        free(keys); free(slot); free(cands); free(walk)
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
    free(keys); free(slot); free(cands); free(walk)
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


_EMPTY_U8 = np.zeros(0, dtype=np.uint8)


def recommend(const uint32_t[::1] nbr_off, const uint32_t[::1] nbr_items,
              const float[::1] nbr_scores,
              const uint32_t[::1] seeds, const float[::1] seed_weights,
              const int64_t[::1] rank_off, const uint32_t[::1] rank_items,
              const float[::1] rank_scores, const uint32_t[::1] nodes,
              const uint8_t[::1] allowed, const uint32_t[::1] exclude,
              const uint32_t[::1] id_rank, const uint32_t[:, ::1] item_nodes,
              uint32_t within_node, Py_ssize_t within_depth,
              Py_ssize_t limit, float fallback_scale, bint block_seeds=True,
              float self_weight=0, bint seed_nodes=False,
              const float[::1] pop_bonus=None):
    """The ``limit`` best items: neighbours of ``seeds`` (scores weighted and summed),
    then the popularity lists of ``nodes`` in order (score ``fallback_scale * count``,
    never above the previous score). An item is kept when ``allowed[item]`` (an empty
    mask allows every item), it is not in ``exclude`` (sorted), and, unless
    ``within_node`` is NO_ITEM, ``item_nodes[item, within_depth] == within_node``.
    With ``block_seeds`` the seeds themselves are never returned; without, a seed is a
    candidate like any other (it scores through the other seeds' lists, and its own
    weight times ``self_weight``: the pull of an item the contact looked at).
    With ``seed_nodes`` the fallback walks, after ``nodes``, the category nodes of the
    seeds deepest first (their leaves, then parents, ..., the root).
    ``pop_bonus[item]`` (optional) is added once to each neighbour candidate.
    Returns (items uint32, scores float32), best first, ties by ``id_rank``."""
    if seed_weights.shape[0] != seeds.shape[0]:
        raise ValueError("seeds and seed_weights differ in length")
    if limit <= 0:
        return np.empty(0, np.uint32), np.empty(0, np.float32)
    cdef Shared a = _shared(nbr_off, nbr_items, nbr_scores, rank_off, rank_items,
                            rank_scores, allowed, _EMPTY_U8, id_rank, item_nodes,
                            within_node, within_depth, limit, fallback_scale,
                            block_seeds, self_weight, pop_bonus)
    out_items_arr = np.empty(limit, dtype=np.uint32)
    out_scores_arr = np.empty(limit, dtype=np.float32)
    cdef uint32_t[::1] out_items = out_items_arr
    cdef float[::1] out_scores = out_scores_arr
    cdef Py_ssize_t n_out
    cdef const uint32_t* sp = &seeds[0] if seeds.shape[0] else NULL
    cdef const float* wp = &seed_weights[0] if seeds.shape[0] else NULL
    cdef const uint32_t* np_ = &nodes[0] if nodes.shape[0] else NULL
    cdef const uint32_t* ep = &exclude[0] if exclude.shape[0] else NULL
    with nogil:
        n_out = _rank(&a, sp, wp, seeds.shape[0], np_, nodes.shape[0], seed_nodes,
                      ep, exclude.shape[0], &out_items[0], &out_scores[0])
    if n_out < 0:
        raise MemoryError()
    return out_items_arr[:n_out], out_scores_arr[:n_out]


def recommend_many(const uint32_t[::1] nbr_off, const uint32_t[::1] nbr_items,
                   const float[::1] nbr_scores,
                   const uint32_t[::1] seeds, const float[::1] seed_weights,
                   const uint32_t[::1] cids, bint personal,
                   const int64_t[::1] basket_off, const uint32_t[::1] basket_items,
                   const float[::1] basket_weights, Py_ssize_t max_seeds,
                   const int64_t[::1] rank_off, const uint32_t[::1] rank_items,
                   const float[::1] rank_scores, const uint32_t[::1] nodes,
                   const uint32_t[::1] nodes_root, bint seed_nodes,
                   const uint8_t[::1] allowed, const uint8_t[::1] repeatable,
                   const int64_t[::1] excl_lo, const int64_t[::1] excl_hi,
                   const uint8_t[::1] excl_live, const uint32_t[::1] bought_items,
                   const uint32_t[::1] live_items,
                   const uint32_t[::1] id_rank, const uint32_t[:, ::1] item_nodes,
                   uint32_t within_node, Py_ssize_t within_depth,
                   Py_ssize_t limit, float fallback_scale, float self_weight,
                   const float[::1] pop_bonus=None):
    """``recommend`` for many contacts at once (a mass send). Per contact i: the seeds
    are ``seeds`` (shared), or with ``personal`` the first ``max_seeds`` of its basket
    (``basket_*`` at ``cids[i]``; NO_ITEM or beyond the baskets: none); the excluded
    items are ``[excl_lo[i], excl_hi[i])`` of ``bought_items`` (or of ``live_items``
    where ``excl_live[i]``), sorted, repeatable items (``repeatable``) kept. Fallback
    nodes: ``nodes`` then the seeds' categories when ``seed_nodes`` and there are
    seeds, else ``nodes_root``. Returns (items uint32[n * limit], scores float32,
    counts int64[n]): contact i's items are the first counts[i] of its ``limit`` slots."""
    cdef Py_ssize_t n = cids.shape[0], i, k, n_seeds, got
    cdef int64_t lo, hi
    cdef uint32_t c
    cdef const uint32_t* sp
    cdef const float* wp
    cdef const uint32_t* ep
    cdef bint failed = False
    if seed_weights.shape[0] != seeds.shape[0]:
        raise ValueError("seeds and seed_weights differ in length")
    if excl_lo.shape[0] != n or excl_hi.shape[0] != n or excl_live.shape[0] != n:
        raise ValueError("exclusion ranges do not cover the contacts")
    if basket_off.shape[0] < 1 or basket_items.shape[0] != basket_weights.shape[0]:
        raise ValueError("basket arrays do not line up")
    for i in range(n):
        k = bought_items.shape[0] if not excl_live[i] else live_items.shape[0]
        if not 0 <= excl_lo[i] <= excl_hi[i] <= k:
            raise ValueError(f"exclusion range of contact {i} outside its items")
    cdef Shared a = _shared(nbr_off, nbr_items, nbr_scores, rank_off, rank_items,
                            rank_scores, allowed, repeatable, id_rank, item_nodes,
                            within_node, within_depth, limit, fallback_scale,
                            not personal, self_weight if personal else 0.0, pop_bonus)
    out_items_arr = np.empty(max(n * limit, 1), dtype=np.uint32)
    out_scores_arr = np.empty(max(n * limit, 1), dtype=np.float32)
    counts_arr = np.zeros(n, dtype=np.int64)
    cdef uint32_t[::1] out_items = out_items_arr
    cdef float[::1] out_scores = out_scores_arr
    cdef int64_t[::1] counts = counts_arr
    cdef Py_ssize_t n_baskets = basket_off.shape[0] - 1
    cdef const uint32_t* bp = &bought_items[0] if bought_items.shape[0] else NULL
    cdef const uint32_t* lp = &live_items[0] if live_items.shape[0] else NULL
    cdef const uint32_t* np_ = &nodes[0] if nodes.shape[0] else NULL
    cdef const uint32_t* nrp = &nodes_root[0] if nodes_root.shape[0] else NULL
    cdef const uint32_t* bip = &basket_items[0] if basket_items.shape[0] else NULL
    cdef const float* bwp = &basket_weights[0] if basket_weights.shape[0] else NULL
    if limit <= 0:
        return out_items_arr[:0], out_scores_arr[:0], counts_arr
    with nogil:
        for i in range(n):
            sp = &seeds[0] if seeds.shape[0] else NULL
            wp = &seed_weights[0] if seeds.shape[0] else NULL
            n_seeds = seeds.shape[0]
            if personal:
                c = cids[i]
                n_seeds = 0
                if c != NO_CODE and c < n_baskets:
                    lo = basket_off[c]
                    hi = basket_off[c + 1]
                    if hi - lo > max_seeds:
                        hi = lo + max_seeds
                    n_seeds = hi - lo
                    sp = bip + lo
                    wp = bwp + lo
            ep = (lp if excl_live[i] else bp)
            if ep != NULL:
                ep = ep + excl_lo[i]
            if seed_nodes and n_seeds > 0:
                got = _rank(&a, sp, wp, n_seeds, np_, nodes.shape[0], True, ep,
                            excl_hi[i] - excl_lo[i], &out_items[i * limit],
                            &out_scores[i * limit])
            else:
                got = _rank(&a, sp, wp, n_seeds, nrp, nodes_root.shape[0], False, ep,
                            excl_hi[i] - excl_lo[i], &out_items[i * limit],
                            &out_scores[i * limit])
            if got < 0:
                failed = True
                break
            counts[i] = got
    if failed:
        raise MemoryError()
    return out_items_arr, out_scores_arr, counts_arr
