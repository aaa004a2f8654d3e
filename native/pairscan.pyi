"""Typed face of native/pairscan.pyx: event conditions for (contact, moment) pairs."""

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from segd.native.contactindex import Slots

Cids = npt.NDArray[np.uint32]  # cid_t[::1]
Seconds = npt.NDArray[np.uint32]  # sec_t[::1]: UTC seconds, non-decreasing
Rows = npt.NDArray[np.uint32]  # row_t[::1]
Codes = npt.NDArray[np.uint32]  # code_t[::1], NO_CODE (0xFFFFFFFF) = NULL
Mask = npt.NDArray[np.uint8]  # uint8[::1], non-zero = holds
Bounds = npt.NDArray[np.int64]  # int64[::1]: whole seconds
Floats = npt.NDArray[np.float64]

NO_EVENTS: int  # 0: the pair's contact has no matching event in its window
QUALIFIES: int  # 1: matching events whose count (and sum) qualify
FAILS: int  # 2: matching events that do not qualify

class PairLog:
    """One event log, its contact-major index and its tail index; ValueError on
    inconsistent shapes when built. Reused by every condition until the log changes."""

    def __init__(
        self,
        cid: Cids,
        ts: Seconds,  # same length as cid
        slots: Slots,  # EventLog.contact_index: each contact's slot of rows
        rows: Rows,  # the index's rows, ascending per slot
        limit: int,  # row_t: the index covers rows [0, limit)
        tail_cids: Cids,  # rows [limit, n) sorted by (contact, row): their contacts
        tail_rows: Rows,  # ... and the rows
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...

class PairSource:
    """A PairLog under one condition's row filters; ValueError on bad shapes."""

    def __init__(
        self,
        log: PairLog,
        *,
        # at most 16; a third item: the column's contact-major copy (or None)
        code_filters: Iterable[
            tuple[Codes, Mask] | tuple[Codes, Mask, Codes | None]
        ] = (),
        amount: Floats | None = None,  # the amount column; NaN = NULL
        amount_intervals: Iterable[tuple[Floats, Floats]] = (),  # groups, ANDed
    ) -> None: ...

def event_pairs(
    events: PairSource,
    cids: Cids,  # one contact per pair
    lo_s: Bounds,  # window [lo_s[i], hi_s[i]) of event time per pair
    hi_s: Bounds,
    count_min: int = 1,  # uint64
    count_max: int = 2**64 - 1,  # uint64
    *,
    sum_range: tuple[float, float] | None = None,  # (lo, hi) of summed amounts
    distinct_codes: Codes | None = None,  # count distinct codes (NULL rows each count)
    then: PairSource | None = None,  # "then no" events
    within_s: int = 0,  # ... within this many seconds after the event (uint64)
) -> npt.NDArray[np.uint8]: ...  # NO_EVENTS / QUALIFIES / FAILS per pair
def tail_index(
    cid: Cids,  # the log's contact column
    limit: int,  # row_t: first unindexed row
    n: int,  # rows in the log
) -> tuple[Cids, Rows]: ...  # rows [limit, n) sorted by (contact, row)
def interval_pairs(
    values: npt.NDArray[np.int8 | np.int64 | np.uint32 | np.float64],
    lo: Floats,  # closed intervals [lo[k], hi[k]]
    hi: Floats,
    cids: Cids,
    valid: npt.NDArray[np.uint8] | None = None,  # per contact; 0 = NULL
) -> npt.NDArray[np.uint8]: ...  # per cid: valid and values[c] in an interval
def ratio_pairs(
    num: Floats,
    den: npt.NDArray[np.uint32],  # 0 = NULL
    lo: Floats,
    hi: Floats,
    cids: Cids,
) -> npt.NDArray[np.uint8]: ...  # per cid: num[c] / den[c] in an interval
def code_mask_pairs(
    codes: Codes,
    mask: Mask,
    cids: Cids,
) -> npt.NDArray[np.uint8]: ...  # per cid: codes[c] not NULL and mask[codes[c]]

AND: int  # PairProgram node: AND of the args[i] operands that follow
OR: int  # ... OR of the args[i] operands that follow
NOT: int  # ... NOT of the one operand that follows
LEAF: int  # ... leaf args[i]

class PairProgram:
    """A boolean expression over leaf conditions decided for many contacts at one
    moment in one nogil pass (a live segment's conjunction after its static pass)."""

    @property
    def n_leaves(self) -> int: ...
    def add_interval(
        self,
        values: npt.NDArray[np.int8 | np.int64 | np.uint32 | np.float64],
        lo: Iterable[float] | Floats,  # closed intervals [lo[k], hi[k]]
        hi: Iterable[float] | Floats,
        valid: Mask | None = None,  # per contact; 0 = NULL
        negate: bool = False,
    ) -> int: ...  # the leaf's index
    def add_ratio(
        self,
        num: Floats,
        den: npt.NDArray[np.uint32],  # 0 = NULL
        lo: Iterable[float] | Floats,
        hi: Iterable[float] | Floats,
        negate: bool = False,
    ) -> int: ...
    def add_codes(self, codes: Codes, mask: Mask, negate: bool = False) -> int: ...
    def add_const(self, value: bool) -> int: ...
    def add_event(
        self,
        events: PairSource,
        lo_s: int,  # the window [lo_s, hi_s) of event time
        hi_s: int,
        count_min: int = 1,
        count_max: int = 2**64 - 1,
        *,
        sum_range: tuple[float, float] | None = None,
        distinct_codes: Codes | None = None,
        then: PairSource | None = None,
        within_s: int = 0,
        zero_qualifies: bool = False,  # NO_EVENTS holds too
        memo_key: int = -1,  # >= 0: decided once per contact in run_programs
    ) -> int: ...
    def set_memo_key(self, leaf: int, key: int) -> None: ...  # -1: none
    def relink_event(
        self,
        leaf: int,
        events: PairSource,
        then: PairSource | None = None,
        distinct_codes: Codes | None = None,
    ) -> None: ...
    def set_tree(
        self, ops: Iterable[int], args: Iterable[int]
    ) -> None: ...  # prefix order; ValueError when malformed
    def run(self, cids: Cids) -> npt.NDArray[np.uint8]: ...  # 1 = holds, per cid

def run_programs(
    programs: Iterable[PairProgram],
    cids: Cids,
    todo: npt.NDArray[np.uint8],  # [cid, program]: 1 = asked
    *,
    prefetch: bool = True,
) -> npt.NDArray[np.uint8]: ...  # [program, cid]: 1 = asked and holds
