"""Typed face of native/columns.pyx: predicate scans over per-contact columns.

Each sets bit c of `out` (INOUT, OR-ed into what is there) for the contacts that match;
`candidates` (sorted uint32 contact ids) limits the scan to those contacts. ValueError when
`out` holds fewer bits than values, lo/hi differ in length, or a candidate is out of range.
"""

import numpy as np
import numpy.typing as npt

Words = npt.NDArray[np.uint64]  # word_t[::1]
Cids = npt.NDArray[np.uint32]  # const cid_t[::1], sorted
Bounds = npt.NDArray[np.float64]  # const double[::1]: closed intervals [lo[k], hi[k]]
Values = (
    npt.NDArray[np.int8]
    | npt.NDArray[np.int64]
    | npt.NDArray[np.uint32]
    | npt.NDArray[np.float64]
)  # the fused value_t of the kernel

def interval_scan(
    values: Values,
    lo: Bounds,
    hi: Bounds,
    out: Words,
    *,
    valid: npt.NDArray[np.uint8] | None = None,  # None: no NULLs
    candidates: Cids | None = None,
) -> None: ...  # NaN matches nothing; compared as float64
def ratio_interval_scan(
    num: npt.NDArray[np.float64],
    den: npt.NDArray[np.uint32],  # 0 = NULL
    lo: Bounds,
    hi: Bounds,
    out: Words,
    *,
    candidates: Cids | None = None,
) -> None: ...
def code_mask_scan(
    codes: npt.NDArray[np.uint32],  # NO_CODE = NULL
    mask: npt.NDArray[np.uint8],  # mask[code] != 0: holds; codes past it fail
    out: Words,
    *,
    candidates: Cids | None = None,
) -> None: ...
def window_split(
    last: npt.NDArray[np.uint32],  # latest event second per contact, 0: none
    cids: npt.NDArray[np.uint32],  # any order
    lo: int,
    hi: int,
) -> tuple[
    Cids, npt.NDArray[np.intp]
]: ...  # (lo <= last < hi, positions of last >= hi)
