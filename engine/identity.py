"""Identity: links (email, phone, card, ...) to contacts, and contact merges.

A contact has one primary ``customer_id`` and any number of *links* ``(kind, value)``; a
value is unique per kind across contacts. Emails and phones are normalised first
(``segd.normalize``: trimmed lower-case email, E.164 digits), so the same address written
two ways links one contact.

Layout (all per shard, in ``Store.identity``):

- one ``LinkTable`` per kind: a native ``IdMap`` value -> code, and ``owner`` code -> cid
  (NO_CODE once unlinked). Resolving a batch's link column is one hash lookup per row and
  one gather, in native code.
- merges: ``merged`` (a BitMap of the contacts merged away, excluded from every result),
  ``ContactStore.redirect`` (cid -> the contact it now is, path-compressed: after a->b and
  b->c both a and b point at c, so a lookup is one gather) and ``absorbed`` (survivor ->
  the contacts merged into it, to re-point them on a later merge and to list them as
  links of kind ``customer_id``).

Links of a merged contact are not moved: their owner stays the merged cid and every read
goes through the redirect, so a merge costs O(1) in links. Events are moved: the merged
contact's rows in each log get the survivor's cid (found through the contact-major index,
``EventLog.move_contact``), and the first merge that moves rows of a log gives that log an
``origin`` column (4 bytes per event of that type) that keeps the original contact of
every moved row, for explain. See docs/data-model.md ("Identity").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd.errors import InvalidInput, Violation
from segd.native import NO_CODE
from segd.native.idmap import IdMap
from segd.normalize import normalize_email, normalize_phone

LINK_KINDS: tuple[str, ...] = ("email", "phone", "card", "crm_id", "device_id")
# A merged contact's customer_id is shown as a link of the survivor of this kind.
MERGED_ID_KIND = "customer_id"
MAX_LINK_CHARS = 256
KIND_NAME_CHARS = 32


class IdentityConflict(InvalidInput):
    """Rows whose customer_id and link values name different contacts (or whose link
    values name different contacts). ``violations`` holds one entry per conflicting row
    (``row``, ``column``); nothing was applied."""


class MergeError(InvalidInput):
    """A merge that cannot be done: into itself, of an unknown or already merged id."""


def normalize_link(kind: str, value: str) -> str | None:
    """The value links are matched on; None when it is not a valid value of its kind.

    email: trimmed, lower-cased, one ``@`` with text on both sides; phone: E.164 digits
    (``segd.normalize.normalize_phone``); other kinds: trimmed, 1-256 characters."""
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value)
    text = value.strip()
    return text if 0 < len(text) <= MAX_LINK_CHARS else None


def _normalized_column(arr: pa.Array, kind: str, where: str) -> pa.Array:
    """A link column normalised (NULL stays NULL); a bad value is refused by row.

    email is normalised with Arrow kernels (trim + lower-case, then a shape check);
    phones and other kinds go through ``normalize_link`` per distinct value."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise InvalidInput.in_batch(
            where, f"expected text, got {arr.type}", column=kind
        )
    if kind == "email":
        out = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        ok = pc.match_substring_regex(out, r"^[^@\s]+@[^@\s]+$")
    elif kind != "phone":
        out = pc.utf8_trim_whitespace(arr)
        length = pc.utf8_length(out)
        ok = pc.and_(pc.greater(length, 0), pc.less_equal(length, MAX_LINK_CHARS))
    else:
        uniq = pc.unique(arr).drop_null()
        normal = [
            normalize_link(kind, v) if v is not None else None for v in uniq.to_pylist()
        ]
        idx = pc.index_in(arr, value_set=uniq)
        out = pa.array(normal, pa.string()).take(idx)
        ok = pc.is_valid(out)
    bad = np.asarray(pc.and_(pc.is_valid(arr), pc.invert(ok.fill_null(False))))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = arr[row].as_py()
        raise InvalidInput.in_batch(
            where, f"{value[:80]!r} is not a valid {kind}", row=row, column=kind
        )
    return out


class LinkTable:
    """The links of one kind: value -> code (IdMap) and code -> owning cid."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.values = IdMap()
        self.owner = np.zeros(0, dtype=np.uint32)

    def owners(self, values: pa.Array) -> np.ndarray:
        """Owning cid (NO_CODE: unknown or unlinked) per value; NULL -> NO_CODE."""
        codes = self.values.lookup(values)
        out = np.full(len(codes), NO_CODE, dtype=np.uint32)
        hit = codes != NO_CODE
        out[hit] = self.owner[codes[hit]]
        return out

    def owner_of(self, value: str) -> int:
        code = self.values.lookup_one(value)
        return -1 if code < 0 else int(self.owner[code])

    def set(self, values: pa.Array, cids: np.ndarray) -> None:
        codes = self.values.get_or_add(values)
        if len(self.owner) < len(self.values):
            grown = np.full(
                max(len(self.values), len(self.owner) * 3 // 2 + 16),
                NO_CODE,
                dtype=np.uint32,
            )
            grown[: len(self.owner)] = self.owner
            self.owner = grown
        self.owner[codes] = cids

    def unset(self, value: str) -> None:
        code = self.values.lookup_one(value)
        if code >= 0:
            if not self.owner.flags.writeable:
                self.owner = self.owner.copy()
            self.owner[code] = NO_CODE

    def of_contacts(self, cids: np.ndarray) -> list[str]:
        """Values owned by any of `cids` (a scan of this kind's owners: for display)."""
        n = len(self.values)
        codes = np.flatnonzero(np.isin(self.owner[:n], cids)).astype(np.uint32)
        return self.values.decode(codes).to_pylist() if len(codes) else []

    def nbytes(self) -> int:
        return self.values.nbytes() + self.owner.nbytes


@dataclass(frozen=True)
class Resolved:
    """An ingest batch's identity, resolved under the write lock: the customer_id of
    every row, the links to add and the merges to do first (``merge`` policy)."""

    customer_id: pa.Array
    links: dict[str, tuple[pa.Array, pa.Array]]  # kind -> (values, customer_ids)
    merges: list[tuple[str, str]]  # (survivor, merged) customer_ids
    # Internal contact number of every row when every row was named by known links
    # only (``known_link_owners``): the batch is then applied by them directly.
    cids: np.ndarray | None = None


class Identity:
    """Links and merge bookkeeping of one shard (see module docstring)."""

    def __init__(self, kinds: Iterable[str] = LINK_KINDS) -> None:
        self.tables: dict[str, LinkTable] = {k: LinkTable(k) for k in kinds}
        # survivor cid -> contacts merged into it (directly or through a chain)
        self.absorbed: dict[int, list[int]] = {}

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.tables)

    def table(self, kind: str) -> LinkTable:
        t = self.tables.get(kind)
        if t is None:
            raise InvalidInput.at(
                "kind",
                f"unknown link kind {kind!r} (known: {', '.join(self.tables)})",
            )
        return t

    def add_kind(self, kind: str) -> None:
        """A custom link kind (``loyalty_app_id``, ...): a lower-case name."""
        from segd.ingest import NAME

        if not NAME.fullmatch(kind) or len(kind) > KIND_NAME_CHARS:
            raise InvalidInput.at("kind", f"{kind!r} must match [a-z_][a-z0-9_]*")
        if kind == MERGED_ID_KIND or kind in ("customer_id", "ts", "type"):
            raise InvalidInput.at("kind", f"{kind!r} is reserved")
        self.tables.setdefault(kind, LinkTable(kind))

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self.tables.values())

    # -- snapshots -----------------------------------------------------------------------
    def to_snapshot(self, w) -> dict:
        kinds = list(self.tables)
        for i, t in enumerate(self.tables.values()):
            w.idmap(f"identity.k{i}", t.values)
            w.array(f"identity.k{i}.owner", t.owner[: len(t.values)])
        pairs = np.array(
            [(s, m) for s, ms in self.absorbed.items() for m in ms], dtype=np.uint32
        ).reshape(-1, 2)
        w.array("identity.absorbed", pairs.ravel())
        return {"kinds": kinds}

    @classmethod
    def from_snapshot(cls, r, meta: dict) -> Identity:
        ident = cls(meta["kinds"])
        for i, kind in enumerate(meta["kinds"]):
            t = ident.tables[kind]
            t.values = r.idmap(f"identity.k{i}")
            t.owner = r.array(f"identity.k{i}.owner", np.uint32)
        pairs = r.array("identity.absorbed", np.uint32).reshape(-1, 2)
        for s, m in pairs.tolist():
            ident.absorbed.setdefault(int(s), []).append(int(m))
        return ident


# -- resolving ingest rows -------------------------------------------------------------
def link_columns(table: pa.Table, kinds: Iterable[str], where: str) -> dict:
    """The table's link columns, normalised (kind -> Arrow string array)."""
    return {
        k: _normalized_column(table.column(k), k, where)
        for k in kinds
        if k in table.column_names
    }


def known_link_owners(
    store, links: dict[str, pa.Array], rows: int, raw: dict[str, np.ndarray]
):
    """The common case of live traffic by link, without the general resolution: every
    row names its contact only by link values that are all linked already and, across
    kinds, to the same (canonical) contact. Then that contact is the row's, and there
    is nothing to link, merge or report. Returns its cid per row (uint32), or None when
    any row needs the general path (an unknown value, a clash, a row without links).
    `raw`: each kind's owners as stored (``LinkTable.owners``), shared with it."""
    if not links:
        return None
    contacts = store.contacts
    out = None
    for kind, values in links.items():
        owners = contacts.canonical(raw[kind])
        has = np.asarray(pc.is_valid(values)) if values.null_count else None
        found = owners != NO_CODE
        if has is None:
            if not found.all():
                return None
        elif (has & ~found).any():
            return None
        if out is None:
            out = owners
        elif has is None:
            if ((out != NO_CODE) & (out != owners)).any():
                return None
            out = owners
        else:
            if (has & (out != NO_CODE) & (out != owners)).any():
                return None
            out = np.where(has, owners, out)
    if out is None or len(out) != rows or (out == NO_CODE).any():
        return None
    return np.ascontiguousarray(out, dtype=np.uint32)


def resolve(
    store,
    customer_id: pa.Array | None,
    links: dict[str, pa.Array],
    rows: int,
    where: str,
    *,
    policy: str = "reject",
) -> Resolved:
    """Who each row is (under the write lock; reads the store only).

    A row names its contact by ``customer_id`` or, when that is NULL or absent, by its
    link values. Known link values name their owner (through merges); unknown ones
    become links of the row's contact; a row with neither a known id nor a known link
    gets a new contact ``<kind>:<value>`` (its first link, in ``LINK_KINDS`` order).
    Rows sharing a link value are one contact (label propagation over the values,
    vectorised). A row whose customer_id and links (or whose links) name different
    existing contacts is a conflict: ``IdentityConflict`` listing every such row, or,
    with ``policy="merge"``, a merge of the others into the row's named contact (or the
    contact its first link names).
    """
    contacts = store.contacts
    raw_owners = {k: store.identity.table(k).owners(v) for k, v in links.items()}
    if customer_id is None or customer_id.null_count == rows:
        owners = known_link_owners(store, links, rows, raw_owners)
        if owners is not None:
            ids = contacts.ids.decode(owners).cast(pa.string())
            return Resolved(ids, {}, [], owners)
    n = contacts.n
    big = np.int64(1) << 40
    labels = np.full(rows, -1, dtype=np.int64)
    fixed = np.zeros(rows, dtype=bool)
    new_named = pa.array([], pa.string())
    if customer_id is not None:
        named = np.asarray(pc.is_valid(customer_id))
        local = IdMap(rows)  # pre-sized: no rehash while it grows
        codes = local.get_or_add(customer_id.filter(pa.array(named)))
        cids = contacts.lookup(customer_id.filter(pa.array(named))).astype(np.int64)
        cids[cids == NO_CODE] = -1
        unknown = cids < 0
        cids[unknown] = n + codes[unknown].astype(np.int64)
        labels[named] = cids
        fixed[named] = True
        new_named = local.to_arrow().cast(pa.string())
    # Known owners of link values (through the redirect).
    link_codes: dict[str, np.ndarray] = {}
    conflicts: dict[int, str] = {}
    merges: list[tuple[int, int]] = []

    def note_conflict(mask: np.ndarray, kind: str) -> None:
        for r in np.flatnonzero(mask)[:100].tolist():
            conflicts.setdefault(r, kind)

    unlinked: dict[str, np.ndarray] = {}
    for kind, values in links.items():
        raw = raw_owners[kind]
        unlinked[kind] = raw == NO_CODE
        owners = contacts.canonical(raw).astype(np.int64)
        known = owners != NO_CODE
        clash = known & fixed & (labels != owners)
        if clash.any():
            if policy == "merge":
                for r in np.flatnonzero(clash).tolist():
                    merges.append((int(labels[r]), int(owners[r])))
            else:
                note_conflict(clash, kind)
        take = known & ~fixed
        labels[take] = owners[take]
        fixed |= known
        link_codes[kind] = IdMap(rows).get_or_add(values.fill_null(""))
        link_codes[kind][~np.asarray(pc.is_valid(values))] = NO_CODE
    unnamed = labels < 0
    if unnamed.any():
        labels[unnamed] = big + np.flatnonzero(unnamed)
    # Rows sharing a link value are one contact: propagate the smallest label (fixed
    # labels, < 2**40, win) through each kind's value groups until nothing changes.
    for _ in range(64):
        changed = False
        for kind, codes in link_codes.items():
            has = codes != NO_CODE
            if not has.any():
                continue
            g = codes[has]
            lab = labels[has]
            lo = np.full(int(g.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(lo, g, lab)
            hi = np.full(len(lo), -1, dtype=np.int64)
            fixed_lab = np.where(lab < big, lab, -1)
            np.maximum.at(hi, g, fixed_lab)
            # two different fixed labels in one group: a conflict (or a merge)
            clash = (hi[g] >= 0) & (lo[g] != hi[g]) & (lab < big)
            if clash.any():
                rows_clash = np.flatnonzero(has)[clash]
                if policy == "merge":
                    for r in rows_clash.tolist():
                        a, b = int(labels[r]), int(hi[codes[r]])
                        if a != b:
                            merges.append((a, b))
                else:
                    note_conflict(np.isin(np.arange(rows), rows_clash), kind)
            new = np.minimum(lab, lo[g])
            if (new != lab).any():
                upd = (new != lab) & (lab >= big)
                idx = np.flatnonzero(has)[upd]
                labels[idx] = new[upd]
                changed = changed or bool(upd.any())
        if not changed or len(link_codes) == 1:
            break  # one kind: its groups took their smallest label in one pass
    if conflicts:
        violations = [
            Violation(
                f"{where}[{r}].{kind}",
                f"customer_id and {kind} name different contacts "
                "(policy reject; use merge to merge them)",
                r,
                kind,
            )
            for r, kind in sorted(conflicts.items())
        ]
        first = violations[0]
        raise IdentityConflict(
            f"{len(conflicts)} row(s) name different contacts; first: {first}",
            violations,
            kind=where,
            row=first.row,
            column=first.column,
            reason=first.message,
        )
    nobody = labels >= big
    orphan = nobody.copy()
    for codes in link_codes.values():
        orphan &= codes == NO_CODE
    if orphan.any():
        row = int(np.flatnonzero(orphan)[0])
        raise InvalidInput.in_batch(
            where,
            "the row names no contact: customer_id is NULL or absent and no link "
            f"column ({', '.join(links) or ', '.join(LINK_KINDS)}) has a value",
            row=row,
            column="customer_id",
        )
    # customer_ids: existing contacts by cid, named new ones by name, others by the
    # first link (in kind order) of the row that owns the label — one Arrow take over
    # the three kinds of names.
    exist = labels < n
    named_new = (labels >= n) & (labels < big)
    known_ids = contacts.ids.decode(labels[exist].astype(np.uint32)).cast(pa.string())
    generated = pa.nulls(rows, pa.string())
    if nobody.any():
        for kind, values in reversed(list(links.items())):
            named = pc.binary_join_element_wise(f"{kind}:", values, "")
            generated = pc.coalesce(named, generated)
    pick = np.empty(rows, dtype=np.int64)
    pick[exist] = np.arange(len(known_ids))
    base = len(known_ids)
    pick[named_new] = base + labels[named_new] - n
    base += len(new_named)
    pick[nobody] = base + labels[nobody] - big
    names = pa.concat_arrays([known_ids, new_named, generated])
    resolved = names.take(pa.array(pick))
    # New links: values not linked yet, to the row's customer_id (first row wins; the
    # propagation above made every row of a value the same contact).
    new_links: dict[str, tuple[pa.Array, pa.Array]] = {}
    for kind, values in links.items():
        todo = np.asarray(pc.is_valid(values)) & unlinked[kind]
        if not todo.any():
            continue
        rows_todo = np.flatnonzero(todo)
        codes = link_codes[kind][rows_todo]
        _, first_rows = np.unique(codes, return_index=True)
        chosen = pa.array(rows_todo[first_rows])
        new_links[kind] = (values.take(chosen), resolved.take(chosen))
    # The merges, in order, each between two contacts still live at that point (a
    # chain a<-b, b<-c becomes a<-b, a<-c): replay applies them without checks.
    merge_ids = []
    into: dict[int, int] = {}

    def live(c: int) -> int:
        while c in into:
            c = into[c]
        return c

    for a, b in dict.fromkeys(merges):
        a, b = live(a), live(b)
        if a < n and b < n and a != b:
            into[b] = a
            sa, sb = contacts.external_ids(np.array([a, b], dtype=np.uint32))
            merge_ids.append((sa, sb))
    return Resolved(resolved, new_links, merge_ids)


def check_merge(store, survivor: str, merged: str) -> tuple[int, int]:
    """(survivor cid, merged cid) of a valid merge; ``MergeError`` otherwise."""
    for name, value in (("survivor", survivor), ("merged", merged)):
        if not isinstance(value, str) or not value:
            raise MergeError.at(name, "expected a non-empty customer_id")
    contacts = store.contacts
    s = contacts.ids.lookup_one(survivor)
    m = contacts.ids.lookup_one(merged)
    if s < 0:
        raise MergeError.at("survivor", f"unknown customer_id {survivor!r}")
    if m < 0:
        raise MergeError.at("merged", f"unknown customer_id {merged!r}")
    if m in contacts.merged:
        into = contacts.external_ids(np.array([contacts.canonical_one(m)], np.uint32))
        raise MergeError.at("merged", f"{merged!r} was already merged into {into[0]!r}")
    if s in contacts.merged:
        into = contacts.external_ids(np.array([contacts.canonical_one(s)], np.uint32))
        raise MergeError.at(
            "survivor", f"{survivor!r} was merged into {into[0]!r}; merge into that"
        )
    if s == m:
        raise MergeError.at("merged", f"cannot merge {merged!r} into itself")
    return s, m


def check_merges(store, pairs) -> list[tuple[str, str]]:
    """The (survivor, merged) pairs of a ``merge_many``, each valid in the state the
    pairs before it leave; ``MergeError`` at ``pairs[i]`` for the first that is not."""
    if isinstance(pairs, (str, bytes)):
        raise MergeError.at("pairs", "expected (survivor, merged) pairs")
    contacts = store.contacts
    gone: dict[int, int] = {}  # merged earlier in this call -> its survivor
    out = []
    for i, pair in enumerate(pairs):
        try:
            survivor, merged = pair
        except (TypeError, ValueError):
            raise MergeError.at(
                f"pairs[{i}]", "expected a (survivor, merged) pair"
            ) from None
        try:
            s, m = check_merge(store, survivor, merged)
            for name, c, value in (("merged", m, merged), ("survivor", s, survivor)):
                if c in gone:
                    into = contacts.external_ids(np.array([gone[c]], np.uint32))[0]
                    raise MergeError.at(
                        name,
                        f"{value!r} was merged into {into!r} earlier in this call",
                    )
        except MergeError as exc:
            raise MergeError.at(f"pairs[{i}].{exc.where}", exc.reason) from None
        gone[m] = s
        for c, into in gone.items():  # a chain: what merged into m now is in s
            if into == m:
                gone[c] = s
        out.append((survivor, merged))
    return out


# -- merging -----------------------------------------------------------------------------
def merge_contacts(store, survivor: int, merged: int) -> None:
    """Make contact `merged` part of `survivor` (validated; under the write lock).

    Cost: O(rows of both contacts) per event log (contact-major index, no scan of the
    log), O(columns + tags) for attributes, O(1) for links."""
    contacts = store.contacts
    n = contacts.n
    _redirect(store, survivor, merged, n)
    for log in store.logs.values():
        log.move_contact(merged, survivor, n)
    _aggregates(store, survivor, merged)
    _attributes(contacts, survivor, merged)


def _redirect(store, survivor: int, merged: int, n: int) -> None:
    contacts = store.contacts
    red = contacts.redirect
    if red is None or len(red) < n or not red.flags.writeable:
        grown = np.arange(
            max(n, len(red) * 9 // 8 if red is not None else n), dtype=np.uint32
        )
        if red is not None:
            grown[: len(red)] = red
        red = contacts.redirect = grown
    absorbed = store.identity.absorbed
    chain = absorbed.pop(merged, None)
    red[merged] = survivor
    into = absorbed.setdefault(survivor, [])
    into.append(merged)
    if chain:
        red[np.array(chain, dtype=np.uint32)] = survivor
        into.extend(chain)
    contacts.merged.add(merged)


ROLLUPS = (
    "last_visit_s",
    "last_email_open_s",
    "last_order_s",
    "first_order_s",
    "revenue",
    "orders_count",
)


def _writable(agg, name: str) -> np.ndarray:
    arr = getattr(agg, name)
    if not arr.flags.writeable:  # a snapshot's read-only map: copy on first write
        arr = arr.copy()
        setattr(agg, name, arr)
    return arr


def _merge_rollups(arrays: dict, s: int, m: int) -> int:
    """``aggregates.merge_rollups`` over the named rollup arrays (see ROLLUPS)."""
    from segd.native import aggregates as kernels

    return kernels.merge_rollups(
        arrays["last_visit_s"],
        arrays["last_email_open_s"],
        arrays["last_order_s"],
        arrays["first_order_s"],
        arrays["revenue"],
        arrays["orders_count"],
        s,
        m,
    )


def _aggregates(store, s: int, m: int) -> None:
    """The survivor's rollups from the data of both: maxima and minima combine, revenue
    adds up (the same order lines), the order count is recomputed from the survivor's
    order rows (distinct order_id; an id both contacts had counts once), and the order
    ids the merged contact owned now belong to the survivor."""
    agg = store.aggregates
    try:
        had_orders = _merge_rollups(vars(agg), s, m)
    except ValueError:  # a snapshot's read-only maps: copy them on the first write
        had_orders = _merge_rollups({a: _writable(agg, a) for a in ROLLUPS}, s, m)
    if not had_orders:
        return
    log = store.logs.get("order")
    if log is None:
        return
    owner = agg._order_owner
    if not owner.flags.writeable:
        owner = agg._order_owner = owner.copy()
    agg.orders_count[s] = log.recount_orders(s, m, owner, store.contacts.n)
    if agg._shared_orders:
        pairs = {p for p in agg._shared_orders if p[0] == m}
        if pairs:
            agg._shared_orders -= pairs
            agg._shared_orders |= {(s, c) for _, c in pairs}


def _attributes(contacts, s: int, m: int) -> None:
    """Survivor wins, the merged contact fills the survivor's NULLs, tag sets are
    unioned; the merged contact's values are cleared."""
    from segd.columns import CategoryColumn, NumericColumn, TagsColumn

    one_s = np.array([s], dtype=np.uint32)
    one_m = np.array([m], dtype=np.uint32)
    for col in contacts.columns.values():
        if isinstance(col, NumericColumn):
            for name in ("values", "valid"):
                if not getattr(col, name).flags.writeable:
                    setattr(col, name, getattr(col, name).copy())
            if col.valid[m] and not col.valid[s]:
                col.values[s] = col.values[m]
                col.valid[s] = 1
            col.valid[m] = 0
        elif isinstance(col, CategoryColumn):
            if not col.codes.flags.writeable:
                col.codes = col.codes.copy()
            code_m, code_s = col.codes[m], col.codes[s]
            if code_m == NO_CODE:
                continue
            if code_s == NO_CODE:
                col._update_bitmaps(one_s, np.array([code_s]), np.array([code_m]))
                col.codes[s] = code_m
            col._update_bitmaps(one_m, np.array([code_m]), np.array([NO_CODE]))
            col.codes[m] = NO_CODE
        elif isinstance(col, TagsColumn):
            if not col.valid.flags.writeable:
                col.valid = col.valid.copy()
            for bm in col.tag_bitmaps:
                if m in bm:
                    bm.discard(m)
                    bm.add(s)
            col.valid[s] = col.valid[s] | col.valid[m]
            col.valid[m] = 0
