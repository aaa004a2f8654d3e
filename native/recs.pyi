"""Typed face of native/recs.pyx: recommendation model kernels and the lookup."""

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # const cid_t[::1]
Codes = npt.NDArray[np.uint32]  # const code_t[::1], NO_CODE (0xFFFFFFFF) = NULL
Items = npt.NDArray[np.uint32]  # item codes
Offsets = npt.NDArray[np.int64]  # CSR offsets, int64[n + 1]
Bits = npt.NDArray[np.uint8]  # event bits: 1 order, 2 cart, 4 view
Floats = npt.NDArray[np.float32]

NO_ITEM: int
MAX_DEPTH: int

def basket_count(
    cid: Cids, item: Codes, r0: int, r1: int, counts: Offsets
) -> None: ...  # counts[c + 1] += rows (INOUT)
def basket_fill(
    cid: Cids,
    item: Codes,
    r0: int,
    r1: int,
    bit: int,
    offsets: Offsets,
    cursor: Offsets,  # INOUT
    out_item: Items,  # OUT
    out_bits: Bits,  # OUT
) -> None: ...
def basket_dedup(
    offsets: Offsets,  # INOUT
    items: Items,  # INOUT (compacted)
    bits: Bits,  # INOUT (compacted)
    n_items: int,
    cap: int,
) -> npt.NDArray[np.uint32]: ...  # uint32[3, n_items]: distinct contacts per bit
def transpose(
    offsets: Offsets,
    items: Items,
    bits: Bits,
    weight_of_bits: Floats,  # float32[8]
    n_items: int,
) -> tuple[Offsets, Items, Floats, npt.NDArray[np.float64]]: ...
def cooccur(
    offsets: Offsets,
    items: Items,
    bits: Bits,
    weight_of_bits: Floats,
    item_off: Offsets,
    item_contacts: npt.NDArray[np.uint32],
    item_weights: Floats,
    norms: npt.NDArray[np.float64],
    id_rank: npt.NDArray[np.uint32],
    k: int,
    shrink: float,
    min_score: float = ...,
) -> tuple[npt.NDArray[np.uint32], Items, Floats]: ...
def contact_sets(
    cid: Cids, item: Codes, r0: int, r1: int, n_contacts: int
) -> tuple[Offsets, Items]: ...
def phrase_pairs(
    s_off: npt.NDArray[np.uint32],
    s_rows: npt.NDArray[np.uint32],
    s_ts: npt.NDArray[np.uint32],
    s_phrase: Codes,
    e_off: npt.NDArray[np.uint32],
    e_rows: npt.NDArray[np.uint32],
    e_ts: npt.NDArray[np.uint32],
    e_item: Codes,
    span_s: int,
    max_pairs: int,
) -> tuple[npt.NDArray[np.uint32], Items]: ...
def recommend(
    nbr_off: npt.NDArray[np.uint32],
    nbr_items: Items,
    nbr_scores: Floats,
    seeds: Items,
    seed_weights: Floats,
    rank_off: Offsets,
    rank_items: Items,
    rank_scores: Floats,
    nodes: npt.NDArray[np.uint32],
    allowed: npt.NDArray[np.uint8],  # empty: every item allowed
    exclude: Items,  # sorted
    id_rank: npt.NDArray[np.uint32],
    item_nodes: npt.NDArray[np.uint32],  # uint32[n_items, MAX_DEPTH]
    within_node: int,
    within_depth: int,
    limit: int,
    fallback_scale: float,
    block_seeds: bool = ...,
    self_weight: float = ...,
    seed_nodes: bool = ...,
    pop_bonus: Floats | None = ...,
) -> tuple[Items, Floats]: ...
def recommend_many(
    nbr_off: npt.NDArray[np.uint32],
    nbr_items: Items,
    nbr_scores: Floats,
    seeds: Items,  # shared seeds (not personal)
    seed_weights: Floats,
    cids: npt.NDArray[np.uint32],  # NO_ITEM: unknown contact
    personal: bool,
    basket_off: Offsets,
    basket_items: Items,
    basket_weights: Floats,
    max_seeds: int,
    rank_off: Offsets,
    rank_items: Items,
    rank_scores: Floats,
    nodes: npt.NDArray[np.uint32],
    nodes_root: npt.NDArray[np.uint32],
    seed_nodes: bool,
    allowed: npt.NDArray[np.uint8],
    repeatable: npt.NDArray[np.uint8],  # empty: none
    excl_lo: Offsets,
    excl_hi: Offsets,
    excl_live: npt.NDArray[np.uint8],
    bought_items: Items,
    live_items: Items,
    id_rank: npt.NDArray[np.uint32],
    item_nodes: npt.NDArray[np.uint32],
    within_node: int,
    within_depth: int,
    limit: int,
    fallback_scale: float,
    self_weight: float,
    pop_bonus: Floats | None = ...,
) -> tuple[Items, Floats, npt.NDArray[np.int64]]: ...
