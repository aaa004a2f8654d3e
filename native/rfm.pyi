"""Typed face of native/rfm.pyx: RFM rollups of the order log, scores, named segments,
transitions.

Each raises ValueError on mismatched lengths or out-of-range ids (see rfm.pyx).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # const cid_t[::1]
Seconds = npt.NDArray[np.uint32]  # sec_t[::1]: UTC seconds
Codes = npt.NDArray[np.uint32]  # code_t[::1], NO_CODE (0xFFFFFFFF) = NULL
Floats = npt.NDArray[np.float64]
Counts = npt.NDArray[np.uint32]
Scores = npt.NDArray[np.uint8]
Bytes = npt.NDArray[np.uint8]
Dense = npt.NDArray[np.void]  # acc_dtype() records, one per buyer

ACC_BYTES: int
MAX_GENERATION: int

def acc_dtype() -> np.dtype[
    Any
]: ...  # revenue_win f8, last u4, orders_all, orders_win, seen u4
def rollup(
    cids: Cids,
    ts: Seconds,  # same length as cids, ascending
    amount: Floats | None,  # covers r1; NaN = NULL
    codes: Codes | None,  # order_id codes covering r1; NO_CODE = an order of its own
    r0: int,  # window [r0, r1) of rows
    r1: int,
    n_contacts: int,
    n_codes: int,
    acc_bytes: Bytes,  # INOUT: n_contacts x ACC_BYTES accumulators, all zero on entry
    owner: Cids,  # INOUT: n_codes, kept between calls
    state: Counts,  # INOUT: n_codes, kept between calls (all zero before the first)
    generation: int,  # 1..MAX_GENERATION, a new one per call
    buyer_bits: npt.NDArray[np.uint64],  # INOUT: n_contacts bits, all zero on entry
    want: npt.NDArray[np.uint64] | None = None,  # only these contacts' rows (bitset)
    start: int = 0,  # rows before it skipped (0 <= start <= r0)
) -> int: ...  # number of buyers
def aggregate_buyers(
    orders_count: Counts,  # the per-contact aggregates (segd.aggregates), >= n_contacts
    first_s: Seconds,
    last_s: Seconds,
    revenue: Floats,
    n_contacts: int,
    lo_s: int,  # window rows: lo_s <= ts < hi_s (window_bounds)
    hi_s: int,
    as_of: float,
    buyers_out: Cids,  # OUT: ascending buyers (room for n_contacts)
    dense_out: Dense,  # OUT: their records; mixed ones zero but for seen (2, 3)
    mixed_pos: Counts,  # OUT: record positions of the mixed buyers
    mixed_bits: npt.NDArray[np.uint64],  # INOUT: all zero on entry; mixed buyers set
    days_out: Counts,  # OUT: scored buyers' recency days, frequency, monetary
    freq_out: Counts,
    mon_out: Floats,
) -> tuple[int, int, int, int]: ...  # buyers, mixed, mixed with orders >= as_of, values
def patch_mixed(
    dense: Dense,  # INOUT: aggregate_buyers' records of the buyers
    buyers: Cids,
    mixed_pos: Counts,  # the mixed records' positions (ascending)
    orders_count: Counts,  # aggregates over the contacts (>= the buyers' cids)
    last_s: Seconds,
    rolled: Cids,  # rollup + take_buyers over the mixed contacts
    rolled_dense: Dense,
    mixed_bits: npt.NDArray[np.uint64],  # INOUT: cleared
    as_of: float,
    window_start: float,
    n_val: int,  # value entries aggregate_buyers wrote
    days_out: Counts,  # INOUT: the scored mixed buyers' values appended
    freq_out: Counts,
    mon_out: Floats,
) -> int: ...  # value entries written in all
def take_buyers(
    acc_bytes: Bytes,  # INOUT: zeroed where read
    n_contacts: int,
    buyer_bits: npt.NDArray[np.uint64],  # INOUT: cleared
    n_buyers: int,  # rollup's answer
) -> tuple[Cids, Dense]: ...  # ascending buyers and their accumulators
def buyer_values(
    dense: Dense,  # INOUT: revenue rounded to 6 decimals
    as_of: float,
    window_start: float,
    days_out: Counts,
    freq_out: Counts,
    mon_out: Floats,
) -> int: ...  # number of scored buyers written to the outputs
def score_buyers(
    dense: Dense,
    buyers: Cids,  # ascending, one per dense record
    as_of: float,
    window_start: float,
    r_cuts: Floats,
    f_cuts: Floats,
    m_cuts: Floats,
    r_mode: int,  # 0..3, see rfm.pyx
    fm_mode: int,
    scale: int,  # 2..10
    r_lut: Scores,  # R score per recency day
    f_lut: Scores,  # F score per frequency
    seg_lut: Scores,  # [set, orders, days] -> segment id; shape (0, 1, 1): walk the rules
    # [set, rule, (orders_lo, orders_hi, days_lo, days_hi)]
    rules: npt.NDArray[np.int64],
    rule_segment: Scores,  # [set, rule]
    rule_count: npt.NDArray[np.int64],  # rules per set
    group_of_code: Scores,  # rule set of each group code
    group_codes: Codes,  # per contact
    grouped: bool,
    r: Scores,  # OUT (0 on entry), per contact
    f: Scores,
    m: Scores,
    segment: Scores,  # OUT (255 on entry)
    code: npt.NDArray[np.uint16],  # OUT (0 on entry)
    code_hist: npt.NDArray[np.int64],  # OUT (zero on entry): 4096 counts
    seg_hist: npt.NDArray[np.int64],  # OUT (zero on entry): 256 counts
    values: tuple[npt.NDArray[np.int32], Counts, Floats, Counts] | None,
) -> int: ...  # number of scored contacts
def select_positions(
    values: Floats, positions: Any
) -> Floats: ...  # np.sort(values)[positions]
def transitions(
    old_cands: Cids,  # ascending: every contact with a code or segment in the old
    new_cands: Cids,  # ... and in the new computation
    old_code: npt.NDArray[np.uint16],
    old_seg: Scores,
    old_lut: Scores,  # 256: segment id -> the state's id
    new_code: npt.NDArray[np.uint16],
    new_seg: Scores,
    new_lut: Scores,
) -> tuple[
    Cids, npt.NDArray[np.uint16], npt.NDArray[np.uint16], Scores, Scores
]: ...  # cid, from_code, to_code, from_seg, to_seg
def small_histogram(
    values: npt.NDArray[np.uint8] | npt.NDArray[np.uint16] | npt.NDArray[np.uint32],
    minlength: int,
) -> npt.NDArray[np.int64]: ...  # counts per value, like np.bincount
