"""Typed face of native/contactindex.pyx: contact-major (CSR) index of one event log."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Cids = npt.NDArray[np.uint32]  # cid_t[::1]
Rows = npt.NDArray[np.uint32]  # row_t[::1]
Offsets = npt.NDArray[
    np.uint32
]  # uint32[n_contacts + 1]: rows[offsets[c]:offsets[c+1]]

class Slots:
    """Where each contact's rows lie in the index's rows (~1.3 B per contact)."""

    @staticmethod
    def from_offsets(
        offsets: Offsets,  # const uint32_t[::1], n + 1 entries
        ends: npt.NDArray[np.uint32] | None = None,  # slot ends (patched), n entries
    ) -> Slots: ...  # ValueError: a slot ending before it starts
    @property
    def n(self) -> int: ...  # contacts covered
    @property
    def n_wide(self) -> int: ...  # blocks kept explicitly
    @property
    def nbytes(self) -> int: ...
    def span(self, c: int) -> tuple[int, int]: ...  # IndexError outside [0, n)
    def starts_ends(
        self,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]: ...

def group_by_contact(
    cid: Cids,  # const cid_t[::1]: every cid < n_contacts
    n_contacts: int,
) -> tuple[Offsets, Rows]: ...  # plain CSR; ValueError as build
def build(
    cid: Cids,  # const cid_t[::1]: the log's contact column, every cid < n_contacts
    n_contacts: int,
) -> tuple[Slots, Rows]: ...  # ValueError: a cid >= n_contacts, or 2**32 rows
def codes_by_contact(
    col: npt.NDArray[np.uint32],  # const uint32_t[::1]: a code column of the log
    rows: Rows,  # the index's rows
    used: int,  # positions of `rows` in use (<= len(rows))
) -> npt.NDArray[np.uint32]: ...  # col[rows[i]] for i < used, NO_CODE after
def rows_of_contacts(
    cand_cids: Cids,  # const cid_t[::1], sorted
    slots: Slots,
    rows: Rows,
    limit: int,  # row_t: the index covers rows [0, limit)
    r0: int,  # row_t
    r1: int,  # row_t
) -> Rows: ...  # indexed rows per contact, then the whole tail [max(r0, limit), r1)
def count_of_contacts(
    cand_cids: Cids,  # const cid_t[::1], sorted
    slots: Slots,
    rows: Rows,
    limit: int,  # row_t
    cid: Cids,  # const cid_t[::1]: the log's contact column (for the tail)
    r0: int,  # row_t
    r1: int,  # row_t, <= len(cid)
) -> npt.NDArray[np.uint32]: ...  # events in [r0, r1) per candidate, aligned
def count_filtered_of_contacts(
    cand_cids: Cids,  # const cid_t[::1], sorted
    slots: Slots,
    rows: Rows,
    limit: int,  # row_t
    cid: Cids,  # const cid_t[::1]: the log's contact column (for the tail)
    r0: int,  # row_t
    r1: int,  # row_t, <= len(cid)
    code_filters: Sequence[
        tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]
        | tuple[
            npt.NDArray[np.uint32],
            npt.NDArray[np.uint8],
            npt.NDArray[np.uint32] | None,
        ]
    ] = (),  # up to 16 (codes column covering r1, mask over codes[, copy by position])
) -> npt.NDArray[np.uint32]: ...  # matching events in [r0, r1) per candidate, aligned
def move_contact(
    cid: Cids,  # cid_t[::1], written: the merged contact's rows get the survivor
    origin: npt.NDArray[np.uint32] | None,  # uint32[::1] per row; NO_CODE -> merged
    slots: Slots,  # written: the survivor's and the merged contact's slots
    rows: Rows,  # written at [used:]: both slots must fit (else (-1, rows needed))
    used: int,
    limit: int,  # row_t: the index covers rows [0, limit)
    n: int,  # rows in the log; [limit, n) is the tail, scanned
    merged: int,  # cid_t, < slots.n
    survivor: int,  # cid_t, < slots.n
) -> tuple[int, int]: ...  # (rows moved, new used); (0, used): none to move
