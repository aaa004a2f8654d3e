"""Per-contact aggregates, maintained incrementally on every ingested batch.

They answer the everyday aggregate conditions over all time without touching events:
orders count (distinct ``order_id``), revenue, first / last order, last visit (any event),
last view, last email open / click. Times are uint32 UTC seconds, 0 = never.
"""

from __future__ import annotations

import numpy as np

from segd.native import aggregates as kernels

NO_CODE = 0xFFFFFFFF
LAST_SEEN = {  # aggregate array <- event type (None: every type)
    "last_visit_s": None,
    "last_view_s": "view",
    "last_email_open_s": "email_open",
    "last_email_click_s": "email_click",
}


def _grow_fill(arr: np.ndarray, n: int) -> np.ndarray:
    """Grow a code-indexed array, new entries NO_CODE."""
    if len(arr) >= n:
        return arr
    out = np.full(max(n, len(arr) + (len(arr) >> 1), 16), NO_CODE, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


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
        # order_id code -> the contact that owns it (NO_CODE: not seen yet)
        self._order_owner = np.zeros(0, dtype=np.uint32)
        self._shared_orders: set[tuple[int, int]] = set()

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
            cids, self._new_order_rows(cids, order_codes), self.orders_count
        )

    def _new_order_rows(
        self, cids: np.ndarray, order_codes: np.ndarray | None
    ) -> np.ndarray:
        """1 for the first line of each (contact, order_id) never seen; a line with no
        order_id is an order of its own.

        Order ids are almost always unique per shop, so each id remembers the one contact
        that owns it (``_order_owner``); the rare id shared by several contacts falls back
        to a set of (contact, id) pairs.
        """
        n = len(cids)
        if order_codes is None:
            return np.ones(n, dtype=np.uint8)
        flags = (order_codes == NO_CODE).astype(np.uint8)
        known = np.flatnonzero(order_codes != NO_CODE)
        if len(known) == 0:
            return flags
        codes, owners = order_codes[known], cids[known].astype(np.uint64)
        keys = (owners << np.uint64(32)) | codes
        _, first = np.unique(keys, return_index=True)  # first line of each pair here
        rows, codes, owners = (
            known[first],
            codes[first],
            owners[first].astype(np.uint32),
        )
        self._order_owner = _grow_fill(self._order_owner, int(codes.max()) + 1)
        current = self._order_owner[codes]
        fresh = current == NO_CODE
        self._order_owner[codes[fresh]] = owners[fresh]
        flags[rows[fresh]] = 1
        shared = np.flatnonzero(~fresh & (current != owners))
        for (
            i
        ) in shared.tolist():  # ids shared between contacts: rare, checked one by one
            pair = (int(owners[i]), int(codes[i]))
            if pair not in self._shared_orders:
                self._shared_orders.add(pair)
                flags[rows[i]] = 1
        return flags

    def nbytes(self, n: int) -> int:
        per_contact = sum(getattr(self, a).itemsize for a in self.ARRAYS)
        return per_contact * n + self._order_owner.nbytes

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self, w, prefix: str, n: int) -> dict:
        for name in self.ARRAYS:
            w.array(f"{prefix}.{name}", getattr(self, name)[:n])
        w.array(f"{prefix}.order_owner", self._order_owner)
        shared = np.array(
            sorted((o << 32) | c for o, c in self._shared_orders), dtype=np.uint64
        )
        w.array(f"{prefix}.shared_orders", shared)
        return {"arrays": list(self.ARRAYS)}

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> Aggregates:
        agg = cls()
        for name in meta["arrays"]:
            setattr(agg, name, r.array(f"{prefix}.{name}", getattr(agg, name).dtype))
        agg._order_owner = r.array(f"{prefix}.order_owner", np.uint32)
        shared = r.array(f"{prefix}.shared_orders", np.uint64)
        agg._shared_orders = {
            (int(k >> 32), int(k & 0xFFFFFFFF)) for k in shared.tolist()
        }
        return agg
