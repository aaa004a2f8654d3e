"""Typed face of native/aggregates.pyx: per-contact scatter updates on ingest (INOUT).

Each raises ValueError when `cids` and the values differ in length or a cid is outside
`out`; `out` must be writable.
"""

import numpy as np
import numpy.typing as npt

from segd.native.contactindex import Slots

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
def order_totals(
    cids: Cids,
    amount: npt.NDArray[np.float64],  # NaN adds nothing
    order_codes: npt.NDArray[np.uint32],  # empty: no order ids; NO_CODE: its own order
    order_owner: Cids,  # per order code: the contact that first placed it
    seen: npt.NDArray[np.uint64],  # INOUT zeroed bitset over order codes
    revenue: npt.NDArray[np.float64],  # INOUT per contact
    orders: npt.NDArray[np.uint32],  # INOUT per contact
) -> int: ...  # lines whose order id also belongs to another contact
def merge_rollups(
    last_visit: Seconds,
    last_email_open: Seconds,
    last_order: Seconds,
    first_order: Seconds,  # 0 = never
    revenue: npt.NDArray[np.float64],
    orders_count: npt.NDArray[np.uint32],
    survivor: int,  # cid_t
    merged: int,  # cid_t
) -> int: ...  # the merged contact's order count before; its rollups become 0
def recount_orders(
    slots: Slots,  # EventLog.contact_index's slot table
    rows: npt.NDArray[np.uint32],
    limit: int,
    cid: npt.NDArray[np.uint32],
    n: int,
    order_col: npt.NDArray[np.uint32],
    owner: npt.NDArray[np.uint32],  # order code -> owning contact (INOUT)
    survivor: int,  # cid_t
    merged: int,  # cid_t
) -> int: ...  # the survivor's orders: rows without an id + distinct ids
