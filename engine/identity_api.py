"""The Engine side of identity: the public calls' validation, the records they commit,
and how ``Engine._apply`` applies them (see ``segd.identity`` for the data structures).

Kept out of core.py so the Engine only carries thin public methods and one ``_apply``
branch; everything here runs under the engine's locks as the docstrings say.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd import identity
from segd import mutations as mut
from segd.errors import ContactNotFound, InvalidInput
from segd.native import NO_CODE

if TYPE_CHECKING:
    from segd.core import Engine

PLACEHOLDER = "\x00"  # stands for a NULL customer_id until identity resolves the row
MERGE_POLICIES = ("reject", "merge")


# -- applying records (inside the write lock) ---------------------------------------------
def apply(engine: Engine, m: Any) -> np.ndarray | None:
    """Apply a LinkAdded / LinkRemoved / ContactsMerged; for a merge, the (survivor,
    merged) cids to notify."""
    store = engine.store
    if isinstance(m, mut.LinkAdded):
        _add_links(store, {m.kind: ([m.value], [m.customer_id])})
        return None
    if isinstance(m, mut.LinkRemoved):
        store.identity.table(m.kind).unset(m.value)
        return None
    if isinstance(m, mut.ContactsMergedMany):
        pairs = [_merge(engine, s, merged) for s, merged in m.pairs]
        return np.concatenate(pairs) if pairs else None
    return _merge(engine, m.survivor, m.merged)


def apply_resolved(engine: Engine, ident: dict) -> list[np.ndarray]:
    """The identity part of an ingest record: merges, then links (before its batch)."""
    touched = [_merge(engine, s, m) for s, m in ident.get("merges", [])]
    links = ident.get("links")
    if links:
        _add_links(engine.store, links)
    return touched


def _add_links(store, links: dict) -> None:
    """Link values to contacts by customer_id (creating contacts that do not exist);
    `links`: kind -> (values, customer_ids)."""
    for kind, (values, ids) in links.items():
        table = store.identity.tables.get(kind)
        if table is None:
            store.identity.add_kind(kind)
            table = store.identity.tables[kind]
        if not isinstance(ids, pa.Array):
            ids, values = pa.array(ids, pa.string()), pa.array(values, pa.string())
        cids = store.contacts.ensure(ids)
        table.set(values, cids)
    store.sync_sizes()


def _merge(engine: Engine, survivor: str, merged: str) -> np.ndarray:
    store = engine.store
    s = store.contacts.ids.lookup_one(survivor)
    m = store.contacts.ids.lookup_one(merged)
    identity.merge_contacts(store, s, m)
    for seg in engine.segments.with_members():
        if seg.members is not None and m in seg.members:
            members = seg.members.copy()
            members.discard(m)
            members.add(s)
            engine.segments.put(replace(seg, members=members))
    _merge_rfm(engine.rfm_state.latest, s, m)
    return np.array([s, m], dtype=np.uint32)


def _merge_rfm(latest, s: int, m: int) -> None:
    """The current RFM computation after a merge: the merged contact leaves it; the
    survivor keeps its scores, or takes the merged contact's when it had none (the next
    ``rfm_compute`` scores the merged data exactly)."""
    if latest is None or m >= latest.n:
        return
    from segd.rfm import NO_SEGMENT

    defaults = {
        "recency_days": -1,
        "frequency": 0,
        "monetary": 0.0,
        "r": 0,
        "f": 0,
        "m": 0,
        "segment": NO_SEGMENT,
        "orders_all": 0,
    }
    take = s < latest.n and latest.segment[s] == NO_SEGMENT and latest.r[s] == 0
    for name, default in defaults.items():
        arr = getattr(latest, name)
        if not arr.flags.writeable:
            arr = arr.copy()
            object.__setattr__(latest, name, arr)
        if take:
            arr[s] = arr[m]
        arr[m] = default
    latest._bitmaps.clear()


# -- public calls ---------------------------------------------------------------------------
def normalized(engine: Engine, kind: str, value: Any) -> str:
    engine.store.identity.table(kind)  # unknown kind: InvalidInput
    if not isinstance(value, str):
        raise InvalidInput.at("value", f"expected text, got {type(value).__name__}")
    out = identity.normalize_link(kind, value)
    if out is None:
        raise InvalidInput.at("value", f"{value[:80]!r} is not a valid {kind}")
    return out


def live_cid(engine: Engine, customer_id: str) -> int:
    """The contact a customer_id names now (through merges); ContactNotFound."""
    if not isinstance(customer_id, str) or not customer_id:
        raise InvalidInput.at("customer_id", "expected a non-empty customer_id")
    cid = engine.store.contacts.cid_of(customer_id)
    if cid < 0:
        raise ContactNotFound(customer_id)
    return cid


def check_link(engine: Engine, customer_id: str, kind: str, value: str):
    """The LinkAdded to commit, or None when the value is linked to the contact already;
    IdentityConflict when another contact owns it."""
    cid = live_cid(engine, customer_id)
    owner = engine.store.identity.table(kind).owner_of(value)
    if owner >= 0 and owner != NO_CODE:
        owner = engine.store.contacts.canonical_one(owner)
        if owner == cid:
            return None
        other = engine.store.contacts.external_ids(np.array([owner], np.uint32))[0]
        raise identity.IdentityConflict.at(
            "value", f"{kind} {value!r} is linked to another contact, {other!r}"
        )
    survivor = engine.store.contacts.external_ids(np.array([cid], np.uint32))[0]
    return mut.LinkAdded(kind, value, survivor)


def check_unlink(engine: Engine, customer_id: str, kind: str, value: str):
    cid = live_cid(engine, customer_id)
    owner = engine.store.identity.table(kind).owner_of(value)
    if (
        owner < 0
        or owner == NO_CODE
        or engine.store.contacts.canonical_one(owner) != cid
    ):
        raise InvalidInput.at(
            "value", f"{kind} {value!r} is not linked to {customer_id!r}"
        )
    return mut.LinkRemoved(kind, value)


def links(engine: Engine, customer_id: str) -> dict[str, list[str]]:
    """kind -> sorted values of a contact (merged contacts' links included), and the
    customer_ids merged into it under ``customer_id``."""
    store = engine.store
    cid = live_cid(engine, customer_id)
    group = np.array([cid, *store.identity.absorbed.get(cid, [])], dtype=np.uint32)
    out = {}
    for kind, table in store.identity.tables.items():
        values = table.of_contacts(group)
        if values:
            out[kind] = sorted(values)
    if len(group) > 1:
        out[identity.MERGED_ID_KIND] = sorted(store.contacts.external_ids(group[1:]))
    return out


def resolve_one(engine: Engine, kind: str, value: str) -> str | None:
    store = engine.store
    if kind == identity.MERGED_ID_KIND:
        cid = store.contacts.cid_of(value) if isinstance(value, str) else -1
    else:
        owner = store.identity.table(kind).owner_of(normalized(engine, kind, value))
        cid = -1 if owner < 0 or owner == NO_CODE else owner
        cid = store.contacts.canonical_one(cid) if cid >= 0 else cid
    if cid < 0:
        return None
    return store.contacts.external_ids(np.array([cid], np.uint32))[0]


def contact_card(engine: Engine, customer_id: str, recent: int = 10) -> dict:
    """One contact for people (segctl contacts show): profile, links, aggregates and
    its most recent events (with the contact each came from before a merge)."""
    store = engine.store
    cid = live_cid(engine, customer_id)
    agg = store.aggregates
    n = store.contacts.n

    def when(s: int) -> str | None:
        return None if not s else datetime.fromtimestamp(s, UTC).isoformat()

    events: list[dict[str, Any]] = []
    for etype, log in store.logs.items():
        rows = log.rows_of(cid, n)[-recent:]
        origin = log.origin()
        for r in rows.tolist():
            came = None if origin is None else int(origin[r])
            events.append(
                {
                    "type": etype,
                    "ts": int(log.ts[r]),
                    "from": None
                    if came is None or came == NO_CODE
                    else store.contacts.ids.decode_one(came),
                }
            )
    events.sort(key=lambda e: int(e["ts"]), reverse=True)
    for e in events:
        e["time"] = when(e["ts"])
    profile = engine._attributes_of(cid)
    return {
        "customer_id": store.contacts.ids.decode_one(cid),
        "profile": profile,
        "links": links(engine, customer_id),
        "aggregates": {
            "orders_count": int(agg.orders_count[cid]),
            "revenue": float(agg.revenue[cid]),
            "first_order": when(int(agg.first_order_s[cid])),
            "last_order": when(int(agg.last_order_s[cid])),
            "last_visit": when(int(agg.last_visit_s[cid])),
            "last_email_open": when(int(agg.last_email_open_s[cid])),
        },
        "events": events[:recent],
    }


# -- ingest by link ------------------------------------------------------------------------
def split_links(engine: Engine, table: pa.Table, kind: str) -> tuple[pa.Table, Any]:
    """Before validation: the table with its customer_id made validatable, and the
    identity columns (``(customer_id with NULLs, {kind: normalised values})``), or
    ``(table, None)`` when the batch has no link column.

    Events: link columns are identity, not properties (removed from the table); a row
    names its contact by customer_id or by links. Contacts: link columns stay profile
    attributes too, and identify only rows whose customer_id is NULL or absent."""
    kinds = engine.store.identity.kinds
    present = [k for k in kinds if k in table.column_names]
    if not present or table.num_rows == 0:
        return table, None
    links = identity.link_columns(table, present, kind)
    customer_id = None
    if "customer_id" in table.column_names:
        col = table.column("customer_id")
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_integer(col.type):
            col = pc.cast(col, pa.string())
        if pa.types.is_null(col.type):
            col = pa.nulls(len(col), pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            customer_id = col.cast(pa.string())
    if customer_id is not None and kind == "contacts":
        named = pc.is_valid(customer_id)
        links = {
            k: pc.if_else(named, pa.nulls(len(v), pa.string()), v)
            for k, v in links.items()
        }
    if kind == "events":
        table = table.drop_columns(present)
    if customer_id is not None and not customer_id.null_count:
        if kind == "contacts" or all(v.null_count == len(v) for v in links.values()):
            return table, None  # every row has its id and no link value: nothing to do
    fill: pa.Array
    if customer_id is None:
        if "customer_id" in table.column_names:
            return table, None  # not text: validation says so
        if kind == "contacts":
            fill = pa.array([f"{PLACEHOLDER}{i}" for i in range(table.num_rows)])
        else:
            fill = pa.repeat(PLACEHOLDER, table.num_rows)
        table = table.append_column("customer_id", fill)
    else:
        if kind == "contacts":
            stand_in = pa.array([f"{PLACEHOLDER}{i}" for i in range(table.num_rows)])
            fill = pc.coalesce(customer_id, stand_in)
        else:
            fill = customer_id.fill_null(PLACEHOLDER)
        idx = table.column_names.index("customer_id")
        table = table.set_column(idx, "customer_id", fill)
    return table, (customer_id, links)


def resolve_batch(
    engine: Engine, ids: Any, rows: int, where: str, policy: str
) -> identity.Resolved:
    """Under the write lock: the batch's identity (see ``identity.resolve``)."""
    if policy not in MERGE_POLICIES:
        raise InvalidInput.at(
            "identity_conflicts", f"expected reject or merge, got {policy!r}"
        )
    customer_id, links = ids
    return identity.resolve(
        engine.store, customer_id, links, rows, where, policy=policy
    )


def record(resolved: identity.Resolved) -> dict | None:
    if not resolved.links and not resolved.merges:
        return None
    return {
        "merges": [list(p) for p in resolved.merges],
        "links": {k: [v, c] for k, (v, c) in resolved.links.items()},
    }


def resolved_events(batch, resolved: identity.Resolved):
    return replace(batch, customer_id=resolved.customer_id, cids=resolved.cids)


def resolved_attributes(batch, resolved: identity.Resolved):
    """An AttributeBatch keyed by the resolved customer_ids, one row per contact (the
    last row of a contact wins, as for customer_id keys). Rows without a customer_id
    were validated under stand-in keys (PLACEHOLDER + their row number)."""
    keys = _plain_keys(batch.keys)
    stand = np.asarray(pc.starts_with(keys, PLACEHOLDER))
    if stand.any():
        rows = pc.cast(
            pc.utf8_slice_codeunits(keys.filter(pa.array(stand)), 1), pa.int64()
        )
        keys = pc.replace_with_mask(
            keys, pa.array(stand), resolved.customer_id.take(rows)
        )
    return _last_row_per_contact(batch, keys)


def canonical_keys(engine: Engine, batch):
    """Under the write lock: a contacts batch whose rows name merged ids re-keyed to
    their survivors (one row per contact, the last wins), so a batch naming a merged
    id and its survivor updates the survivor once. Unchanged without merges."""
    contacts = engine.store.contacts
    if contacts.redirect is None or not len(batch.keys):
        return batch
    from segd.columns import encode_text

    keys = _plain_keys(batch.keys)
    raw = encode_text(keys, contacts.ids.lookup)
    now = contacts.canonical(raw)
    moved = raw != now
    if not moved.any():
        return batch
    survivors = contacts.ids.decode(np.ascontiguousarray(now[moved])).cast(pa.string())
    keys = pc.replace_with_mask(keys, pa.array(moved), survivors)
    return _last_row_per_contact(batch, keys)


def _plain_keys(keys) -> pa.Array:
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if pa.types.is_dictionary(keys.type):
        keys = keys.cast(keys.type.value_type)
    return keys.cast(pa.string())


def _last_row_per_contact(batch, keys: pa.Array):
    from segd.native.idmap import IdMap

    codes = IdMap().get_or_add(keys)
    if len(codes) == 0 or int(codes.max()) + 1 == len(codes):
        return replace(batch, keys=keys)
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    last = np.sort(len(codes) - 1 - first_from_end)
    take = pa.array(last)
    prepared = {}
    for name, value in batch.prepared.items():
        if isinstance(value, tuple):
            prepared[name] = (value[0][last], value[1][last])
        else:
            prepared[name] = value.take(take)
    return replace(batch, keys=keys.take(take), prepared=prepared)
