"""Typed face of native/eventscan.pyx: match one event log's rows, count per contact."""

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # cid_t[::1]
Seconds = npt.NDArray[np.uint32]  # sec_t[::1]: UTC seconds
Rows = npt.NDArray[np.uint32]  # row_t[::1]
Codes = npt.NDArray[np.uint32]  # code_t[::1], NO_CODE (0xFFFFFFFF) = NULL
Mask = npt.NDArray[np.uint8]  # uint8[::1], non-zero = holds
Words = npt.NDArray[np.uint64]  # word_t[::1]: bit c of words[c >> 6] is contact c
Keys = npt.NDArray[np.uint64]  # uint64[::1]: cid << 32 | ts, ascending

class EventScanParams:
    """Which rows of one event log an event condition looks at; ValueError on bad
    shapes or bounds when built (see the module docstring of eventscan.pyx)."""

    def __init__(
        self,
        cid: Cids,
        ts: Seconds,  # same length as cid
        r0: int,  # window [r0, r1) of rows, 0 <= r0 <= r1 <= len(cid)
        r1: int,
        *,
        source_rows: Rows | None = None,  # rows inside the window, any order
        code_filters: Iterable[tuple[Codes, Mask]] = (),  # at most 16; codes cover r1
        row_mask: Mask | None = None,  # r1 - r0 entries, relative to r0
        amount: npt.NDArray[np.float64] | None = None,  # covers r1; NaN = NULL
        candidates: Words | None = None,  # only these contacts
        then_keys: Keys | None = None,  # "then no" events, ascending
        within_s: int = 0,  # "then no ... within" span in seconds (uint64)
        only_contact: int | None = None,  # explain: one contact id
        # covers r1: a contact's count is its distinct codes (NO_CODE rows each count)
        distinct_codes: Codes | None = None,
    ) -> None: ...
    @property
    def window(self) -> tuple[int, int]: ...
    @property
    def n_rows(self) -> int: ...  # rows the kernels visit

class CountRange:
    """Which contacts qualify: count in [count_min, count_max], sum in sum_range."""

    def __init__(
        self,
        count_min: int = 1,  # uint64
        count_max: int = 2**64 - 1,  # uint64
        *,
        sum_range: tuple[float, float] | None = None,  # (lo, hi) of summed amounts
    ) -> None: ...
    @property
    def count_min(self) -> int: ...
    @property
    def count_max(self) -> int: ...
    @property
    def sum_range(self) -> tuple[float, float] | None: ...

class ScanScratch:
    """Per-thread per-contact counters, all-zero between calls."""

    def __init__(self) -> None: ...
    def ensure(self, n_contacts: int, with_sums: bool = False) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def counts(self) -> npt.NDArray[np.uint32]: ...
    @property
    def sums(self) -> npt.NDArray[np.float64]: ...

class CountResult:
    """Contacts with a matching event, split by the CountRange."""

    @property
    def yes(self) -> Words: ...  # n_contacts bits: qualified
    @property
    def no(self) -> Words: ...  # n_contacts bits: matched but not qualified
    @property
    def matched(self) -> int: ...  # events matched
    @property
    def contacts(self) -> int: ...  # contacts with a matching event

def count_matches(
    scan: EventScanParams,
    rule: CountRange,
    scratch: ScanScratch,  # capacity >= n_contacts (with sums when rule sums)
    n_contacts: int,  # every matching row's contact must be below it
) -> CountResult: ...
def distinct_contacts(
    cids: Cids,  # const cid_t[::1], any order, repeats allowed
    n_contacts: int,  # every value must be below it
) -> Cids: ...  # ascending, distinct
def matching_contacts(
    scan: EventScanParams,
    n_contacts: int,  # every matching row's contact must be below it
) -> Cids: ...  # ascending, distinct: the contacts with >= 1 matching event
def collect_rows(scan: EventScanParams) -> Rows: ...  # ascending row numbers
def collect_keys(scan: EventScanParams) -> Keys: ...  # sorted cid << 32 | ts
