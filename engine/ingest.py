"""The one ingest path: validate a whole batch, then apply it to the store.

Every mutation (bulk loads, live events, profile upserts, catalog updates) comes through
here, so the write-ahead log of the durability work can sit in front of ``apply_*``. A batch
is checked completely before anything is applied; a bad batch raises ``InvalidInput`` naming
the row and the column and leaves the store exactly as it was.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd import pqdict
from segd.columns import dictionary_lookup, encode_text, kind_of_arrow
from segd.errors import AlreadyExists, InvalidInput, ValueRejected
from segd.native import NO_CODE, loadsplit
from segd.native.idmap import IdMap, ShortKeyIndex
from segd.readahead import Backlog, read_ahead
from segd.store import LoadedSource, Store
from segd.timeutil import ms_to_iso, to_event_seconds

NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Event types: docs/data-model.md. A letter first, at most 64 characters.
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_EVENT_TYPE_CHARS = 64
EVENT_CORE = ("customer_id", "ts", "type", "item_id", "amount", "event_id")
# Identifier columns are text, always: never inferred as numbers from a CSV (an id
# "00001" must stay "00001"), and an empty id is refused.
ID_COLUMNS = ("customer_id", "item_id", "order_id", "event_id")
TEXT_COLUMNS = (
    *ID_COLUMNS,
    "type",
    "phrase",
    "advertiser",
    "campaign",
    "ad",
    "channel",
    "category",
    "brand",
)


EMPTY_EVENTS = pa.table(
    {
        "customer_id": pa.array([], pa.string()),
        "ts": pa.array([], pa.timestamp("ms", tz="UTC")),
        "type": pa.array([], pa.string()),
    }
)


@dataclass(frozen=True)
class EventBatch:
    """A validated event batch, as arrays ready to apply.

    Self-contained (Arrow arrays, numpy arrays and names; no reference to a store), so the
    write-ahead log can record exactly what was validated and replay it through
    ``apply_events``. ``event_id`` (optional) deduplicates at apply time: a row whose id
    was seen before, in this batch or earlier, is dropped.
    """

    customer_id: pa.Array
    ts: np.ndarray  # uint32 seconds
    type_codes: np.ndarray  # uint32 index into type_names per row
    type_names: list[str]
    item_id: pa.Array | None
    amount: np.ndarray | None
    dims: dict[str, pa.Array]
    event_id: pa.Array | None = None
    # The rows' internal contact numbers when identity resolution under the write lock
    # found them already (rows named by known links): applying then skips the second
    # lookup of ``customer_id``. Never recorded: the WAL keys rows by ``customer_id``,
    # which names the same contacts, and replay looks those up.
    cids: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.ts)


def read_table(source, kind: str, schema: dict[str, str] | None = None) -> pa.Table:
    """A path (CSV, Parquet, JSON Lines), a pyarrow Table/RecordBatch or a list of dicts."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, list):
        return _table_from_rows(source, kind)
    if isinstance(source, (str, Path)):
        return _read_file(Path(source), kind, schema)
    raise InvalidInput.at(
        kind,
        f"expected a path, a pyarrow.Table or a list of dicts, "
        f"got {type(source).__name__}",
    )


def _table_from_rows(rows: list, kind: str) -> pa.Table:
    """A table from a list of dicts: columns are the union of all keys (a key missing
    from a row is NULL there), and a value of the wrong type is named by row and key."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput.in_batch(
                kind, f"expected a dict, got {type(row).__name__}", row=i
            )
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            lo, hi = 0, len(values)  # bisect to the first value that breaks the type
            while hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    pa.array(values[:mid])
                    lo = mid
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    hi = mid
            bad = values[lo]
            before = pa.array(values[:lo]).type
            want = (
                "a number"
                if pa.types.is_integer(before) or pa.types.is_floating(before)
                else "text"
                if pa.types.is_string(before)
                else str(before)
            )
            raise InvalidInput.in_batch(
                kind,
                f"expected {want} like the rows before it, got {_shown(bad)}",
                row=lo,
                column=name,
            ) from None
    return pa.table(columns)


def _read_file(path: Path, kind: str, schema: dict[str, str] | None) -> pa.Table:
    if not path.exists():
        raise InvalidInput.at(str(path), "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            import pyarrow.json as pj

            return pj.read_json(path)
        if suffix in (".csv", ".tsv", ".txt"):
            import pyarrow.csv as pcsv

            types = {c: pa.string() for c in TEXT_COLUMNS}
            for col, k in (schema or {}).items():
                # Times are read as text and parsed by segd (zone-less text is UTC).
                types[col] = pa.string() if k == "timestamp" else _ARROW_OF_KIND[k]
            return pcsv.read_csv(
                path,
                parse_options=pcsv.ParseOptions(
                    delimiter="\t" if suffix == ".tsv" else ","
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types=types, strings_can_be_null=True
                ),
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput.at(str(path), f"cannot read {kind}: {exc}") from None
    raise InvalidInput.at(
        str(path),
        f"unknown file type {suffix!r} (expected .csv, .tsv, .parquet or .jsonl)",
    )


_ARROW_OF_KIND = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
    "category": pa.string(),
    "tags": pa.list_(pa.string()),
}


def _column(table: pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    """A column as Arrow has it: chunks are kept (copying 20M strings costs seconds)."""
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray) and col.num_chunks == 1:
        return col.chunk(0)
    return col


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _text(table: pa.Table, name: str, kind: str, *, required: bool) -> pa.Array | None:
    """A text column (integers are cast to text); None when absent and optional.

    NULLs are refused in a required column, and an empty string in an id column."""
    if name not in table.column_names:
        if required:
            raise InvalidInput.in_batch(kind, "required column is missing", column=name)
        return None
    arr = _column(table, name)
    if pa.types.is_dictionary(arr.type) and _is_text(arr.type.value_type):
        # kept encoded: engine.columns.encode_text expands it cheaply
        _check_text_values(arr, name, kind, required=required)
        return arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        arr = pa.nulls(len(arr), pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if pa.types.is_integer(arr.type):
            arr = pc.cast(arr, pa.string())
        else:
            raise InvalidInput.in_batch(
                kind, f"expected text, got {arr.type}", column=name
            )
    _check_text_values(arr, name, kind, required=required)
    return arr


def _check_text_values(arr, name: str, kind: str, *, required: bool) -> None:
    """NULL in a required column, "" in an id column: refused by row."""
    if required and arr.null_count:
        row = _first_row(~np.asarray(pc.is_valid(arr)))
        raise InvalidInput.in_batch(
            kind, "required value is NULL", row=row, column=name
        )
    if name in ID_COLUMNS:
        empty = _first_empty(arr)
        if empty is not None:
            raise InvalidInput.in_batch(
                kind, f"{name} must not be empty", row=empty, column=name
            )


def _first_empty(arr) -> int | None:
    """Row of the first "" in a text column (plain, chunked or dictionary), else None.
    A dictionary column is checked on its dictionary, then on the indices only if it
    holds "" (a 200M-row load with a 10M-entry dictionary reads 10M strings); the common
    case (no "") costs one min() over the string lengths, in Arrow."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    first = 0
    for chunk in chunks:
        values = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk
        shortest = pc.min(pc.binary_length(values)).as_py() if len(values) else None
        if shortest == 0:
            lengths = np.asarray(pc.binary_length(values).fill_null(1))
            if pa.types.is_dictionary(chunk.type):
                idx = np.asarray(chunk.indices.fill_null(-1))
                hit = np.isin(idx, np.flatnonzero(lengths == 0))
            else:
                hit = lengths == 0
            if hit.any():
                return first + _first_row(hit)
        first += len(chunk)
    return None


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_names(table: pa.Table, kind: str) -> None:
    for name in table.column_names:
        if not NAME.fullmatch(name):
            raise InvalidInput.in_batch(
                kind,
                "column names must match "
                "[a-z_][a-z0-9_]* (so segment conditions can name them)",
                column=name[:80],
            )
    dupes = {c for c in table.column_names if table.column_names.count(c) > 1}
    if dupes:
        raise InvalidInput.in_batch(
            kind, "column appears twice", column=sorted(dupes)[0]
        )


def validate_events(table: pa.Table) -> EventBatch:
    """Check an event batch completely; raise InvalidInput at the first problem.

    Every value is checked here and nowhere else (the gRPC layer only converts): ids are
    non-empty text, ``ts`` within 1970..2106, types match ``[a-z][a-z0-9_]*`` (at most 64
    characters), amounts are finite numbers or NULL, other properties are text."""
    if table.num_columns == 0 and table.num_rows == 0:
        table = EMPTY_EVENTS  # an empty batch (no rows, no columns) is a no-op
    _check_names(table, "events")
    customer_id = _text(table, "customer_id", "events", required=True)
    types = _text(table, "type", "events", required=True)
    if "ts" not in table.column_names:
        raise InvalidInput.in_batch("events", "required column is missing", column="ts")
    try:
        ts = to_event_seconds(_column(table, "ts"))
    except ValueRejected as exc:
        raise exc.located("events", "ts") from None
    type_names = IdMap()  # this batch's types, coded in order of first use
    type_codes = encode_text(types, type_names.get_or_add)
    names = type_names.to_arrow().to_pylist()
    for i, name in enumerate(names):
        if not EVENT_TYPE.fullmatch(name):
            row = _first_row(type_codes == i)
            reason = (
                f"event type of {len(name)} characters (at most {MAX_EVENT_TYPE_CHARS})"
                if len(name) > MAX_EVENT_TYPE_CHARS
                else f"event type {_shown(name)} must match [a-z][a-z0-9_]*"
            )
            raise InvalidInput.in_batch("events", reason, row=row, column="type")
    amount = None
    if "amount" in table.column_names:
        amount = _amounts(_column(table, "amount"))
    dims = {}
    for name in table.column_names:
        if name in EVENT_CORE:
            continue
        dims[name] = _text(table, name, "events", required=False)
    return EventBatch(
        customer_id,
        ts,
        type_codes,
        names,
        _text(table, "item_id", "events", required=False),
        amount,
        dims,
        _text(table, "event_id", "events", required=False),
    )


# Amounts with NULLs (most event rows have none) become float64 with NaN in one native
# pass (``loadsplit.amounts_with_nan``). False: numpy (a bool mask, isfinite, np.where).
NATIVE_AMOUNTS = True


def _amounts(arr) -> np.ndarray:
    """float64 amounts, NULL -> NaN; a NaN or infinite input value is refused by row."""
    if not (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_decimal(arr.type)
        or pa.types.is_null(arr.type)
    ):
        raise InvalidInput.in_batch(
            "events", f"expected a number, got {arr.type}", column="amount"
        )
    values = pc.cast(arr, pa.float64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count == len(values):
        return np.full(len(values), np.nan)
    # The value buffer as it is (NULL slots hold arbitrary numbers): no fill, no copy.
    raw = np.frombuffer(
        values.buffers()[1], np.float64, count=len(values), offset=values.offset * 8
    )
    if values.null_count and NATIVE_AMOUNTS:
        # One native pass: NULL -> NaN, the first non-finite value's row.
        out, bad_row = loadsplit.amounts_with_nan(
            raw, np.frombuffer(values.buffers()[0], np.uint8), values.offset
        )
        if bad_row >= 0:
            raise InvalidInput.in_batch(
                "events",
                f"amount must be a finite number, got {raw[bad_row]!r}",
                row=bad_row,
                column="amount",
            )
        return out
    valid = np.asarray(pc.is_valid(values)) if values.null_count else None
    bad = ~np.isfinite(raw)
    if valid is not None:
        bad &= valid
    if bad.any():
        row = _first_row(bad)
        raise InvalidInput.in_batch(
            "events",
            f"amount must be a finite number, got {raw[row]!r}",
            row=row,
            column="amount",
        )
    if valid is None:
        return raw
    return np.where(valid, raw, np.nan)  # NULL: no amount (NaN inside the engine)


@dataclass
class TypeRows:
    """One event type's rows of a batch, encoded: what EventLog.append takes."""

    cids: np.ndarray
    ts: np.ndarray
    dims: dict[str, np.ndarray]
    amount: np.ndarray | None


def drop_seen_events(store: Store, batch: EventBatch) -> EventBatch:
    """The batch without rows whose ``event_id`` was seen before (earlier in the batch or
    in an earlier batch); rows without an id are kept. Records the new ids (call under the
    write lock, as part of applying)."""
    if batch.event_id is None or batch.event_id.null_count == len(batch.event_id):
        return batch
    before = len(store.event_ids)
    keep = first_of_each_id(
        encode_text(batch.event_id, store.event_ids.get_or_add), before
    )
    if keep.all():
        return batch
    return keep_rows(batch, keep)


def keep_rows(batch: EventBatch, keep: np.ndarray) -> EventBatch:
    """The batch's rows where `keep` (a bool mask) is set."""
    rows = pa.array(np.flatnonzero(keep))

    def take(arr):
        return None if arr is None else arr.take(rows)

    return EventBatch(
        take(batch.customer_id),
        batch.ts[keep],
        batch.type_codes[keep],
        batch.type_names,
        take(batch.item_id),
        None if batch.amount is None else batch.amount[keep],
        {d: take(a) for d, a in batch.dims.items()},
        take(batch.event_id),
        None if batch.cids is None else batch.cids[keep],
    )


def first_of_each_id(codes: np.ndarray, before: int) -> np.ndarray:
    """Rows to keep of a batch's event id `codes` (NO_CODE: no id) after coding them
    into a map that held `before` ids: rows without an id, and the first row of each id
    new to the map."""
    keep = codes == NO_CODE
    new_rows = np.flatnonzero((codes != NO_CODE) & (codes >= before))
    if len(new_rows):
        _, first = np.unique(codes[new_rows], return_index=True)
        keep[new_rows[first]] = True
    return keep


def count_new_events(store: Store, batch: EventBatch) -> int:
    """The rows ``apply_events`` will append: those without an event_id, plus the first
    row of each id not seen before. Reads the store only (for the acknowledgement that
    is logged before the batch is applied)."""
    if batch.event_id is None or batch.event_id.null_count == len(batch.event_id):
        return batch.rows
    known = encode_text(batch.event_id, store.event_ids.lookup)
    local = encode_text(batch.event_id, IdMap().get_or_add)
    no_id = int(np.count_nonzero(local == NO_CODE))
    fresh = local[(local != NO_CODE) & (known == NO_CODE)]
    return no_id + len(np.unique(fresh))


def encode_events(store: Store, batch: EventBatch) -> dict[str, TypeRows]:
    """Encode a validated batch (contacts, items and dictionaries grow) and split it by
    type. Rows with an ``event_id`` seen before are dropped first (see
    ``drop_seen_events``); the rows returned are the ones to append."""
    batch = drop_seen_events(store, batch)
    if batch.cids is not None:
        cids = batch.cids  # resolved by link (identity.resolve): known, canonical
    else:
        cids = store.contacts.ensure(batch.customer_id)
    store.sync_sizes()
    codes: dict[str, np.ndarray] = {}
    if batch.item_id is not None:
        codes["item"] = encode_text(batch.item_id, store.catalog.ensure)
    for name, arr in batch.dims.items():
        if name not in store.dim_maps:
            store.dim_maps[name] = IdMap()
        codes[name] = encode_text(arr, store.dim_maps[name].get_or_add)
    return split_by_type(batch, cids, codes)


def split_by_type(
    batch: EventBatch, cids: np.ndarray, codes: dict[str, np.ndarray]
) -> dict[str, TypeRows]:
    """A batch's encoded rows (`cids`, dimension `codes`) split by event type.

    Rows are grouped by type with a counting sort (``segd.native.loadsplit``: each
    row's slot, then one pass per column writing it to its slot), so each type's rows
    are a contiguous slice in arrival order; the same pass notes which types hold any
    value of a column (a type keeps only the dimensions it carries)."""
    n = len(cids)
    names = batch.type_names
    n_types = len(names)
    if n_types <= 1:
        return _split_one_type(batch, cids, codes)
    types = np.ascontiguousarray(batch.type_codes, dtype=np.uint32)
    pos, bounds = loadsplit.type_positions(types, n_types)

    def grouped(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return loadsplit.scatter(np.ascontiguousarray(col), pos, types, n_types)

    cids, _ = grouped(cids)
    ts, _ = grouped(batch.ts)
    amount = has_amount = None
    if batch.amount is not None:
        amount, has_amount = grouped(batch.amount)
    grouped_codes = {d: grouped(c) for d, c in codes.items()}
    assert len(cids) == n
    out = {}
    for t, name in enumerate(names):
        a, b = int(bounds[t]), int(bounds[t + 1])
        if a == b:
            continue
        t_amount = None
        if amount is not None and has_amount is not None and has_amount[t]:
            t_amount = amount[a:b]
        t_dims = {d: c[a:b] for d, (c, present) in grouped_codes.items() if present[t]}
        out[name] = TypeRows(cids[a:b], ts[a:b], t_dims, t_amount)
    return out


def _split_one_type(
    batch: EventBatch, cids: np.ndarray, codes: dict[str, np.ndarray]
) -> dict[str, TypeRows]:
    """``split_by_type`` of a batch with at most one type (no grouping to do)."""
    if not batch.type_names or len(cids) == 0:
        return {}
    amount = batch.amount
    if amount is not None and np.isnan(amount).all():
        amount = None
    dims = {d: c for d, c in codes.items() if (c != NO_CODE).any()}
    return {batch.type_names[0]: TypeRows(cids, batch.ts, dims, amount)}


# A bulk load's commit appends a type's log on a worker thread while the loading
# thread folds the same rows into the rollups and joins the next type
# (``Engine._append_parts_overlapped``). False: one thread, type after type.
PARALLEL_COMMIT = True


# A bulk load into an engine whose contact / item / value map is still empty hands the
# engine its staged map (``IdMap.take_from``) instead of re-adding every value. False:
# always re-add (the A/B and the property test's reference).
ADOPT_STAGED_MAPS = True


def append_rows(store: Store, name: str, rows: TypeRows) -> None:
    """Append one type's encoded rows to its log and fold them into the rollups."""
    store.log(name).append(rows.cids, rows.ts, rows.dims, rows.amount)
    store.aggregates.apply(
        name, rows.cids, rows.ts, rows.amount, rows.dims.get("order_id")
    )


# A bulk load encodes its customer and item ids through a ``ShortKeyIndex`` in front of
# its staged maps: a short id seen before (at 10M contacts, ~190M look-ups of ~800k
# distinct ids a row group in a 9M-entry map) costs one cache miss instead of the map's
# three. The codes are the map's own. False: straight into the maps (the A/B and the
# property test's reference).
KEY_INDEX = True


# With KEY_INDEX, the staged customer and item maps are grown ahead of each batch of
# new ids, at least 2x at a time (``IdMap.reserve``), instead of by ~1/8 whenever full:
# at 10M, ~10M new customer ids arrive over ~200 row groups, and the map's arrays were
# reallocated (and its table rehashed) dozens of times, ~9% of the loading thread's
# samples. The codes are the same. False: the maps grow as they fill (``load7``).
GROW_AHEAD = True


# A staged load's event ids ride with its rows as a pseudo-dimension (a name no
# column can have), to drop at commit the rows whose id the engine had seen before.
_EVENT_ID_CODES = "\x00event_id"
# A chunk grouped in ``prepare`` (``SPARSE_SPLIT``) carries its times and amounts so too.
_TS, _AMOUNT = "\x00ts", "\x00amount"


def _remap(codes: np.ndarray, mapping: np.ndarray | None) -> np.ndarray:
    """`mapping[codes]` with NO_CODE kept (a native gather); `mapping` None is the
    identity (``_identity_or``): the codes are returned as they are."""
    if mapping is None:
        return codes
    return loadsplit.remap_codes(codes, mapping)


def _identity_or(mapping: np.ndarray) -> np.ndarray | None:
    """None when `mapping` maps every staged code onto itself (a load into an engine
    that knew none of its values: the staged codes are the engine's, and 200M rows
    need no gather), else `mapping`."""
    return None if loadsplit.is_identity(mapping) else mapping


# A bulk load splits each chunk by type as it encodes it (``StagedLoad.prepare``, so on
# the read-ahead thread when the loading thread is behind): a column goes straight to
# its grouped order (``loadsplit.scatter_dict`` / ``scatter_present``) and, when sparse
# (an order id, an amount, a phrase: 0.3-5% of the rows at 10M), only the slots of the
# types that carry it are written. False: every column expanded to one code per row
# first, then scattered whole on the loading thread (``split_by_type``), as ``load7``.
SPARSE_SPLIT = True


@dataclass
class _Grouping:
    """A chunk's rows grouped by type (``loadsplit.type_positions``)."""

    types: np.ndarray  # uint32 type code per row
    pos: np.ndarray  # uint32 grouped slot per row
    bounds: np.ndarray  # int64, n_types + 1: type t's slots bounds[t]:bounds[t + 1]


def _grouping(batch: EventBatch) -> _Grouping | None:
    """The chunk's grouping by type; None with at most one type (nothing to group)."""
    n_types = len(batch.type_names)
    if n_types <= 1:
        return None
    types = np.ascontiguousarray(batch.type_codes, dtype=np.uint32)
    pos, bounds = loadsplit.type_positions(types, n_types)
    return _Grouping(types, pos, bounds)


def _scatter(col: np.ndarray, g: _Grouping) -> tuple[np.ndarray, np.ndarray]:
    """``loadsplit.scatter`` of one column into the chunk's grouped order."""
    return loadsplit.scatter(
        np.ascontiguousarray(col), g.pos, g.types, len(g.bounds) - 1
    )


def _grouped_codes(arr, encode, g: _Grouping) -> tuple[np.ndarray, np.ndarray]:
    """``scatter(encode_text(arr, encode), ...)`` of a text column: (codes in the
    grouped order, present per type), with `encode` called exactly as ``encode_text``
    calls it. A sparse column (valid on under a quarter of its rows) goes through the
    kernels that visit only its valid rows (``loadsplit.scatter_valid``: the slots of a
    type holding no value are left undefined, and no caller reads them)."""
    if isinstance(arr, pa.ChunkedArray) and arr.num_chunks == 1:
        arr = arr.chunk(0)
    n = len(arr)
    if isinstance(arr, pa.DictionaryArray) and pa.types.is_int32(arr.type.index_type):
        indices = arr.indices
        bits = indices.buffers()[0] if indices.null_count else None
        valid = None if bits is None else np.frombuffer(bits, np.uint8)
        if valid is not None and loadsplit.is_sparse(valid, indices.offset, n):
            idx = np.frombuffer(
                indices.buffers()[1], np.int32, count=n, offset=indices.offset * 4
            )
            used = loadsplit.sparse_used_entries(
                idx, valid, indices.offset, len(arr.dictionary)
            )
            lookup = dictionary_lookup(arr.dictionary, used, encode)
            return loadsplit.scatter_valid(
                lookup, valid, indices.offset, n, g.pos, g.types, g.bounds, idx
            )
    elif isinstance(arr, (pa.StringArray, pa.LargeStringArray)) and 0 < arr.null_count:
        valid = np.frombuffer(arr.buffers()[0], np.uint8)
        if loadsplit.is_sparse(valid, arr.offset, n):
            values = (
                np.zeros(0, dtype=np.uint32)
                if arr.null_count == n  # as encode_text: nothing to encode
                else np.ascontiguousarray(encode(pc.drop_null(arr)), dtype=np.uint32)
            )
            return loadsplit.scatter_valid(
                values, valid, arr.offset, n, g.pos, g.types, g.bounds
            )
    return _scatter(encode_text(arr, encode), g)


@dataclass
class PreparedChunk:
    """A validated chunk half staged (``StagedLoad.prepare``): the rows kept and the
    item, dimension and event id codes; the customer ids are still text.

    With ``SPARSE_SPLIT`` (and two types or more) the chunk is already grouped by type:
    `grouping` is set, `grouped` holds each coded column (and ``ts``, ``amount``) in the
    grouped order with its per-type presence, and `codes` is empty."""

    batch: EventBatch
    codes: dict[str, np.ndarray]
    grouping: _Grouping | None = None
    grouped: dict[str, tuple[np.ndarray, np.ndarray]] | None = None


class StagedLoad:
    """A bulk load read once: each validated chunk is encoded against dictionaries of
    its own (customer ids, items, each dimension, event ids) and split by type, so the
    engine is untouched until every chunk has passed; ``commit`` (under the write
    lock) then adds each distinct value to the engine once and maps the staged codes
    onto the engine's with one gather per column. New contacts, items and values get
    the codes they would get from applying the chunks in order (first use first)."""

    def __init__(self) -> None:
        self.customers = IdMap()
        self.items = IdMap()
        self.dims: dict[str, IdMap] = {}
        self.event_ids = IdMap()
        self.parts: dict[str, list[TypeRows]] = {}
        # How customer / item ids are coded (``KEY_INDEX``): the same codes either way.
        self._customer_codes: Callable[..., np.ndarray] = self.customers.get_or_add
        self._item_codes: Callable[..., np.ndarray] = self.items.get_or_add
        if KEY_INDEX:
            self._customer_codes = ShortKeyIndex(
                self.customers, reserve=GROW_AHEAD
            ).get_or_add
            self._item_codes = ShortKeyIndex(self.items, reserve=GROW_AHEAD).get_or_add

    def add(self, batch: EventBatch) -> None:
        """Stage a validated chunk (rows repeating an event id of this load dropped)."""
        self.finish(self.prepare(batch))

    def prepare(self, batch: EventBatch) -> PreparedChunk:
        """The first half of ``add``: drop the rows repeating an event id of this load
        and encode the items and every dimension against the load's maps — all but
        the customer ids. It reads and writes only the event id, item and dimension
        maps, and ``finish`` only the customer map and the staged parts, so a bulk
        load runs ``prepare`` of chunk N + 1 on its read-ahead thread while the
        loading thread finishes chunk N (``STAGE_AHEAD``): each map still sees the
        chunks in order, so every code is the one ``add`` gives."""
        event_codes = None
        if batch.event_id is not None and batch.event_id.null_count < batch.rows:
            before = len(self.event_ids)
            event_codes = encode_text(batch.event_id, self.event_ids.get_or_add)
            keep = first_of_each_id(event_codes, before)
            if not keep.all():
                batch, event_codes = keep_rows(batch, keep), event_codes[keep]
        g = _grouping(batch) if SPARSE_SPLIT else None
        if g is not None:
            return self._prepare_grouped(batch, event_codes, g)
        codes: dict[str, np.ndarray] = {}
        if batch.item_id is not None:
            codes["item"] = encode_text(batch.item_id, self._item_codes)
        for name, arr in batch.dims.items():
            local = self.dims.get(name)
            if local is None:
                local = self.dims[name] = IdMap()
            codes[name] = encode_text(arr, local.get_or_add)
        if event_codes is not None:
            codes[_EVENT_ID_CODES] = event_codes
        return PreparedChunk(batch, codes)

    def _prepare_grouped(
        self, batch: EventBatch, event_codes: np.ndarray | None, g: _Grouping
    ) -> PreparedChunk:
        """``prepare``'s encoding with each column scattered straight into the grouped
        order (``SPARSE_SPLIT``): the same maps called in the same order."""
        grouped: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if batch.item_id is not None:
            grouped["item"] = _grouped_codes(batch.item_id, self._item_codes, g)
        for name, arr in batch.dims.items():
            local = self.dims.get(name)
            if local is None:
                local = self.dims[name] = IdMap()
            grouped[name] = _grouped_codes(arr, local.get_or_add, g)
        if event_codes is not None:
            grouped[_EVENT_ID_CODES] = _scatter(event_codes, g)
        grouped[_TS] = _scatter(batch.ts, g)
        if batch.amount is not None:
            grouped[_AMOUNT] = _scatter(batch.amount, g)
        return PreparedChunk(batch, {}, g, grouped)

    def finish(self, chunk: PreparedChunk) -> None:
        """The second half of ``add``: encode the customer ids and split by type."""
        batch = chunk.batch
        if chunk.grouping is not None and chunk.grouped is not None:
            self._finish_grouped(batch, chunk.grouping, chunk.grouped)
            return
        cids = encode_text(batch.customer_id, self._customer_codes)
        for name, rows in split_by_type(batch, cids, chunk.codes).items():
            self.parts.setdefault(name, []).append(rows)

    def _finish_grouped(
        self,
        batch: EventBatch,
        g: _Grouping,
        grouped: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """``finish`` of a chunk ``_prepare_grouped`` split: the customer ids go
        straight to the grouped order, then each type takes its slices (the rows
        ``split_by_type`` gives, column for column)."""
        cids, _ = _grouped_codes(batch.customer_id, self._customer_codes, g)
        ts, _ = grouped.pop(_TS)
        amount = has_amount = None
        if _AMOUNT in grouped:
            amount, has_amount = grouped.pop(_AMOUNT)
        for t, name in enumerate(batch.type_names):
            a, b = int(g.bounds[t]), int(g.bounds[t + 1])
            if a == b:
                continue
            t_amount = None
            if amount is not None and has_amount is not None and has_amount[t]:
                t_amount = amount[a:b]
            t_dims = {d: c[a:b] for d, (c, present) in grouped.items() if present[t]}
            rows = TypeRows(cids[a:b], ts[a:b], t_dims, t_amount)
            self.parts.setdefault(name, []).append(rows)

    def commit(self, store: Store) -> dict[str, list[TypeRows]]:
        """Under the write lock: add the load's distinct values to the engine and return
        its rows per type in the engine's codes (the staged state is consumed).

        Rows whose event id the engine had seen before are dropped first, and, as when
        applying chunk by chunk, a contact, item or value named only by dropped rows is
        not created."""
        dropped = False
        if len(self.event_ids):
            values = self.event_ids.to_arrow()
            seen = (store.event_ids.lookup(values) != NO_CODE).astype(np.uint32)
            store.event_ids.get_or_add(values)
            if seen.any():
                dropped = self._drop_seen(seen)
        locals_ = {"item": self.items, **self.dims} if len(self.items) else self.dims
        used = self._used(locals_) if dropped else {}
        cid_of = _add_values(
            self.customers, used.get(""), store.contacts.ensure, store.contacts.ids
        )
        store.sync_sizes()
        maps = {}
        for name, local in locals_.items():
            add: Callable[..., np.ndarray]
            if name == "item":
                add, ids = store.catalog.ensure, store.catalog.ids
                if len(ids) == 0:
                    store.catalog.touch()  # (ensure does when it adds; take_from not)
            else:
                ids = store.dim_maps.setdefault(name, IdMap())
                add = ids.get_or_add
            maps[name] = _add_values(local, used.get(name), add, ids)
        self.customers = self.items = self.event_ids = None  # type: ignore[assignment]
        self._customer_codes = self._item_codes = None  # type: ignore[assignment]
        self.dims = {}
        out: dict[str, list[TypeRows]] = {}
        cid_map = _identity_or(cid_of)
        value_maps = {d: _identity_or(m) for d, m in maps.items()}
        for name, parts in self.parts.items():
            for p in parts:
                dims = {
                    d: _remap(c, value_maps[d])
                    for d, c in p.dims.items()
                    if d in value_maps
                }
                rows = TypeRows(_remap(p.cids, cid_map), p.ts, dims, p.amount)
                out.setdefault(name, []).append(rows)
            parts.clear()
        self.parts = {}
        return out

    def _drop_seen(self, seen: np.ndarray) -> bool:
        """Drop staged rows whose event id (`seen[code]` = 1) the engine had seen."""
        dropped = False
        for name in list(self.parts):
            kept = []
            for p in self.parts[name]:
                ids = p.dims.get(_EVENT_ID_CODES)
                if ids is not None:
                    drop = _remap(ids, seen) == 1
                    if drop.any():
                        p, dropped = _drop(p, drop), True
                if len(p.cids):
                    kept.append(p)
            self.parts[name] = kept
        return dropped

    def _used(self, locals_: dict[str, IdMap]) -> dict[str, np.ndarray]:
        """Per staged dictionary ("" for customer ids): which codes rows still use."""
        used = {"": np.zeros(len(self.customers), dtype=bool)}
        used.update({d: np.zeros(len(m), dtype=bool) for d, m in locals_.items()})
        for parts in self.parts.values():
            for p in parts:
                used[""][p.cids] = True
                for d, c in p.dims.items():
                    if d in used:
                        used[d][c[c != NO_CODE]] = True
        return used


def _add_values(
    local: IdMap, used: np.ndarray | None, add, ids: IdMap | None = None
) -> np.ndarray:
    """The engine's code of each staged code: the staged values (only the `used` ones,
    when given; the others map to NO_CODE) added through `add`, in staged order.

    When the engine's map `ids` is empty and every staged value is used, it takes the
    staged map whole (``IdMap.take_from``: no copy, no second hashing of ~10M customer
    ids) and the codes stay as staged; `add` is still called, with no values, for
    its owner's bookkeeping (contacts' and items' column sizes)."""
    if (
        ADOPT_STAGED_MAPS
        and ids is not None
        and len(ids) == 0
        and len(local)
        and (used is None or used.all())
    ):
        n = len(local)
        ids.take_from(local)
        add(pa.array([], pa.large_string()))
        return np.arange(n, dtype=np.uint32)
    values = local.to_arrow()
    if used is None or used.all():
        return add(values)
    out = np.full(len(values), NO_CODE, dtype=np.uint32)
    out[used] = add(values.filter(pa.array(used)))
    return out


def _drop(rows: TypeRows, drop: np.ndarray) -> TypeRows:
    """The rows not in `drop`; like ``split_by_type``, columns left all NULL go."""
    keep = ~drop
    amount = None if rows.amount is None else rows.amount[keep]
    if amount is not None and np.isnan(amount).all():
        amount = None
    return TypeRows(
        rows.cids[keep],
        rows.ts[keep],
        {d: c[keep] for d, c in rows.dims.items() if (c[keep] != NO_CODE).any()},
        amount,
    )


def apply_events(
    store: Store,
    batch: EventBatch,
    touched: Callable[[np.ndarray, str], None] | None = None,
) -> int:
    """Apply a validated batch: contacts, items and dictionaries grow; logs and rollups.

    `touched(cids, event_type)` is called per type with the contacts appended to.
    Returns the rows appended: ``batch.rows`` minus the duplicates dropped by event_id."""
    applied = 0
    for name, rows in encode_events(store, batch).items():
        append_rows(store, name, rows)
        applied += len(rows.cids)
        if touched is not None:
            touched(rows.cids, name)
    return applied


def check_source(store: Store, digest: str, *, force: bool) -> None:
    """Refuse a file whose content was loaded before, unless forced (under the lock)."""
    seen = store.sources.get(digest)
    if seen is not None and not force:
        when = ms_to_iso(seen.loaded_ms)
        raise AlreadyExists(
            f"{seen.name or 'a file'} with this content was already loaded at {when}; "
            "loading it again would count its events twice "
            "(use --force to load it anyway, or give events an event_id)"
        )


def record_source(store: Store, digest: str, name: str, rows: int) -> None:
    """Remember a loaded file's digest (part of applying the batch that starts it)."""
    store.sources[digest] = LoadedSource(digest, name, rows, int(time.time() * 1000))


def concat_rows(parts: list[TypeRows]) -> TypeRows:
    """One TypeRows from many (chunks of a bulk load); absent columns become NULL.

    Consumes `parts` column by column (each part's column is dropped once copied), so
    a bulk load holds one type's rows about once, not twice, while they are joined."""
    if len(parts) == 1:
        return parts[0]
    lengths = [len(p.cids) for p in parts]
    dims = sorted({d for p in parts for d in p.dims})
    has_amount = any(p.amount is not None for p in parts)

    def take(get, fill) -> np.ndarray:
        pieces = []
        for p, k in zip(parts, lengths, strict=True):
            got = get(p)
            pieces.append(got if got is not None else fill(k))
        return np.concatenate(pieces)

    cids = take(lambda p: p.cids, None)
    for p in parts:
        p.cids = None  # type: ignore[assignment]  # released as soon as joined
    ts = take(lambda p: p.ts, None)
    for p in parts:
        p.ts = None  # type: ignore[assignment]
    out_dims = {}
    for d in dims:
        out_dims[d] = take(
            lambda p, d=d: p.dims.get(d), lambda k: np.full(k, NO_CODE, np.uint32)
        )
        for p in parts:
            p.dims.pop(d, None)
    amount = (
        take(lambda p: p.amount, lambda k: np.full(k, np.nan)) if has_amount else None
    )
    parts.clear()
    return TypeRows(cids, ts, out_dims, amount)


def sort_by_time(rows: TypeRows) -> None:
    """Order a bulk load's rows of one type by time (stable), in place, one column at a
    time: the log then takes them as they are (``EventLog.append`` adopts the arrays of
    a first append) instead of sorting a copy."""
    ts = rows.ts
    if len(ts) < 2 or bool(np.all(ts[1:] >= ts[:-1])):
        return
    order = np.argsort(ts, kind="stable")
    rows.ts = ts[order]
    del ts
    rows.cids = rows.cids[order]
    for d in list(rows.dims):
        rows.dims[d] = rows.dims[d][order]
    if rows.amount is not None:
        rows.amount = rows.amount[order]


# The columns whose *values* can make an event batch invalid; the others are text, and
# their type is checked from the schema alone (see check_events).
VALUE_CHECKED = (
    "customer_id",
    "ts",
    "type",
    "amount",
    "item_id",
    "order_id",
    "event_id",
)


def is_parquet(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() in (
        ".parquet",
        ".pq",
    )


def event_chunks(
    source, rows_per_chunk: int, columns: list[str] | None = None
) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) chunks of an event source; Parquet files are streamed by row
    group (only `columns`, when given), so a bulk load never holds the whole file."""
    if is_parquet(source):
        import pyarrow.parquet as pq

        if not Path(source).exists():
            raise InvalidInput.at(str(source), "no such file")
        try:
            pf = pq.ParquetFile(source)
            if columns is not None:
                columns = [c for c in columns if c in pf.schema_arrow.names]
            # Chunks no larger than a row group: the reader then hands out each row
            # group whole, with its own dictionaries, instead of splitting one across
            # two chunks (whose dictionary would be decoded and hashed twice).
            groups = [
                pf.metadata.row_group(i).num_rows
                for i in range(pf.metadata.num_row_groups)
            ]
            size = min(rows_per_chunk, max(groups, default=rows_per_chunk) or 1)
            first = 0
            if groups and max(groups) <= rows_per_chunk:
                # One chunk per row group, its dictionary text columns decoded by segd
                # (segd.pqdict: Arrow would re-hash each dictionary page first).
                with open(source, "rb") as f:
                    for table in pqdict.iter_row_groups(pf, f, columns):
                        yield first, table
                        first += table.num_rows
                return
            for batch in pf.iter_batches(batch_size=size, columns=columns):
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput.at(str(source), f"cannot read events: {exc}") from None
        return
    table = read_table(source, "events")
    for first in range(0, table.num_rows, rows_per_chunk):
        yield first, table.slice(first, rows_per_chunk)


def check_parquet_schema(source) -> None:
    """An event Parquet file's column names and types, from its schema alone."""
    import pyarrow.parquet as pq

    if not Path(source).exists():
        raise InvalidInput.at(str(source), "no such file")
    try:
        schema = pq.read_schema(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput.at(str(source), f"cannot read events: {exc}") from None
    validate_events(schema.empty_table())


# Read and validate the next chunk on a thread of its own while the current one is
# staged (``segd.readahead``; a bulk load on two cores overlaps the two). False: inline.
READ_AHEAD = True
# With READ_AHEAD, the read-ahead thread also encodes a chunk's items, dimensions
# and event ids (``StagedLoad.prepare``) when the loading thread is the slower side
# (the chunk it handed before is still waiting): at 10M the loading thread was
# (hashing ~950k distinct customer ids per row group into a 9M-entry map), at 1M the
# reader is. Otherwise the loading thread prepares the chunk itself. False: always
# the loading thread (the read-ahead thread only reads and validates).
STAGE_AHEAD = True


def _prepare_ahead(backlog: int) -> bool:
    """Whether the read-ahead thread prepares its next chunk, given how many chunks wait
    for the loading thread (a seam for the tests, which choose at random)."""
    return backlog > 0


class _PrepareTurns:
    """Chunks are prepared strictly in order, each by one thread: the read-ahead
    thread waits here for the loading thread to have prepared the chunks before its
    own (the loading thread never waits: a chunk reaches it after every earlier one
    was prepared). ``cancel`` (the load stopped) releases a waiting thread."""

    def __init__(self) -> None:
        self._turn = 0
        self._cancelled = False
        self._cond = threading.Condition()

    def prepare(self, stage: StagedLoad, index: int, batch: EventBatch):
        with self._cond:
            while self._turn != index:
                if self._cancelled:
                    raise _LoadStopped
                self._cond.wait(0.05)
        try:
            return stage.prepare(batch)
        finally:
            with self._cond:
                self._turn = index + 1
                self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()


class _LoadStopped(Exception):
    """The read-ahead thread's wait ended because the load stopped (never seen by a
    caller: the consumer has already left)."""


def stage_events(
    source, rows_per_chunk: int, progress: Callable[[str, int], None] | None = None
) -> tuple[StagedLoad, int]:
    """Read an event source once, validating and staging each chunk (``StagedLoad``);
    the staged load and its rows. Raises at the first invalid row; nothing is applied."""
    if is_parquet(source):
        check_parquet_schema(source)
    stage = StagedLoad()
    total = 0
    validated: Iterator[tuple[int, EventBatch]] = (
        (first + chunk.num_rows, validate_chunk(chunk, first))
        for first, chunk in event_chunks(source, rows_per_chunk)
    )
    if not READ_AHEAD:
        for done, batch in validated:
            stage.add(batch)
            total = done
            if progress:
                progress("validate", total)
        return stage, total
    turns, backlog = _PrepareTurns(), Backlog()

    def produce() -> Iterator[tuple[int, int, EventBatch | PreparedChunk]]:
        # On the read-ahead thread: a chunk leaves prepared when the loading thread is
        # behind (the chunk handed before still waits for it), else as validated.
        for index, (done, batch) in enumerate(validated):
            if STAGE_AHEAD and _prepare_ahead(backlog()):
                yield index, done, turns.prepare(stage, index, batch)
            else:
                yield index, done, batch

    ahead = read_ahead(produce(), backlog=backlog)
    try:
        for index, done, item in ahead:
            if isinstance(item, PreparedChunk):
                chunk = item
            else:
                chunk = turns.prepare(stage, index, item)
            stage.finish(chunk)
            total = done
            if progress:
                progress("validate", total)
    finally:
        # A read-ahead thread waiting for its turn gives up first; then the reader is
        # stopped and joined (``ahead`` is held here so that this is the order).
        turns.cancel()
        ahead.close()
    return stage, total
    return stage, total


def check_events(source, rows_per_chunk: int) -> int:
    """Validate a whole event source without applying it; the number of rows.

    For Parquet the schema is checked once (names, types) and only the columns whose
    values can be wrong are read — the text columns, most of the file, are read once,
    when the load encodes them."""
    if is_parquet(source):
        check_parquet_schema(source)
        columns = list(VALUE_CHECKED)
    else:
        columns = None
    total = 0
    for first, chunk in event_chunks(source, rows_per_chunk, columns):
        validate_chunk(chunk, first)
        total = first + chunk.num_rows
    return total


def validate_chunk(table: pa.Table, first: int) -> EventBatch:
    """validate_events for a chunk, with row numbers counted from the start of the load."""
    try:
        return validate_events(table)
    except InvalidInput as exc:
        raise exc.shifted(first) from None


# -- contacts and items ----------------------------------------------------------------
@dataclass(frozen=True)
class AttributeBatch:
    """Validated attribute updates: keys plus prepared column values."""

    keys: pa.Array
    new_columns: dict[str, str]  # name -> kind, columns to create
    prepared: dict[str, object]  # name -> column.convert() output


def validate_attributes(
    table: pa.Table, owner, kind: str, key: str, schema: dict[str, str] | None = None
) -> AttributeBatch:
    """Check a contacts / items batch; owner is the ContactStore or the Catalog (read
    only: its columns say which kind an existing attribute has)."""
    if table.num_columns == 0 and table.num_rows == 0:
        table = pa.table({key: pa.array([], pa.string())})  # an empty batch: a no-op
    _check_names(table, kind)
    keys = _text(table, key, kind, required=True)
    table, keys = _last_row_per_key(table, keys)
    new_columns: dict[str, str] = {}
    prepared: dict[str, object] = {}
    from segd.columns import new_column

    for name in table.column_names:
        if name == key:
            continue
        arr = _column(table, name)
        col = owner.columns.get(name)
        if col is None:
            col_kind = (schema or {}).get(name) or _builtin_kind(name, arr.type)
            col_kind = col_kind or kind_of_arrow(arr.type)
            if pa.types.is_null(arr.type) and col_kind is None:
                col_kind = "category"
            if col_kind is None:
                raise InvalidInput.in_batch(
                    kind,
                    f"unsupported type {arr.type} "
                    "(expected int, float, bool, timestamp, text or a "
                    "list of text)",
                    column=name,
                )
            new_columns[name] = col_kind
            col = new_column(name, col_kind)
        try:
            prepared[name] = col.convert(arr)
        except ValueRejected as exc:
            raise exc.located(kind, name, f" (column {name!r} is {col.kind})") from None
    return AttributeBatch(keys, new_columns, prepared)


# Built-in attributes whose meaning fixes their type whatever the input type (CSV and
# JSON Lines give text, a careless client an int): `age` needs birth_date to be a time.
BUILTIN_ATTRIBUTE_KINDS = {"birth_date": "timestamp", "registered_at": "timestamp"}


def _builtin_kind(name: str, t: pa.DataType) -> str | None:
    return BUILTIN_ATTRIBUTE_KINDS.get(name)


def _last_row_per_key(table: pa.Table, keys):
    """Keep the last row of each key: a batch naming a contact twice means its last word."""
    codes = encode_text(keys, IdMap().get_or_add)
    if len(codes) == 0 or int(codes.max()) + 1 == len(codes):
        return table, keys  # codes are dense in first-seen order: all keys distinct
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    last = np.sort(len(codes) - 1 - first_from_end)
    return table.take(pa.array(last)), keys.take(pa.array(last))


def apply_attributes(owner, batch: AttributeBatch, ids) -> np.ndarray:
    """Apply validated updates; `ids` maps keys to row numbers, creating rows."""
    rows = ids(batch.keys)
    for name, k in batch.new_columns.items():
        owner.add_column(name, k)
    for name, value in batch.prepared.items():
        owner.columns[name].store(rows, value)
    return rows
