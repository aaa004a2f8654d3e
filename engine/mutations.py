"""Mutation records: every change to an Engine, as data the write-ahead log can hold.

A record carries what *passed validation* (an ``EventBatch``, an ``AttributeBatch``, a
finished ``SavedSegment``), never the raw input, so replaying it cannot fail validation and
does exactly what the live call did. ``Engine._apply(record)`` is the one place records
change the engine; the live path and recovery both call it.

Encoding (docs/storage.md): a msgpack map with ``"k"`` naming the kind; tables travel as
Arrow IPC stream bytes (``"t"``), bitmaps in roaring's portable serialisation. New kinds
(RFM config, identity links and merges, triggers) add a ``"k"`` value; readers refuse kinds
they do not know rather than skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd.ingest import AttributeBatch, EventBatch
from segd.segments.registry import SavedSegment

DIM_PREFIX = "dim:"  # event property columns; names never hold ':' (ingest.NAME)
VALID_SUFFIX = ":valid"


@dataclass
class Ack:
    """What an idempotent call answered, kept with its key (see ``IdempotencyTable``)."""

    rows: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventsAppended:
    batch: EventBatch
    idempotency_key: str | None = None
    ack: dict | None = None
    # The file this batch starts, by content ({"digest", "name"}): recorded on apply so
    # that the same file is refused next time (see ingest.check_source).
    source: dict | None = None
    # The batch's encoded fields (``prepare``), made before the write lock is taken so
    # the lock covers only the cheap framing; None: encoded on demand.
    encoded: dict | None = field(default=None, repr=False, compare=False)
    # Identity resolved under the write lock (segd.identity.resolve): merges to do and
    # links to add before the batch, so replay needs no lookup of its own. None: none.
    identity: dict | None = None


@dataclass
class AttributesUpserted:
    target: str  # "contacts" or "items"
    batch: AttributeBatch
    idempotency_key: str | None = None
    ack: dict | None = None
    encoded: dict | None = field(default=None, repr=False, compare=False)
    identity: dict | None = None  # as EventsAppended.identity


@dataclass
class LinkAdded:
    """Link (kind, normalised value) to a contact (validated: the value was free)."""

    kind: str
    value: str
    customer_id: str


@dataclass
class LinkRemoved:
    kind: str
    value: str


@dataclass
class ContactsMerged:
    """Contact `merged` became part of `survivor` (validated: both live, distinct)."""

    survivor: str
    merged: str


@dataclass
class ContactsMergedMany:
    """``Engine.merge_many``: (survivor, merged) pairs applied in order as one record
    (validated against the state the pairs before each leave)."""

    pairs: list[tuple[str, str]]


@dataclass
class SegmentPut:
    """A segment created or updated: the whole resulting SavedSegment (times included)."""

    segment: SavedSegment


@dataclass
class SegmentDeleted:
    name: str


@dataclass
class LoadChunk:
    """One validated chunk of a bulk ``load_events``; applied only with its commit.

    A load by link columns (segd.load_identity) logs each row's identity code in
    `codes`; its rows' customer_ids come from the commit's resolution."""

    load_id: str
    batch: EventBatch
    codes: np.ndarray | None = None


@dataclass
class LoadCommitted:
    """The load's chunks apply. `identity` (a load by link columns): the merges and
    links to apply first and ``ids``, the customer_id of each identity code."""

    load_id: str
    rows: int
    identity: dict | None = None


@dataclass
class LoadAborted:
    load_id: str


@dataclass
class RfmConfigSet:
    """The whole validated RFM configuration (``RfmConfig.to_dict()``)."""

    config: dict


@dataclass
class RfmComputed:
    """An ``rfm_compute`` made current: its compact result (``RfmResult.compact()``);
    applying it records the transitions and the day's counts (segd.rfm)."""

    result: Any  # segd.rfm.RfmResult


@dataclass
class ClockAdvanced:
    """``Engine.advance``: the engine clock moved to `now` (epoch seconds); applying it
    processes what fell due (segd.live), so replay reproduces members and changes."""

    now: float


Mutation = (
    EventsAppended
    | AttributesUpserted
    | SegmentPut
    | SegmentDeleted
    | LoadChunk
    | LoadCommitted
    | LoadAborted
    | RfmConfigSet
    | RfmComputed
    | ClockAdvanced
    | LinkAdded
    | LinkRemoved
    | ContactsMerged
    | ContactsMergedMany
)


class UnknownRecord(ValueError):
    """A record kind this version cannot apply (written by a newer segd)."""


# -- tables ----------------------------------------------------------------------------
def _one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        return col.combine_chunks()
    return col


def _ipc(columns: dict[str, Any]) -> bytes:
    table = pa.table({k: _one_chunk(v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table(data: bytes) -> dict[str, pa.Array]:
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    return {name: _one_chunk(table.column(name)) for name in table.column_names}


def _numpy(arr: pa.Array, dtype) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)


def _event_fields(batch: EventBatch) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "customer_id": batch.customer_id,
        "ts": pa.array(batch.ts, pa.uint32()),
        "type_code": pa.array(batch.type_codes, pa.uint32()),
    }
    if batch.item_id is not None:
        cols["item_id"] = batch.item_id
    if batch.amount is not None:
        cols["amount"] = pa.array(batch.amount, pa.float64())
    for name, arr in batch.dims.items():
        cols[DIM_PREFIX + name] = arr
    if batch.event_id is not None:
        cols["event_id"] = batch.event_id
    return {"t": _ipc(cols), "types": list(batch.type_names)}


def _event_batch(rec: dict) -> EventBatch:
    cols = _table(rec["t"])
    return EventBatch(
        cols["customer_id"],
        _numpy(cols["ts"], np.uint32),
        _numpy(cols["type_code"], np.uint32),
        list(rec["types"]),
        cols.get("item_id"),
        _numpy(cols["amount"], np.float64) if "amount" in cols else None,
        {k[len(DIM_PREFIX) :]: v for k, v in cols.items() if k.startswith(DIM_PREFIX)},
        cols.get("event_id"),
    )


def _attribute_fields(batch: AttributeBatch) -> dict[str, Any]:
    cols: dict[str, Any] = {"": batch.keys}
    layout = []
    for name, value in batch.prepared.items():
        if isinstance(value, tuple):  # numeric: (values, valid)
            values, valid = value
            cols[name] = pa.array(values)
            cols[name + VALID_SUFFIX] = pa.array(valid, pa.uint8())
            layout.append([name, str(values.dtype)])
        else:
            cols[name] = value
            layout.append([name, "arrow"])
    return {"t": _ipc(cols), "new": dict(batch.new_columns), "cols": layout}


def _attribute_batch(rec: dict) -> AttributeBatch:
    cols = _table(rec["t"])
    prepared: dict[str, Any] = {}
    for name, how in rec["cols"]:
        if how == "arrow":
            prepared[name] = cols[name]
        else:
            prepared[name] = (
                _numpy(cols[name], np.dtype(how)),
                _numpy(cols[name + VALID_SUFFIX], np.uint8),
            )
    return AttributeBatch(cols[""], dict(rec["new"]), prepared)


def _identity_fields(ident: dict) -> dict:
    """An ingest record's identity part with its link columns as plain lists."""

    def plain(x: Any) -> list:
        return x.to_pylist() if isinstance(x, pa.Array | pa.ChunkedArray) else list(x)

    return {
        "merges": [list(p) for p in ident.get("merges", [])],
        "links": {
            k: [plain(v), plain(c)] for k, (v, c) in ident.get("links", {}).items()
        },
    }


# -- records ---------------------------------------------------------------------------
def prepare_events(batch: EventBatch) -> dict:
    """The expensive part of an ``events`` record (Arrow IPC), for EventsAppended.encoded."""
    return _event_fields(batch)


def prepare_attributes(batch: AttributeBatch) -> dict:
    """The expensive part of a ``contacts`` / ``items`` record, for .encoded."""
    return _attribute_fields(batch)


def encode(m: Mutation) -> bytes:
    """The msgpack payload of a WAL record."""
    if isinstance(m, EventsAppended):
        rec = {"k": "events", **(m.encoded or _event_fields(m.batch))}
        rec.update(idem=m.idempotency_key, ack=m.ack)
        if m.source is not None:
            rec["source"] = m.source
        if m.identity is not None:
            rec["identity"] = _identity_fields(m.identity)
    elif isinstance(m, AttributesUpserted):
        rec = {"k": m.target, **(m.encoded or _attribute_fields(m.batch))}
        rec.update(idem=m.idempotency_key, ack=m.ack)
        if m.identity is not None:
            rec["identity"] = _identity_fields(m.identity)
    elif isinstance(m, SegmentPut):
        s = m.segment
        rec = {
            "k": "segment_put",
            "name": s.name,
            "ast": s.ast,
            "dsl": s.dsl,
            "static": s.static,
            "version": s.version,
            "created_ms": s.created_ms,
            "updated_ms": s.updated_ms,
            "members": None if s.members is None else s.members.serialize(),
        }
    elif isinstance(m, SegmentDeleted):
        rec = {"k": "segment_delete", "name": m.name}
    elif isinstance(m, LoadChunk):
        rec = {"k": "load_chunk", "load": m.load_id, **_event_fields(m.batch)}
        if m.codes is not None:
            rec["ic"] = np.ascontiguousarray(m.codes, dtype="<u4").tobytes()
    elif isinstance(m, LoadCommitted):
        rec = {"k": "load_commit", "load": m.load_id, "rows": m.rows}
        if m.identity is not None:
            ids = m.identity["ids"]
            rec["identity"] = {
                **_identity_fields(m.identity),
                "ids": ids.to_pylist() if isinstance(ids, pa.Array) else list(ids),
            }
    elif isinstance(m, LoadAborted):
        rec = {"k": "load_abort", "load": m.load_id}
    elif isinstance(m, RfmConfigSet):
        rec = {"k": "rfm_config", "config": m.config}
    elif isinstance(m, RfmComputed):
        rec = {"k": "rfm_computed", "result": m.result.to_record()}
    elif isinstance(m, ClockAdvanced):
        rec = {"k": "clock", "now": float(m.now)}
    elif isinstance(m, LinkAdded):
        rec = {"k": "link_add", "kind": m.kind, "value": m.value, "id": m.customer_id}
    elif isinstance(m, LinkRemoved):
        rec = {"k": "link_remove", "kind": m.kind, "value": m.value}
    elif isinstance(m, ContactsMerged):
        rec = {"k": "merge", "survivor": m.survivor, "merged": m.merged}
    elif isinstance(m, ContactsMergedMany):
        rec = {"k": "merges", "pairs": [list(p) for p in m.pairs]}
    else:
        raise TypeError(f"not a mutation: {type(m).__name__}")
    return msgpack.packb(rec, use_bin_type=True)


def unpack(payload: bytes | memoryview) -> dict:
    """The msgpack map of a record's payload (``decode_record`` makes it a Mutation)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def decode(payload: bytes | memoryview) -> Mutation:
    """A record back from its payload; ``UnknownRecord`` for kinds this segd lacks."""
    return decode_record(unpack(payload))


# An empty batch: replay notes a grouped events record's key and acknowledgement
# (Engine._note_applied) before its rows are applied with the group's.
NO_BATCH = EventBatch(
    pa.array([], pa.string()),
    np.zeros(0, np.uint32),
    np.zeros(0, np.uint32),
    [],
    None,
    None,
    {},
)


def is_plain_events(rec: dict) -> bool:
    """An ``events`` record that replay may apply together with its neighbours (one
    that starts a loaded file, ``source``, or carries identity work, ``identity``, is
    applied on its own)."""
    return (
        rec.get("k") == "events"
        and rec.get("source") is None
        and rec.get("identity") is None
    )


# -- replay: many event records as one batch --------------------------------------------
# An Arrow IPC stream is a schema message, record batch messages, and an end-of-stream
# marker. Records written with the same schema carry the same schema bytes, so a run of
# them is read as ONE stream: the first schema, every record's batch messages, one end
# marker. One read instead of a reader per record (docs/storage.md, "Recovery").
_CONTINUATION = b"\xff\xff\xff\xff"
_EOS = _CONTINUATION + b"\x00\x00\x00\x00"


def _schema_end(t: bytes) -> int:
    """Where the schema message of an IPC stream ends (0: not the expected framing)."""
    if len(t) < 16 or t[:4] != _CONTINUATION or t[-8:] != _EOS:
        return 0
    end = 8 + int.from_bytes(t[4:8], "little")  # the schema message has no body
    return end if end <= len(t) - 8 else 0


def _read_runs(tables: list[bytes]) -> list[tuple[pa.Table | None, int]]:
    """Consecutive streams with the same schema read as one table: (table, streams in
    the run), in order. (None, k): k streams the fast path does not take (unexpected
    framing, dictionary-encoded columns, not one batch per stream): the caller reads
    each on its own."""
    runs: list[tuple[pa.Table | None, int]] = []
    i = 0
    while i < len(tables):
        end = _schema_end(tables[i])
        if not end:
            runs.append((None, 1))
            i += 1
            continue
        head = tables[i][:end]
        parts: list[bytes | memoryview] = [head]
        j = i
        while j < len(tables) and tables[j][:end] == head and _schema_end(tables[j]):
            parts.append(memoryview(tables[j])[end:-8])  # joined below: no copy here
            j += 1
        parts.append(_EOS)
        reader = pa.ipc.open_stream(pa.py_buffer(b"".join(parts)))
        # A dictionary column is numbered in dictionary order, per batch (contacts,
        # items and values get their codes that way live): such records stay apart.
        batches = (
            None
            if any(pa.types.is_dictionary(f.type) for f in reader.schema)
            else list(reader)
        )
        if batches is None or len(batches) != j - i:
            runs.append((None, j - i))
        else:
            runs.append((pa.Table.from_batches(batches, reader.schema), j - i))
        i = j
    return runs


def _concat(parts: list[pa.Array | None], lengths: list[int]) -> pa.Array | None:
    """One array of the parts (None parts: NULL rows); None when every part is None."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(parts) == 1:
        return parts[0]
    kind = present[0].type
    if any(p.type != kind for p in present):
        kind = pa.large_string()
    return pa.concat_arrays(
        [
            pa.nulls(n, kind) if p is None else (p if p.type == kind else p.cast(kind))
            for p, n in zip(parts, lengths, strict=True)
        ]
    )


def events_of_records(recs: list[dict]) -> list[EventBatch]:
    """The batches of consecutive ``events`` records as few EventBatches, in order:
    runs of records with plain (not dictionary-encoded) columns become one batch each.

    Applying them (``Engine._apply_event_chunks``) does what applying the records one
    by one does: contacts and items are numbered in order of first appearance, an
    ``event_id`` is kept only at its first occurrence, each type's rows keep their
    order. Columns a record lacks are NULL (NaN amounts) for its rows; each record's type
    codes are mapped onto one list of type names. A record with dictionary-encoded
    columns is a batch of its own: its values are numbered in dictionary order."""
    out: list[EventBatch] = []
    tables: list[tuple[pa.Table, list[dict]]] = []
    r = 0
    for table, count in _read_runs([rec["t"] for rec in recs]):
        if table is not None:
            tables.append((table, recs[r : r + count]))
        else:
            if tables:
                out.append(_joined(tables))
                tables = []
            out.extend(_event_batch(rec) for rec in recs[r : r + count])
        r += count
    if tables:
        out.append(_joined(tables))
    return out


def _joined(runs: list[tuple[pa.Table, list[dict]]]) -> EventBatch:
    """One EventBatch of runs of records read as tables (see events_of_records)."""
    index: dict[str, int] = {}
    columns: dict[str, list] = {}
    lengths: list[int] = []
    ts, codes, amounts = [], [], []
    for table, recs in runs:
        n = table.num_rows
        lengths.append(n)
        cols = {name: table.column(name) for name in table.column_names}
        ts.append(_numpy(cols.pop("ts"), np.uint32))
        type_code = cols.pop("type_code")
        run_codes = np.asarray(type_code.to_numpy(), dtype=np.uint32).copy()
        # Map each record's codes onto the group's names (no work when they agree:
        # the common case, every record naming the same types in the same order).
        first = recs[0]["types"]
        mapping = [index.setdefault(t, len(index)) for t in first]
        same = mapping == list(range(len(mapping))) and all(
            rec["types"] == first for rec in recs
        )
        a = 0
        for chunk, rec in zip([] if same else type_code.chunks, recs, strict=False):
            b = a + len(chunk)
            mapping = [index.setdefault(t, len(index)) for t in rec["types"]]
            if mapping != list(range(len(mapping))):
                run_codes[a:b] = np.asarray(mapping, np.uint32)[run_codes[a:b]]
            a = b
        codes.append(run_codes)
        amount = cols.pop("amount", None)
        amounts.append(
            np.full(n, np.nan) if amount is None else _numpy(amount, np.float64)
        )
        for name in columns.keys() | cols.keys():
            col = cols.get(name)
            columns.setdefault(name, [None] * (len(lengths) - 1)).append(
                None if col is None else _one_chunk(col)
            )
    amount_all = np.concatenate(amounts)
    return EventBatch(
        _concat(columns.pop("customer_id"), lengths),
        np.concatenate(ts),
        np.concatenate(codes),
        list(index),
        _concat(columns.pop("item_id", []), lengths),
        None if np.isnan(amount_all).all() else amount_all,
        {
            k[len(DIM_PREFIX) :]: _concat(v, lengths)
            for k, v in columns.items()
            if k.startswith(DIM_PREFIX)
        },
        _concat(columns.pop("event_id", []), lengths),
    )


def decode_record(rec: dict) -> Mutation:
    """A record back from its unpacked payload (``unpack``)."""
    kind = rec.get("k")
    if kind == "events":
        return EventsAppended(
            _event_batch(rec),
            rec.get("idem"),
            rec.get("ack"),
            rec.get("source"),
            identity=rec.get("identity"),
        )
    if kind in ("contacts", "items"):
        return AttributesUpserted(
            kind,
            _attribute_batch(rec),
            rec.get("idem"),
            rec.get("ack"),
            identity=rec.get("identity"),
        )
    if kind == "link_add":
        return LinkAdded(rec["kind"], rec["value"], rec["id"])
    if kind == "link_remove":
        return LinkRemoved(rec["kind"], rec["value"])
    if kind == "merge":
        return ContactsMerged(rec["survivor"], rec["merged"])
    if kind == "merges":
        return ContactsMergedMany([(s, m) for s, m in rec["pairs"]])
    if kind == "segment_put":
        members = rec["members"]
        return SegmentPut(
            SavedSegment(
                rec["name"],
                rec["ast"],
                rec["dsl"],
                rec["static"],
                rec["version"],
                rec["created_ms"],
                rec["updated_ms"],
                None if members is None else BitMap.deserialize(members),
            )
        )
    if kind == "segment_delete":
        return SegmentDeleted(rec["name"])
    if kind == "load_chunk":
        codes = rec.get("ic")
        return LoadChunk(
            rec["load"],
            _event_batch(rec),
            None if codes is None else np.frombuffer(codes, dtype="<u4"),
        )
    if kind == "load_commit":
        return LoadCommitted(rec["load"], rec["rows"], rec.get("identity"))
    if kind == "load_abort":
        return LoadAborted(rec["load"])
    if kind == "rfm_config":
        return RfmConfigSet(rec["config"])
    if kind == "rfm_computed":
        from segd.rfm import RfmResult

        return RfmComputed(RfmResult.from_record(rec["result"]))
    if kind == "clock":
        return ClockAdvanced(float(rec["now"]))
    raise UnknownRecord(f"unknown record kind {kind!r} (written by a newer segd?)")
