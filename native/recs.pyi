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

ITEM_CHUNK: int

def pack_baskets(items: Items, bits: Bits) -> npt.NDArray[np.uint32]: ...
def transpose_pair(
    offsets: Offsets,
    packed: npt.NDArray[np.uint32],  # item << 3 | bits
    w_a: Floats,  # float32[8]
    w_b: Floats,
    n_items: int,
) -> tuple[
    Offsets, npt.NDArray[np.uint32], Bits, npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]: ...  # fmt: skip
def cooccur_pair(
    offsets: Offsets,
    packed: npt.NDArray[np.uint32],
    w_a: Floats,
    w_b: Floats,
    item_off: Offsets,
    item_contacts: npt.NDArray[np.uint32],
    item_bits: Bits,
    norms_a: npt.NDArray[np.float64],
    norms_b: npt.NDArray[np.float64],
    id_rank: npt.NDArray[np.uint32],
    k: int,
    shrink: float,
    next_chunk: npt.NDArray[np.int64],  # INOUT: the shared chunk counter
    counts: npt.NDArray[np.uint32],  # OUT [2, n_items]
    slot_items: npt.NDArray[np.uint32],  # OUT [2, n_items * k]
    slot_scores: Floats,  # OUT [2, n_items * k]
) -> None: ...
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

class Lookup:
    """One resolved lookup: the model's arrays and the shared arguments."""

    def __init__(
        self,
        nbr_off: npt.NDArray[np.uint32],
        nbr_items: Items,
        nbr_scores: Floats,
        rank_off: Offsets,
        rank_items: Items,
        rank_scores: Floats,
        nodes: npt.NDArray[np.uint32],
        nodes_root: npt.NDArray[np.uint32],
        seed_nodes: bool,
        allowed: npt.NDArray[np.uint8],  # empty: every item allowed
        repeatable: npt.NDArray[np.uint8],  # empty: none
        id_rank: npt.NDArray[np.uint32],
        item_nodes: npt.NDArray[np.uint32],  # uint32[n_items, MAX_DEPTH]
        within_node: int,
        within_depth: int,
        limit: int,
        fallback_scale: float,
        personal: bool,
        self_weight: float,
        pop_bonus: Floats | None,
        basket_off: Offsets,
        basket_items: Items,
        basket_weights: Floats,
        max_seeds: int,
        exclude_bought: bool,
        bought_off: Offsets,
        bought_items: Items,
        names: list[str],
    ) -> None: ...
    @property
    def limit(self) -> int: ...
    def run(
        self, seeds: Items | None, cid: int, exclude: Items | None
    ) -> list[tuple[str, float]]: ...
    def many(
        self,
        cids: npt.NDArray[np.uint32],  # NO_ITEM: unknown contact
        excl_lo: Offsets,
        excl_hi: Offsets,
        excl_live: npt.NDArray[np.uint8],
        live_items: Items,
        seeds: Items | None = ...,
    ) -> tuple[Items, Floats, npt.NDArray[np.int64]]: ...

def encode_batch_results(
    customer_ids: list[str],
    items: Items,
    scores: Floats,
    counts: npt.NDArray[np.int64],
    limit: int,
    name_off: Offsets,
    name_data: npt.NDArray[np.uint8],
) -> bytes: ...
def decode_batch_results(
    buf: bytes, out: dict[str, list[tuple[str, float]]]
) -> dict[str, list[tuple[str, float]]]: ...
def decode_batch_flat(
    buf: bytes,
    customer_ids: list[str],  # INOUT: appended
    counts: list[int],  # INOUT
    item_ids: list[str],  # INOUT
    scores: list[float],  # INOUT
) -> None: ...
def pair_lists(
    item_ids: list[str], scores: Floats, counts: Offsets
) -> list[list[tuple[str, float]]]: ...
