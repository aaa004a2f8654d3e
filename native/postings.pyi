"""Typed face of native/postings.pyx: value code -> ascending row numbers of one event log."""

from typing import Self

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.uint32]  # row_t[::1]: row numbers of one type's event log
Codes = npt.NDArray[
    np.uint32
]  # code_t[::1]: dictionary codes, NO_CODE (0xFFFFFFFF) = NULL

# append_rows writes a big batch over many codes bucket by bucket (False: row order)
PARTITIONED_APPEND: bool
PARTITION_MIN_ROWS: int  # rows with a code a batch needs to be partitioned
PARTITION_MIN_CODES: int  # ... over more codes than this
PARTITION_BUCKETS: int  # at most this many buckets
PARTITION_ROWS_PER_CODE: int  # a block's rows per code

class Postings:
    """Postings of one dimension (item, category, ...) of one event type."""

    def __init__(self) -> None: ...
    @property
    def postings(self) -> int: ...  # postings held
    def nbytes(self) -> int: ...  # bytes allocated for rows and the code table
    def __len__(self) -> int: ...  # codes allocated
    def sizes(self) -> npt.NDArray[np.uint32]: ...  # postings per code
    def rows_of(self, code: int) -> Rows: ...  # code_t; a copy, ascending
    def append_rows(
        self,
        rows: Rows,  # const row_t[::1], all above every row held
        codes: Codes,  # const code_t[::1], same length; NO_CODE rows skipped
    ) -> None: ...  # MemoryError when a list cannot grow
    def remap_and_insert(
        self,
        first_moved: int,  # row_t: old rows >= this moved
        new_pos_of_old: Rows,  # const row_t[::1], monotone
        rows: Rows,  # const row_t[::1], new rows to insert
        codes: Codes,  # const code_t[::1], same length as rows
    ) -> None: ...
    def count_in_window(
        self, codes: Codes, r0: int, r1: int
    ) -> int: ...  # postings of `codes` in rows [r0, r1)
    def gather(
        self, codes: Codes, r0: int, r1: int
    ) -> Rows: ...  # rows in [r0, r1), sorted within each code only
    def gather_parallel(
        self, values: Postings, codes: Codes, r0: int, r1: int
    ) -> Rows: ...  # values' entries beside the rows gather() would return
    def shrink_to_fit(self) -> None: ...
    # Snapshots: the lists as CSR arrays (sizes() + rows), and back without a copy.
    def copy_rows_into(
        self, out: Rows
    ) -> None: ...  # row_t[::1] OUT, length = postings; every list in code order
    @classmethod
    def from_arrays(
        cls,
        sizes: npt.NDArray[np.uint32],  # const uint32_t[::1]: rows per code
        rows: Rows,  # row_t[::1]: borrowed (e.g. memory-mapped), copied on first growth
    ) -> Self: ...
    def owns_memory(self) -> bool: ...  # False while a list still borrows `rows`

def map_codes(
    codes: Codes,  # const code_t[::1]: per row (an event's item code)
    table: Codes,  # const code_t[::1]: code -> value (an item's category code)
) -> Codes: ...  # table[codes[i]], NO_CODE when NO_CODE or past the table
