"""Event storage: one time-ordered log per event type, with postings per dimension value.

Layout of one log (``EventLog``), per event: ``cid`` (uint32) and ``ts`` (uint32 seconds),
plus a uint32 code column for each dimension the type carries (item, phrase, campaign, ...)
and a float64 ``amount`` column only for types that carry amounts. Each dimension also has
``segd.native.postings.Postings``: value code -> ascending rows. A view of an item therefore costs
16 bytes (cid 4 + ts 4 + item code 4 + one posting 4).

Rows are kept sorted by time so a period is a row range found by binary search. Events may
arrive late (offline orders): a batch older than the end of the log is merged in, moving only
the rows after its earliest time, and the postings are renumbered (``remap_and_insert``).
"""

from __future__ import annotations

import threading

import numpy as np

from segd.native import MAX_SEC, NO_CODE, contactindex
from segd.native import postings as postings_kernels
from segd.native.postings import Postings

# Dimensions that get postings (value -> rows). order_id is only a column: nobody filters
# on one order id, but the distinct count of orders needs it per row.
# ORIGIN: the contact a row came from before an identity merge moved it (segd.identity).
# Not a valid column name (ingest.NAME), so no event property can take it.
ORIGIN = ":origin"
UNINDEXED_DIMS = frozenset({"order_id", ORIGIN})

# Code columns copied in contact-major order beside the contact index's rows, per event
# type (issue 15): a candidate's walk over its own rows then reads each row's code by
# position (its rows' codes share a cache line) instead of a miss per row in the
# time-ordered column. Views are ~60% of the events and the most filtered log of the
# segment conditions (`view(brand = ...) count >= 2 in last 30 days`): +4 B per view.
CONTACT_MAJOR_CODES: dict[str, tuple[str, ...]] = {"view": ("item",)}
# Whether readers are handed the copies (`EventLog.contact_codes`); a switch for
# measurements (old and new paths alternated in one process) and tests.
READ_CONTACT_CODES = True

# Item attributes (catalog category columns) whose values get postings of their own per
# event type (issue 15): value code -> the type's rows of items with that value
# (``AttributePostings``). ``order(category in (3 categories)) in last 90 days`` then
# gathers 3 lists instead of the per-item lists of ~45k items (2.8 ms at 10M). +4 B per
# order line (~0.2 B per event at the bench's mix); views, ~60% of the events, would cost
# 2.4 B per event and are left out (the index budget is 12 B per event).
ATTRIBUTE_POSTINGS: dict[str, tuple[str, ...]] = {"order": ("category",)}
# Whether readers use them (a switch for measurements and tests).
READ_ATTRIBUTE_POSTINGS = True


def _owned(arr: np.ndarray, dtype) -> np.ndarray:
    """`arr` itself when it is a writeable, contiguous array owning its memory of
    `dtype`; otherwise a copy (a view would keep its base alive and be written through)."""
    if (
        arr.dtype == dtype
        and arr.flags.c_contiguous
        and arr.flags.owndata
        and arr.flags.writeable
    ):
        return arr
    return np.array(arr, dtype=dtype)


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    """Room for `need` rows. The new slots are left unset: every append writes all
    columns of the rows it adds, and nothing reads past `n`."""
    if len(arr) >= need:
        return arr
    out = np.empty(max(need, len(arr) + (len(arr) >> 1)), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class EventLog:
    """All events of one type, ordered by time (ties keep arrival order)."""

    def __init__(self, type_name: str) -> None:
        self.type = type_name
        self.n = 0
        self._cid = np.zeros(0, dtype=np.uint32)
        self._ts = np.zeros(0, dtype=np.uint32)
        self._amount: np.ndarray | None = None
        self._dims: dict[str, np.ndarray] = {}
        self.postings: dict[str, Postings] = {}
        # Contact-major index (native/contactindex.pyx) of rows [0, _ci_limit): the slot
        # table and `rows`. Identity merges patch slots: a survivor's rows are appended
        # past the built rows (`rows` is then _ci_used long).
        self._ci: tuple[contactindex.Slots, np.ndarray] | None = None
        self._ci_limit = 0
        self._ci_used = 0
        # CONTACT_MAJOR_CODES copies of the index: dim -> codes aligned with `rows`
        # (position k holds the dim's code of row rows[k]; NO_CODE past _ci_used)
        self._ci_codes: dict[str, np.ndarray] = {}
        self._ci_lock = threading.Lock()
        self._sizes: dict[str, tuple] = {}
        self._version = 0  # bumped by every append: invalidates cached posting sizes
        # the _version an append of rows after the last ones (no row moved) made:
        # readers indexing the tail may then add the new rows to what they have
        self._tail_appended = -1
        # bumped whenever rows move (a late merge): row-numbered caches built before
        # are stale (AttributePostings)
        self._layout = 0
        self._cid_version = 0  # bumped when rows change contact (identity merges)
        self._attr: dict[str, AttributePostings] = {}
        self._attr_lock = threading.Lock()

    # -- read side ------------------------------------------------------------------
    @property
    def cid(self) -> np.ndarray:
        return self._cid[: self.n]

    @property
    def ts(self) -> np.ndarray:
        return self._ts[: self.n]

    @property
    def amount(self) -> np.ndarray | None:
        return None if self._amount is None else self._amount[: self.n]

    def dim(self, name: str) -> np.ndarray | None:
        col = self._dims.get(name)
        return None if col is None else col[: self.n]

    def dims(self) -> list[str]:
        return [d for d in self._dims if d != ORIGIN]

    def window(self, lo_s: int, hi_s: int) -> tuple[int, int]:
        """Rows [r0, r1) with lo_s <= ts < hi_s."""
        ts = self.ts
        return self._bound(ts, lo_s), self._bound(ts, hi_s)

    @staticmethod
    def _bound(ts: np.ndarray, t: int) -> int:
        """First row with ts >= t. The probe is a uint32 scalar: a Python int would make
        numpy cast the whole column to int64 first (a copy per call)."""
        if t <= 0:
            return 0
        if t > MAX_SEC:
            return len(ts)
        return int(np.searchsorted(ts, np.uint32(t), side="left"))

    def posting_sizes(self, dim: str) -> np.ndarray:
        """Postings per code of a dimension (cached until the log changes)."""
        key = (dim, self.n, self._version)
        hit = self._sizes.get(dim)
        if hit is None or hit[0] != key:
            hit = (key, self.postings[dim].sizes())
            self._sizes[dim] = hit
        return hit[1]

    def contact_index(
        self, n_contacts: int
    ) -> tuple[contactindex.Slots, np.ndarray, int]:
        """(slots, rows, limit): each contact's rows below `limit`, in time order —
        ``rows[a:b]`` with ``(a, b) = slots.span(c)`` for c < ``slots.n`` (newer
        contacts have only tail rows). Pass all three to the kernels.

        Built on first use and rebuilt once the unindexed tail (or the garbage merges
        left) outgrows an eighth of the log, so the O(n) rebuild is amortised over the
        appends that made it necessary. Readers may call this concurrently (under the
        engine's read lock).
        """
        with self._ci_lock:
            return self._contact_index(n_contacts)

    def _contact_index(self, n_contacts: int):
        tail = self.n - self._ci_limit
        ci = self._ci
        slack = max(65_536, self.n // 8)
        if ci is None or tail > slack or self._ci_used - self.n > slack:
            ci = self._ci = contactindex.build(self.cid, n_contacts)
            self._ci_limit = self.n
            self._ci_used = len(ci[1])
            self._ci_codes = {
                d: contactindex.codes_by_contact(
                    self._dims[d][: self.n], ci[1], self._ci_used
                )
                for d in CONTACT_MAJOR_CODES.get(self.type, ())
                if d in self._dims
            }
        slots, rows = ci
        return slots, rows, self._ci_limit

    def contact_codes(self, dim: str) -> np.ndarray | None:
        """The contact-major copy of code column `dim` (CONTACT_MAJOR_CODES), aligned
        with the ``rows`` the last ``contact_index`` call returned: position k holds
        ``dim[rows[k]]`` for every row below the index's limit. None when the type
        keeps no copy of `dim` (readers then read the column by row number).

        Exact by construction under every write: appends leave the indexed rows alone,
        a late merge lowers the limit below the rows it moves (readers stop there),
        identity merges re-copy the survivor's patched slot, and a rebuild of the index
        re-copies all (so bulk loads, snapshots and restarts rebuild it on first use)."""
        if not READ_CONTACT_CODES:
            return None
        with self._ci_lock:
            return self._ci_codes.get(dim) if self._ci is not None else None

    def rows_of(self, cid: int, n_contacts: int) -> np.ndarray:
        """Rows of one contact, ascending (its indexed rows, then its tail rows)."""
        with self._ci_lock:
            return self.rows_of_unlocked(cid, n_contacts)

    def rows_of_unlocked(self, cid: int, n_contacts: int) -> np.ndarray:
        slots, rows, limit = self._contact_index(n_contacts)
        if cid < slots.n:
            a, b = slots.span(cid)
            mine = rows[a:b]
            mine = mine[mine < limit]
        else:
            mine = np.zeros(0, dtype=np.uint32)
        tail = np.flatnonzero(self._cid[limit : self.n] == cid)
        if len(tail):
            mine = np.concatenate([mine, (tail + limit).astype(np.uint32)])
        return mine

    def move_contact(self, merged: int, survivor: int, n_contacts: int) -> int:
        """Give the rows of contact `merged` to `survivor` (identity merge); returns the
        number of rows moved. Their original contact is kept in the ``origin`` column
        (created on the first move: 4 bytes per row of this log). The contact-major
        index is patched in O(rows of both) by a nogil kernel
        (``contactindex.move_contact``): the survivor's rows, merged in time order, go
        to the end of ``rows`` and its slot points there; the merged contact's slot is
        emptied. Postings map values to rows, so they do not change."""
        with self._ci_lock:
            slots, rows, limit = self._contact_index(n_contacts)
            if merged >= slots.n or survivor >= slots.n:
                # a contact newer than the index: move by a scan, rebuild on next use
                rows_of = np.flatnonzero(self.cid == merged)
                if len(rows_of):
                    origin = self._origin_column()
                    fresh = rows_of[origin[rows_of] == NO_CODE]
                    origin[fresh] = merged
                    self._cid[rows_of] = survivor
                    self._ci = None
                    self._version += 1
                    self._cid_version += 1
                return len(rows_of)
            existing = self._dims.get(ORIGIN)
            if existing is not None:
                origin = existing
            else:
                a, b = slots.span(merged)
                if a == b and (
                    limit == self.n or not (self._cid[limit : self.n] == merged).any()
                ):
                    return 0  # no rows of `merged` here: no origin column needed
                origin = self._origin_column()
            while True:
                try:
                    moved, used = contactindex.move_contact(
                        self._cid, origin, slots, rows, self._ci_used,
                        limit, self.n, merged, survivor,
                    )  # fmt: skip
                except ValueError:
                    if origin.flags.writeable and self._cid.flags.writeable:
                        raise
                    origin = self._origin_column()  # a snapshot's read-only maps
                    continue
                if moved >= 0:
                    break
                grown = np.empty(max(used, len(rows) + len(rows) // 8), np.uint32)
                grown[: self._ci_used] = rows[: self._ci_used]
                rows = grown
                self._ci = (slots, rows)
            self._ci_used = used
            if moved:
                self._copy_slot(survivor, slots, rows)
                self._version += 1
                self._cid_version += 1
            return moved

    def _copy_slot(self, c: int, slots: contactindex.Slots, rows: np.ndarray) -> None:
        """After a merge patched contact c's slot: its codes in each contact-major copy
        (grown with `rows`). O(rows of c)."""
        a, b = slots.span(c)
        for d, copy in self._ci_codes.items():
            if len(copy) < len(rows):
                grown = np.full(len(rows), NO_CODE, dtype=np.uint32)
                grown[: len(copy)] = copy
                copy = self._ci_codes[d] = grown
            mine = rows[a:b]
            col = self._dims[d]
            copy[a:b] = np.where(
                mine < self.n, col[np.minimum(mine, self.n - 1)], NO_CODE
            )

    def recount_orders(
        self, survivor: int, merged: int, owner: np.ndarray, n_contacts: int
    ) -> int:
        """After ``move_contact``: the survivor's order count in this (order) log —
        rows without an ``order_id`` plus its distinct ids — re-owning the merged
        contact's ids in `owner` (one nogil kernel, ``aggregates.recount_orders``)."""
        from segd.native import aggregates as kernels

        col = self._dims.get("order_id")
        if col is None:
            return len(self.rows_of(survivor, n_contacts))
        with self._ci_lock:
            slots, rows, limit = self._contact_index(n_contacts)
            if survivor >= slots.n:  # newer than the index: by its rows
                codes = col[self.rows_of_unlocked(survivor, n_contacts)]
                known = codes[codes != NO_CODE]
                ids = np.unique(known)
                mine = ids[ids < len(owner)]
                mine = mine[owner[mine] == merged]
                owner[mine] = survivor
                return len(codes) - len(known) + len(ids)
            return kernels.recount_orders(
                slots, rows, limit, self._cid, self.n, col, owner, survivor, merged,
            )  # fmt: skip

    def _origin_column(self) -> np.ndarray:
        """The origin column, created on first use (and made writable: a snapshot's
        columns may be read-only maps)."""
        origin = self._dims.get(ORIGIN)
        if origin is None:
            origin = np.full(len(self._cid), NO_CODE, dtype=np.uint32)
        elif not origin.flags.writeable:
            origin = origin.copy()
        self._dims[ORIGIN] = origin
        if not self._cid.flags.writeable:
            self._cid = self._cid.copy()
        return origin

    def origin(self) -> np.ndarray | None:
        """Per row, the contact it came from when a merge moved it (NO_CODE: it was
        always its contact's); None while no merge moved rows of this log."""
        col = self._dims.get(ORIGIN)
        return None if col is None else col[: self.n]

    def index_nbytes(self) -> int:
        """Bytes of the inverted indexes: postings and the contact-major index."""
        ci = 0 if self._ci is None else self._ci[0].nbytes + self._ci[1].nbytes
        if self._ci is not None:
            ci += sum(c.nbytes for c in self._ci_codes.values())
        ci += sum(a.nbytes() for a in self._attr.values())
        return ci + sum(p.nbytes() for p in self.postings.values())

    def nbytes(self) -> int:
        """Bytes held by rows in use and indexes (slack of growth excluded)."""
        per_row = 8 + 4 * len(self._dims) + (8 if self._amount is not None else 0)
        return self.n * per_row + self.index_nbytes()

    # -- item attribute postings (ATTRIBUTE_POSTINGS) ------------------------------------
    def has_attribute_postings(self, field: str) -> bool:
        """Whether rows of this type are gathered by `field`'s values (see
        ``attribute_rows``)."""
        return (
            READ_ATTRIBUTE_POSTINGS
            and field in ATTRIBUTE_POSTINGS.get(self.type, ())
            and "item" in self._dims
        )

    def attribute_rows(
        self, catalog, field: str, values: np.ndarray, r0: int, r1: int
    ) -> np.ndarray | None:
        """Rows in [r0, r1) whose item has one of `values` (codes of the catalog's
        category column `field`), sorted within each value; None when this type keeps
        no postings of `field` (the caller gathers per item). Exactly the rows the
        item mask ``value_mask[codes[item]]`` admits."""
        if not self.has_attribute_postings(field):
            return None
        with self._attr_lock:
            p = self._attribute_postings(catalog, field)
            return None if p is None else p.gather(values, r0, r1)

    def attribute_cids(
        self, catalog, field: str, values: np.ndarray, r0: int, r1: int
    ) -> np.ndarray | None:
        """The contacts of ``attribute_rows``' rows (same order, repeats kept), read
        from the contact list kept beside each value's rows: no read of the log's
        ``cid`` column per row (a cache miss each at 10M contacts). None as for
        ``attribute_rows``."""
        if not self.has_attribute_postings(field):
            return None
        with self._attr_lock:
            p = self._attribute_postings(catalog, field)
            if p is None:
                return None
            cids = self._attr[field].cids
            assert cids is not None
            return p.gather_parallel(cids, values, r0, r1)

    def attribute_total(self, catalog, field: str, values: np.ndarray) -> int | None:
        """Rows of the whole log whose item has one of `values`: an estimate's base."""
        if not self.has_attribute_postings(field):
            return None
        with self._attr_lock:
            p = self._attribute_postings(catalog, field)
            if p is None:
                return None
            sizes = p.sizes()
            inside = values[values < len(sizes)]
            return int(sizes[inside].sum()) if len(inside) else 0

    def build_attribute_postings(self, catalog) -> None:
        """Build (or bring up to date) every attribute postings this type keeps, now
        rather than on the first query (a bulk load's index phase may call it)."""
        for field in ATTRIBUTE_POSTINGS.get(self.type, ()):
            if "item" in self._dims:
                with self._attr_lock:
                    self._attribute_postings(catalog, field)

    def _attribute_postings(self, catalog, field: str) -> Postings | None:
        attr = self._attr.get(field)
        if attr is None:
            attr = self._attr[field] = AttributePostings(field)
        return attr.sync(self, catalog)

    # -- write side -----------------------------------------------------------------
    def append(
        self,
        cid: np.ndarray,
        ts: np.ndarray,
        dims: dict[str, np.ndarray],
        amount: np.ndarray | None,
    ) -> None:
        """Add a batch (already validated). Columns are aligned arrays of equal length."""
        k = len(cid)
        if k == 0:
            return
        order = None if np.all(ts[1:] >= ts[:-1]) else np.argsort(ts, kind="stable")
        if order is not None:
            cid, ts = cid[order], ts[order]
            dims = {d: v[order] for d, v in dims.items()}
            amount = None if amount is None else amount[order]
        for d in dims:
            if d not in self._dims:
                self._dims[d] = np.full(len(self._cid), NO_CODE, dtype=np.uint32)
                if d not in UNINDEXED_DIMS:
                    self.postings[d] = Postings()
        if amount is not None and self._amount is None:
            self._amount = np.full(len(self._cid), np.nan)
        if self.n == 0:
            self._adopt(cid, ts, dims, amount)
            return
        self._reserve(self.n + k)
        self._version += 1
        if ts[0] >= self._ts[self.n - 1]:
            self._append_tail(cid, ts, dims, amount)
            self._tail_appended = self._version
        else:
            self._merge_late(cid, ts, dims, amount)

    def _adopt(self, cid, ts, dims, amount) -> None:
        """The first rows of an empty log (a bulk load's whole type): arrays the caller
        owns outright become the columns without a copy; views are copied."""
        k = len(cid)
        self._cid = _owned(cid, np.uint32)
        self._ts = _owned(ts, np.uint32)
        rows = np.arange(k, dtype=np.uint32)
        for d in self._dims:
            codes = dims.get(d)
            if codes is None:
                self._dims[d] = np.full(k, NO_CODE, dtype=np.uint32)
                continue
            self._dims[d] = _owned(codes, np.uint32)
            if d in self.postings:
                self.postings[d].append_rows(rows, self._dims[d])
        if self._amount is not None:
            self._amount = (
                np.full(k, np.nan) if amount is None else _owned(amount, np.float64)
            )
        self.n = k
        self._version += 1

    def _reserve(self, need: int) -> None:
        self._cid = _grow(self._cid, need)
        self._ts = _grow(self._ts, need)
        for d, col in self._dims.items():
            self._dims[d] = _grow(col, need)
        if self._amount is not None:
            self._amount = _grow(self._amount, need)

    def _append_tail(self, cid, ts, dims, amount) -> None:
        a, b = self.n, self.n + len(cid)
        self._cid[a:b] = cid
        self._ts[a:b] = ts
        rows = np.arange(a, b, dtype=np.uint32)
        for d, col in self._dims.items():
            codes = dims.get(d)
            col[a:b] = NO_CODE if codes is None else codes
            if codes is not None and d in self.postings:
                self.postings[d].append_rows(
                    rows, np.ascontiguousarray(codes, np.uint32)
                )
        if self._amount is not None:
            self._amount[a:b] = np.nan if amount is None else amount
        self.n = b

    def _merge_late(self, cid, ts, dims, amount) -> None:
        """Merge a batch that starts before the end of the log (see module docstring)."""
        n, k = self.n, len(cid)
        p = int(np.searchsorted(self._ts[:n], np.uint32(ts[0]), side="right"))
        # Stable sort of (old tail, batch): old rows stay before new ones at equal times.
        merged_ts = np.concatenate([self._ts[p:n], ts])
        order = np.argsort(merged_ts, kind="stable")
        new_pos = np.empty(len(order), dtype=np.uint32)
        new_pos[order] = np.arange(p, n + k, dtype=np.uint32)
        old_to_new, batch_rows = new_pos[: n - p], new_pos[n - p :]

        def merged(old: np.ndarray, new) -> np.ndarray:
            both = np.concatenate(
                [old[p:n], np.broadcast_to(new, (k,)).astype(old.dtype)]
            )
            return both[order]

        self._cid[p : n + k] = merged(self._cid, cid)
        self._ts[p : n + k] = merged_ts[order]
        for d, col in self._dims.items():
            codes = dims.get(d)
            col[p : n + k] = merged(col, NO_CODE if codes is None else codes)
            if d in self.postings:
                self.postings[d].remap_and_insert(
                    p,
                    np.ascontiguousarray(old_to_new),
                    np.ascontiguousarray(batch_rows),
                    np.ascontiguousarray(
                        np.full(k, NO_CODE, np.uint32) if codes is None else codes,
                        np.uint32,
                    ),
                )
        if self._amount is not None:
            self._amount[p : n + k] = merged(
                self._amount, np.nan if amount is None else amount
            )
        self.n = n + k
        with (
            self._ci_lock
        ):  # rows from p on moved: the contact index only covers [0, p)
            self._ci_limit = min(self._ci_limit, p)
        with self._attr_lock:
            self._layout += 1

    def shrink_to_fit(self) -> None:
        """Drop growth slack after a bulk load."""
        n = self.n

        def fit(arr: np.ndarray) -> np.ndarray:
            return arr if len(arr) == n else arr[:n].copy()  # exact already: no copy

        self._cid = fit(self._cid)
        self._ts = fit(self._ts)
        self._dims = {d: fit(c) for d, c in self._dims.items()}
        if self._amount is not None:
            self._amount = fit(self._amount)
        for p in self.postings.values():
            p.shrink_to_fit()

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self, w, prefix: str) -> dict:
        """Rows [0, n) of every column and the postings (CSR). The contact-major index
        (and its code copies) is not saved: it is rebuilt on first use, as after a
        load."""
        n = self.n
        w.array(f"{prefix}.cid", self._cid[:n])
        w.array(f"{prefix}.ts", self._ts[:n])
        if self._amount is not None:
            w.array(f"{prefix}.amount", self._amount[:n])
        dims = list(self._dims)
        for i, d in enumerate(dims):
            w.array(f"{prefix}.d{i}", self._dims[d][:n])
            if d in self.postings:
                w.postings(f"{prefix}.d{i}.postings", self.postings[d])
        return {
            "type": self.type,
            "n": n,
            "dims": dims,
            "indexed": [d in self.postings for d in dims],
            "amount": self._amount is not None,
        }

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> EventLog:
        """A log over the snapshot's arrays (memory-mapped copy-on-write: the first
        append copies a column into fresh memory, a late merge dirties only its pages)."""
        log = cls(meta["type"])
        log.n = meta["n"]
        log._cid = r.array(f"{prefix}.cid", np.uint32, log.n)
        log._ts = r.array(f"{prefix}.ts", np.uint32, log.n)
        if meta["amount"]:
            log._amount = r.array(f"{prefix}.amount", np.float64, log.n)
        for i, (d, indexed) in enumerate(
            zip(meta["dims"], meta["indexed"], strict=True)
        ):
            log._dims[d] = r.array(f"{prefix}.d{i}", np.uint32, log.n)
            if indexed:
                log.postings[d] = r.postings(f"{prefix}.d{i}.postings")
        return log


class AttributePostings:
    """Rows of one event log per value of an item attribute (``ATTRIBUTE_POSTINGS``):
    category code -> ascending rows of the log whose item has that category.

    A cache built on first use and kept exact by ``sync`` before every read (under the
    log's ``_attr_lock``):
    - rows appended after the indexed ones (appends, bulk loads) are added, O(new rows);
    - a late merge moves rows (the log's ``_layout`` changes): rebuilt from scratch;
    - a catalog change (its ``version``) that gave an item with rows in this log another
      value: rebuilt; items that gained a value but have no rows here change nothing
      (their rows, when they come, are mapped with the values of that moment);
    - identity merges change rows' contacts (the log's ``_cid_version``), not their
      items or places: the contact lists kept beside the rows are stale, so both are
      rebuilt on the next read (O(log rows); patching the moved rows in place is not
      done yet);
    - snapshots, restarts and crash replay make new logs: built again on first use.
    Not persisted. Memory: 8 B per row with a value (its row and its contact), plus
    4 B per catalog item.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.postings: Postings | None = None
        # each row's contact, in lists parallel to `postings`' (same codes, lengths
        # and order): the first leaf's contacts without a miss per row in log.cid
        self.cids: Postings | None = None
        self.cid_version = -1  # the log's _cid_version the contacts were copied at
        self.rows = 0  # rows [0, rows) of the log are in the postings
        self.layout = -1  # the log's _layout they were numbered under
        self.values = np.zeros(
            0, dtype=np.uint32
        )  # item code -> value at the last sync
        self.catalog: object | None = None
        self.catalog_version = -1

    def nbytes(self) -> int:
        held = 0 if self.postings is None else self.postings.nbytes()
        if self.cids is not None:
            held += self.cids.nbytes()
        return held + self.values.nbytes

    def sync(self, log: EventLog, catalog) -> Postings | None:
        """The postings of rows [0, log.n), brought up to date (see class docstring)."""
        col = catalog.columns.get(self.field)
        codes = getattr(col, "codes", None)
        if codes is None or getattr(col, "dictionary", None) is None:
            return None  # not a category column (or dropped): gather per item
        n_items = len(catalog)
        current = codes[:n_items]
        fresh = (
            self.postings is not None
            and self.layout == log._layout
            and self.cid_version == log._cid_version
            and self.catalog is catalog
            and self.rows <= log.n
        )
        if fresh and (
            catalog.version != self.catalog_version or len(self.values) != n_items
        ):
            k = min(len(self.values), n_items)
            changed = np.flatnonzero(current[:k] != self.values[:k])
            if len(changed):
                sizes = log.posting_sizes("item") if "item" in log.postings else None
                if sizes is None:
                    fresh = False
                else:
                    inside = changed[changed < len(sizes)]
                    fresh = not (sizes[inside] > 0).any()
        if not fresh:
            self.postings = Postings()
            self.cids = Postings()
            self.rows = 0
            self.layout = log._layout
            self.cid_version = log._cid_version
        if (
            not fresh
            or catalog.version != self.catalog_version
            or len(self.values) != n_items
        ):
            self.values = np.array(current, dtype=np.uint32)
            self.catalog = catalog
            self.catalog_version = catalog.version
        if self.rows < log.n:
            a, b = self.rows, log.n
            item = np.ascontiguousarray(log._dims["item"][a:b])
            mapped = postings_kernels.map_codes(item, self.values)
            assert self.postings is not None and self.cids is not None
            self.postings.append_rows(np.arange(a, b, dtype=np.uint32), mapped)
            self.cids.append_rows(np.ascontiguousarray(log.cid[a:b]), mapped)
            self.rows = b
        return self.postings
