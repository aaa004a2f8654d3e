"""Typed face of native/idmap.pyx: external string ids <-> dense uint32 codes."""

from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

# Arrow string / large_string / string_view arrays (or chunked), or a list/tuple of str.
Strings = pa.Array | pa.ChunkedArray | list[str] | tuple[str, ...]

class IdMap:
    """Dictionary of strings to dense codes 0..n-1 in order of first appearance."""

    def __init__(self, capacity_hint: int = 0) -> None: ...  # int64_t, in [0, 2**31]
    def __len__(self) -> int: ...  # int64_t codes in use
    def nbytes(self) -> int: ...  # bytes allocated by data, offsets, tags and table
    def get_or_add(
        self, strings: Strings
    ) -> npt.NDArray[np.uint32]: ...  # code_t[::1]; ValueError("null at position N")
    def lookup(
        self, strings: Strings
    ) -> npt.NDArray[np.uint32]: ...  # code_t[::1]; NO_CODE (0xFFFFFFFF) unknown/null
    def get_or_add_one(self, s: str) -> int: ...  # code_t
    def lookup_one(self, s: str) -> int: ...  # code_t, or -1 when unknown
    def decode(
        self,
        codes: npt.NDArray[np.uint32],  # const code_t[::1]; NO_CODE -> null
    ) -> pa.LargeStringArray: ...
    def decode_one(self, code: int) -> str: ...  # int64_t, 0 <= code < len(self)
    def reserve(
        self, codes: int, data_bytes: int = 0
    ) -> None: ...  # room for `codes` codes in all, arrays grown >= 2x
    def capacity(self) -> tuple[int, int, int]: ...  # codes, bytes, table slots
    def take_from(self, other: IdMap) -> None: ...  # self empty; other left empty
    def to_arrow(self) -> pa.LargeStringArray: ...  # every string, in code order
    @classmethod
    def from_arrow(cls, arr: Strings) -> Self: ...  # distinct, non-null strings
    # Snapshots: the map's four arrays and back, without re-hashing.
    def to_arrays(
        self, copy: bool = True
    ) -> dict[
        str, npt.NDArray[Any]
    ]: ...  # data uint8, offsets int64, tags / table uint32
    @classmethod
    def from_arrays(
        cls,
        data: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        tags: npt.NDArray[np.uint32],
        table: npt.NDArray[np.uint32],
    ) -> Self: ...  # borrows the arrays (e.g. memory-mapped); ValueError when invalid
    def owns_memory(self) -> bool: ...  # False while an array is still borrowed

class ShortKeyIndex:
    """``ids.get_or_add`` with short known keys (<= 11 UTF-8 bytes) found in one cache
    miss; every code is the map's own (a bulk load's staged customer / item maps)."""

    @property
    def ids(self) -> IdMap: ...  # the map it fronts (cdef readonly)
    @property
    def bypass(
        self,
    ) -> bool: ...  # most keys of a call were long: later calls go straight to `ids`
    @property
    def reserve(self) -> bool: ...  # ids.reserve ahead of new keys (cdef readonly)
    def __init__(
        self, ids: IdMap, capacity_hint: int = 0, reserve: bool = False
    ) -> None: ...
    def __len__(self) -> int: ...  # short keys indexed
    def nbytes(self) -> int: ...  # bytes of the table (16 a slot)
    def get_or_add(
        self, strings: Strings
    ) -> npt.NDArray[np.uint32]: ...  # as ids.get_or_add(strings)
