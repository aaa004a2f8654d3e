"""Typed face of native/loadsplit.pyx: a bulk load's split by type and dictionary
expansion."""

from typing import TypeVar

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]
I32 = npt.NDArray[np.int32]
Scattered = TypeVar(
    "Scattered",
    npt.NDArray[np.uint32],
    npt.NDArray[np.int64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.float64],
)

def type_positions(types: U32, n_types: int) -> tuple[U32, npt.NDArray[np.int64]]: ...
def scatter(
    src: Scattered, pos: U32, types: U32, n_types: int
) -> tuple[Scattered, npt.NDArray[np.bool_]]: ...
def used_entries(
    idx: I32, valid: npt.NDArray[np.uint8] | None, offset: int, n_entries: int
) -> npt.NDArray[np.bool_]: ...
def expand_codes(
    idx: I32, valid: npt.NDArray[np.uint8] | None, offset: int, lookup: U32
) -> U32: ...
def remap_codes(codes: U32, mapping: U32) -> U32: ...
def is_identity(mapping: U32) -> bool: ...
def is_sparse(valid: npt.NDArray[np.uint8] | None, offset: int, n: int) -> bool: ...
def sparse_used_entries(
    idx: I32, valid: npt.NDArray[np.uint8], offset: int, n_entries: int
) -> npt.NDArray[np.bool_]: ...
def scatter_valid(
    values: U32,
    valid: npt.NDArray[np.uint8],
    offset: int,
    n: int,
    pos: U32,
    types: U32,
    bounds: npt.NDArray[np.int64],
    idx: I32 | None = None,
) -> tuple[U32, npt.NDArray[np.bool_]]: ...
def amounts_with_nan(
    raw: npt.NDArray[np.float64], valid: npt.NDArray[np.uint8], offset: int
) -> tuple[npt.NDArray[np.float64], int]: ...
