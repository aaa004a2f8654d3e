"""Typed face of native/aggregates.pyx: per-contact scatter updates on ingest (INOUT).

Each raises ValueError when `cids` and the values differ in length or a cid is outside
`out`; `out` must be writable.
"""

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # const cid_t[::1]
Seconds = npt.NDArray[np.uint32]  # sec_t[::1]: UTC seconds, 0 = never

def max_into(cids: Cids, ts: Seconds, out: Seconds) -> None: ...
def min_into(cids: Cids, ts: Seconds, out: Seconds) -> None: ...  # 0 in out = unset
def add_into(
    cids: Cids,
    values: npt.NDArray[np.float64],  # NaN adds nothing
    out: npt.NDArray[np.float64],
) -> None: ...
def count_into(
    cids: Cids,
    counts_row: npt.NDArray[np.uint8],  # flag per row
    out: npt.NDArray[np.uint32],
) -> None: ...
