"""Typed face of native/pqdict.pyx: Parquet page decoding for dictionary text columns."""

import numpy as np
import numpy.typing as npt

Bytes = npt.NDArray[np.uint8] | bytes | bytearray | memoryview  # const uint8_t[::1]

def plain_byte_array(
    page: Bytes, n: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8], int]: ...
def rle_hybrid(
    buf: Bytes, bit_width: int, n: int
) -> tuple[npt.NDArray[np.int32], int]: ...
