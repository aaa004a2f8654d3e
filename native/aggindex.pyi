"""Typed face of native/aggindex.pyx: a slice of contact ids into a dense bitset.

Both raise ValueError when an id is outside `out` (64 bits per word); `out` must be
writable.
"""

import numpy as np
import numpy.typing as npt

def mark_ids(ids: npt.NDArray[np.uint32], out: npt.NDArray[np.uint64]) -> None: ...
def clear_ids(ids: npt.NDArray[np.uint32], out: npt.NDArray[np.uint64]) -> None: ...
