"""Typed face of native/aggindex.pyx: slices of contact ids into a dense bitset, and the
intersection of a set of ids with slices of a permutation.

Both raise ValueError when an id is outside `out` (64 bits per word); `out` must be
writable.
"""

import numpy as np
import numpy.typing as npt

def mark_ids(ids: npt.NDArray[np.uint32], out: npt.NDArray[np.uint64]) -> None: ...
def clear_ids(ids: npt.NDArray[np.uint32], out: npt.NDArray[np.uint64]) -> None: ...
def intersect_slices(
    cur: npt.NDArray[np.uint32],
    order: npt.NDArray[np.uint32],
    starts: npt.NDArray[np.intp],
    ends: npt.NDArray[np.intp],
    scratch: npt.NDArray[np.uint64],
) -> npt.NDArray[np.uint32]: ...
