"""Per-contact aggregates, maintained incrementally on every ingested batch.

They answer the everyday aggregate conditions over all time without touching events:
orders count (distinct ``order_id``), revenue, first / last order, last visit (any event),
last view, last email open / click. Times are uint32 UTC seconds, 0 = never.
"""

from __future__ import annotations

import numpy as np

from native import aggregates as kernels

NO_CODE = 0xFFFFFFFF
LAST_SEEN = {  # aggregate array <- event type (None: every type)
    "last_visit_s": None,
    "last_view_s": "view",
    "last_email_open_s": "email_open",
    "last_email_click_s": "email_click",
}


def _grow(arr: np.ndarray, n: int) -> np.ndarray:
    if len(arr) >= n:
        return arr
    out = np.zeros(max(n, len(arr) + (len(arr) >> 1), 16), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class Aggregates:
    """Rollup arrays indexed by cid (see module docstring)."""

    def __init__(self) -> None:
        self.orders_count = np.zeros(0, dtype=np.uint32)
        self.revenue = np.zeros(0, dtype=np.float64)
        self.first_order_s = np.zeros(0, dtype=np.uint32)
        self.last_order_s = np.zeros(0, dtype=np.uint32)
        self.last_visit_s = np.zeros(0, dtype=np.uint32)
        self.last_view_s = np.zeros(0, dtype=np.uint32)
        self.last_email_open_s = np.zeros(0, dtype=np.uint32)
        self.last_email_click_s = np.zeros(0, dtype=np.uint32)
        self._seen_orders = np.zeros(0, dtype=np.uint8)  # by order_id code

    ARRAYS = (
        "orders_count",
        "revenue",
        "first_order_s",
        "last_order_s",
        "last_visit_s",
        "last_view_s",
        "last_email_open_s",
        "last_email_click_s",
    )

    def resize(self, n: int) -> None:
        for name in self.ARRAYS:
            setattr(self, name, _grow(getattr(self, name), n))

    def apply(
        self,
        event_type: str,
        cids: np.ndarray,
        ts: np.ndarray,
        amount: np.ndarray | None,
        order_codes: np.ndarray | None,
    ) -> None:
        """Fold one type's rows of a validated batch into the rollups."""
        cids = np.ascontiguousarray(cids, dtype=np.uint32)
        ts = np.ascontiguousarray(ts, dtype=np.uint32)
        kernels.max_into(cids, ts, self.last_visit_s)
        for name, etype in LAST_SEEN.items():
            if etype == event_type:
                kernels.max_into(cids, ts, getattr(self, name))
        if event_type != "order":
            return
        kernels.max_into(cids, ts, self.last_order_s)
        kernels.min_into(cids, ts, self.first_order_s)
        if amount is not None:
            kernels.add_into(
                cids, np.ascontiguousarray(amount, np.float64), self.revenue
            )
        kernels.count_into(
            cids, self._new_order_rows(order_codes, len(cids)), self.orders_count
        )

    def _new_order_rows(self, order_codes: np.ndarray | None, n: int) -> np.ndarray:
        """1 for the first line of each order never seen before; a line with no id counts."""
        if order_codes is None:
            return np.ones(n, dtype=np.uint8)
        flags = (order_codes == NO_CODE).astype(np.uint8)
        known = order_codes != NO_CODE
        if known.any():
            codes = order_codes[known]
            self._seen_orders = _grow(self._seen_orders, int(codes.max()) + 1)
            uniq, first = np.unique(codes, return_index=True)
            fresh = self._seen_orders[uniq] == 0
            rows = np.flatnonzero(known)[first[fresh]]
            flags[rows] = 1
            self._seen_orders[uniq] = 1
        return flags

    def nbytes(self, n: int) -> int:
        return sum(getattr(self, a).itemsize for a in self.ARRAYS) * n + len(
            self._seen_orders
        )
