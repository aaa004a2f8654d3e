"""Typed face of native/rfm.pyx: RFM rollups of the order log, scores, named segments.

Each raises ValueError on mismatched lengths or out-of-range ids (see rfm.pyx).
"""

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # const cid_t[::1]
Seconds = npt.NDArray[np.uint32]  # sec_t[::1]: UTC seconds
Codes = npt.NDArray[np.uint32]  # code_t[::1], NO_CODE (0xFFFFFFFF) = NULL
Floats = npt.NDArray[np.float64]
Counts = npt.NDArray[np.uint32]
Scores = npt.NDArray[np.uint8]
Rows = npt.NDArray[np.uint32]  # row numbers

def window_rollup(
    cids: Cids,
    ts: Seconds,  # same length as cids, ascending
    amount: Floats | None,  # covers r1; NaN = NULL
    codes: Codes | None,  # order_id codes covering r1; NO_CODE = an order of its own
    r0: int,  # window [r0, r1) of rows
    r1: int,
    n_contacts: int,
    n_codes: int,
    # -> last order, orders before r1, orders in the window, revenue in it, spill rows
) -> tuple[Seconds, Counts, Counts, Floats, Rows]: ...
def scored_values(
    last: Seconds,
    orders_all: Counts,
    frequency: Counts,
    revenue: Floats,  # INOUT: rounded to 6 decimals in place
    as_of: float,
    window_start: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Floats]: ...
def score(
    last: Seconds,
    orders_all: Counts,
    frequency: Counts,
    monetary: Floats,
    as_of: float,
    window_start: float,
    r_cuts: Floats,
    f_cuts: Floats,
    m_cuts: Floats,
    r_mode: int,  # 0..3, see rfm.pyx
    fm_mode: int,
    scale: int,  # 2..10
) -> tuple[Scores, Scores, Scores, npt.NDArray[np.int32]]: ...  # r, f, m, recency days
def classify(
    orders_all: Counts,
    last: Seconds,
    as_of: float,
    rules: npt.NDArray[
        np.int64
    ],  # [set, rule, (orders_lo, orders_hi, days_lo, days_hi)]
    rule_segment: npt.NDArray[np.uint8],  # [set, rule]
    rule_count: npt.NDArray[np.int64],  # rules per set
    group_of_code: npt.NDArray[np.uint8],  # rule set of each group code
    group_codes: Codes,  # per contact
    grouped: bool,
) -> Scores: ...  # segment id per contact, 255 = none
def small_histogram(
    values: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], minlength: int
) -> npt.NDArray[np.int64]: ...  # counts per value, like np.bincount
