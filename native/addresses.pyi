"""Typed face of native/addresses.pyx: bulk normalisation + SHA-256 of emails / phones."""

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pyarrow as pa

NO_VALUE: int
HASHED: int
NEEDS_PYTHON: int
EMAIL: int
PHONE: int
MAX_ADDRESS_BYTES: int

def sha256_many(values: Iterable[bytes]) -> list[bytes]: ...
def hash_addresses(
    strings: pa.Array | pa.ChunkedArray,
    kind: int,  # EMAIL or PHONE
    default_country: str = "7",
    # -> (status uint8[n], digests uint8[n, 32])
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]: ...
