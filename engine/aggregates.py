"""Per-contact aggregates, maintained incrementally on every ingested batch.

They answer the everyday aggregate conditions over all time without touching events:
orders count (distinct ``order_id``), revenue, first / last order, last visit, last email
open. Times are uint32 UTC seconds, 0 = never. Only rollups a condition reads are kept:
each costs 4-8 bytes per contact and a scatter per ingested batch.

A *visit* is on-site activity only (``VISIT_EVENTS``: views, cart and favourites changes,
orders, searches, goals), never email, message or ad events: a delivered message must not
make a lapsed customer look active. ``Engine(visit_events=...)`` changes the list.
"""

from __future__ import annotations

import numpy as np

from segd.native import NO_CODE
from segd.native import aggregates as kernels

VISIT_EVENTS: frozenset[str] = frozenset(
    {
        "view",
        "page_view",
        "category_view",
        "article_view",
        "visit",
        "add_to_cart",
        "remove_from_cart",
        "add_to_favorites",
        "order",
        "search",
        "goal",
    }
)
LAST_SEEN = {  # aggregate array <- event type (last_visit_s: see VISIT_EVENTS)
    "last_email_open_s": "email_open",
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

    def __init__(self, visit_events: frozenset[str] = VISIT_EVENTS) -> None:
        self.visit_events = frozenset(visit_events)
        self.orders_count = np.zeros(0, dtype=np.uint32)
        self.revenue = np.zeros(0, dtype=np.float64)
        self.first_order_s = np.zeros(0, dtype=np.uint32)
        self.last_order_s = np.zeros(0, dtype=np.uint32)
        self.last_visit_s = np.zeros(0, dtype=np.uint32)
        self.last_email_open_s = np.zeros(0, dtype=np.uint32)
        # order_id code -> the contact that owns it (NO_CODE: not seen yet)
        self._order_owner = np.zeros(0, dtype=np.uint32)
        self._shared_orders: set[tuple[int, int]] = set()

    ARRAYS = (
        "orders_count",
        "revenue",
        "first_order_s",
        "last_order_s",
        "last_visit_s",
        "last_email_open_s",
    )

    def arrays_changed_by(self, event_type: str) -> frozenset[str]:
        """The rollups an event of `event_type` can change (as ``apply`` folds it), by
        name; ``avg_order_value`` stands for the ratio of ``revenue`` and
        ``orders_count``. Value indexes over the other rollups stay clean."""
        names: set[str] = set()
        if event_type in self.visit_events:
            names.add("last_visit_s")
        names.update(name for name, etype in LAST_SEEN.items() if etype == event_type)
        if event_type == "order":
            names.update(
                (
                    "orders_count",
                    "revenue",
                    "first_order_s",
                    "last_order_s",
                    "avg_order_value",
                )
            )
        return frozenset(names)

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
        if event_type in self.visit_events:
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
        # last_visit_s was folded with this list: a restored engine keeps reading it so.
        return {"arrays": list(self.ARRAYS), "visit_events": sorted(self.visit_events)}

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> Aggregates:
        agg = cls(frozenset(meta.get("visit_events", VISIT_EVENTS)))
        for name in meta["arrays"]:
            if name in cls.ARRAYS:  # a rollup dropped since the snapshot is skipped
                setattr(
                    agg, name, r.array(f"{prefix}.{name}", getattr(agg, name).dtype)
                )
        agg._order_owner = r.array(f"{prefix}.order_owner", np.uint32)
        shared = r.array(f"{prefix}.shared_orders", np.uint64)
        agg._shared_orders = {
            (int(k >> 32), int(k & 0xFFFFFFFF)) for k in shared.tolist()
        }
        return agg


def last_seen_in_period(
    logs, lo_s: int, hi_s: int, n_contacts: int
) -> tuple[np.ndarray, np.ndarray]:
    """(cids, last ts) of the contacts with an event of `logs` in ``[lo_s, hi_s)``.

    One nogil scatter-max per log into a per-contact array (pages are only touched where
    contacts have events), then the contacts seen: no sort of the window's rows."""
    last = np.zeros(n_contacts, dtype=np.uint32)
    for log in logs:
        r0, r1 = log.window(lo_s, hi_s)
        if r1 > r0:
            kernels.max_into(log.cid[r0:r1], log.ts[r0:r1], last)
    cids = np.flatnonzero(last).astype(np.uint32)
    return cids, last[cids]


def orders_in_period(
    log, aggregates: Aggregates, lo_s: int, hi_s: int, n_contacts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cids, revenue, distinct orders) of the contacts with order lines in the window.

    A nogil kernel (``order_totals``) sums amounts and counts each order id's first line
    in the window; the rare order id shared by several contacts falls back to counting
    distinct (contact, order) pairs with numpy."""
    r0, r1 = log.window(lo_s, hi_s)
    cids = np.ascontiguousarray(log.cid[r0:r1])
    amount = (
        np.ascontiguousarray(log.amount[r0:r1])
        if log.amount is not None
        else np.full(r1 - r0, np.nan)
    )
    codes_col = log.dim("order_id")
    codes = (
        np.zeros(0, np.uint32)
        if codes_col is None
        else np.ascontiguousarray(codes_col[r0:r1])
    )
    owner = aggregates._order_owner
    revenue = np.zeros(n_contacts, dtype=np.float64)
    orders = np.zeros(n_contacts, dtype=np.uint32)
    seen = np.zeros((len(owner) + 63) // 64 + 1, dtype=np.uint64)
    shared = kernels.order_totals(cids, amount, codes, owner, seen, revenue, orders)
    if shared:
        orders[:] = 0
        known = codes != NO_CODE
        keys = (cids[known].astype(np.uint64) << np.uint64(32)) | codes[known]
        pair_cids = (np.unique(keys) >> np.uint64(32)).astype(np.uint32)
        kernels.count_into(pair_cids, np.ones(len(pair_cids), np.uint8), orders)
        loose = cids[~known]
        kernels.count_into(loose, np.ones(len(loose), np.uint8), orders)
    who = np.flatnonzero(orders).astype(np.uint32)
    return who, revenue[who], orders[who]
