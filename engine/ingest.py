"""The one ingest path: validate a whole batch, then apply it to the store.

Every mutation (bulk loads, live events, profile upserts, catalog updates) comes through
here, so the write-ahead log of the durability work can sit in front of ``apply_*``. A batch
is checked completely before anything is applied; a bad batch raises ``InvalidInput`` naming
the row and the column and leaves the store exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd.columns import encode_text, kind_of_arrow
from segd.errors import InvalidInput, Violation
from segd.native.idmap import IdMap
from segd.store import Store
from segd.timeutil import to_event_seconds

NO_CODE = 0xFFFFFFFF
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
EVENT_CORE = ("customer_id", "ts", "type", "item_id", "amount")


@dataclass(frozen=True)
class EventBatch:
    """A validated event batch, as arrays ready to apply."""

    customer_id: pa.Array
    ts: np.ndarray  # uint32 seconds
    type_codes: np.ndarray  # uint32 index into type_names per row
    type_names: list[str]
    item_id: pa.Array | None
    amount: np.ndarray | None
    dims: dict[str, pa.Array]


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
            raise InvalidInput.at(
                f"{kind}[{i}]", f"expected a dict, got {type(row).__name__}"
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
            raise InvalidInput.at(
                f"{kind}[{lo}].{name}",
                f"expected {want} like the rows before it, got {bad!r}",
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

            types = {
                c: pa.string()
                for c in (
                    "customer_id",
                    "item_id",
                    "order_id",
                    "type",
                    "phrase",
                    "advertiser",
                    "campaign",
                    "ad",
                    "channel",
                    "category",
                    "brand",
                )
            }
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


def _text(table: pa.Table, name: str, kind: str, *, required: bool) -> pa.Array | None:
    """A text column, cast from integers if needed; None when absent and optional."""
    if name not in table.column_names:
        if required:
            raise InvalidInput.at(f"{kind}.{name}", "required column is missing")
        return None
    arr = _column(table, name)
    if pa.types.is_dictionary(arr.type) and _is_text(arr.type.value_type):
        if required and arr.null_count:
            row = int(np.flatnonzero(~np.asarray(pc.is_valid(arr)))[0])
            raise InvalidInput.at(f"{kind}[{row}].{name}", "required value is NULL")
        return arr  # kept encoded: engine.columns.encode_text expands it cheaply
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        arr = pa.nulls(len(arr), pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if pa.types.is_integer(arr.type):
            arr = pc.cast(arr, pa.string())
        else:
            raise InvalidInput.at(f"{kind}.{name}", f"expected text, got {arr.type}")
    if required and arr.null_count:
        row = int(np.flatnonzero(~np.asarray(pc.is_valid(arr)))[0])
        raise InvalidInput.at(f"{kind}[{row}].{name}", "required value is NULL")
    return arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_names(table: pa.Table, kind: str) -> None:
    for name in table.column_names:
        if not NAME.match(name):
            raise InvalidInput.at(
                f"{kind}.{name}",
                "column names must match "
                "[a-z_][a-z0-9_]* (so segment conditions can name them)",
            )
    dupes = {c for c in table.column_names if table.column_names.count(c) > 1}
    if dupes:
        raise InvalidInput.at(f"{kind}.{sorted(dupes)[0]}", "column appears twice")


def validate_events(table: pa.Table) -> EventBatch:
    """Check an event batch completely; raise InvalidInput at the first problem."""
    _check_names(table, "events")
    customer_id = _text(table, "customer_id", "events", required=True)
    types = _text(table, "type", "events", required=True)
    if "ts" not in table.column_names:
        raise InvalidInput.at("events.ts", "required column is missing")
    try:
        ts = to_event_seconds(_column(table, "ts"))
    except ValueError as exc:
        row, _, msg = str(exc).partition(": ")
        raise InvalidInput(
            f"events[{row.removeprefix('row ')}].ts: {msg}",
            [Violation(f"events[{row.removeprefix('row ')}].ts", msg)],
        ) from None
    type_names = IdMap()  # this batch's types, coded in order of first use
    type_codes = encode_text(types, type_names.get_or_add)
    for i, name in enumerate(type_names.to_arrow().to_pylist()):
        if not NAME.match(name):
            first = int(np.flatnonzero(type_codes == i)[0])
            raise InvalidInput.at(
                f"events[{first}].type",
                f"event type {name!r} must match [a-z_][a-z0-9_]*",
            )
    amount = None
    if "amount" in table.column_names:
        arr = _column(table, "amount")
        if not (
            pa.types.is_integer(arr.type)
            or pa.types.is_floating(arr.type)
            or pa.types.is_decimal(arr.type)
            or pa.types.is_null(arr.type)
        ):
            raise InvalidInput.at("events.amount", f"expected a number, got {arr.type}")
        amount = np.asarray(
            pc.cast(arr, pa.float64()).fill_null(np.nan), dtype=np.float64
        )
        bad = np.isinf(amount)
        if bad.any():
            raise InvalidInput.at(
                f"events[{int(np.flatnonzero(bad)[0])}].amount", "amount must be finite"
            )
    dims = {}
    for name in table.column_names:
        if name in EVENT_CORE:
            continue
        dims[name] = _text(table, name, "events", required=False)
    return EventBatch(
        customer_id,
        ts,
        type_codes,
        type_names.to_arrow().to_pylist(),
        _text(table, "item_id", "events", required=False),
        amount,
        dims,
    )


@dataclass
class TypeRows:
    """One event type's rows of a batch, encoded: what EventLog.append takes."""

    cids: np.ndarray
    ts: np.ndarray
    dims: dict[str, np.ndarray]
    amount: np.ndarray | None


def encode_events(store: Store, batch: EventBatch) -> dict[str, TypeRows]:
    """Encode a validated batch (contacts, items and dictionaries grow) and split it by
    type. Nothing is appended yet."""
    cids = store.contacts.ensure(batch.customer_id)
    store.sync_sizes()
    n = len(cids)
    codes: dict[str, np.ndarray] = {}
    if batch.item_id is not None:
        codes["item"] = encode_text(batch.item_id, store.catalog.ensure)
    for name, arr in batch.dims.items():
        if name not in store.dim_maps:
            store.dim_maps[name] = IdMap()
        codes[name] = encode_text(arr, store.dim_maps[name].get_or_add)
    # Group rows by type with one stable sort, so each type's rows are a contiguous slice
    # (arrival order kept within a type) instead of one fancy-index per column per type.
    names = batch.type_names
    type_idx = batch.type_codes
    if len(names) < 255:
        type_idx = type_idx.astype(np.uint8)  # a radix sort for the grouping below
    if len(names) > 1:
        order = np.argsort(type_idx, kind="stable")
        probe = np.arange(len(names) + 1, dtype=type_idx.dtype)  # same dtype: no copy
        bounds = np.searchsorted(type_idx[order], probe)
        cids, ts = cids[order], batch.ts[order]
        amount = None if batch.amount is None else batch.amount[order]
        codes = {d: c[order] for d, c in codes.items()}
    else:
        bounds = np.array([0, n])
        ts, amount = batch.ts, batch.amount
    out = {}
    for t, name in enumerate(names):
        a, b = int(bounds[t]), int(bounds[t + 1])
        if a == b:
            continue
        t_amount = None if amount is None else amount[a:b]
        if t_amount is not None and np.isnan(t_amount).all():
            t_amount = None
        # A type keeps only the dimensions it actually carries.
        t_dims = {d: c[a:b] for d, c in codes.items() if (c[a:b] != NO_CODE).any()}
        out[name] = TypeRows(cids[a:b], ts[a:b], t_dims, t_amount)
    return out


def append_rows(store: Store, name: str, rows: TypeRows) -> None:
    """Append one type's encoded rows to its log and fold them into the rollups."""
    store.log(name).append(rows.cids, rows.ts, rows.dims, rows.amount)
    store.aggregates.apply(
        name, rows.cids, rows.ts, rows.amount, rows.dims.get("order_id")
    )


def apply_events(store: Store, batch: EventBatch) -> int:
    """Apply a validated batch: contacts, items and dictionaries grow; logs and rollups."""
    for name, rows in encode_events(store, batch).items():
        append_rows(store, name, rows)
    return len(batch.ts)


def concat_rows(parts: list[TypeRows]) -> TypeRows:
    """One TypeRows from many (chunks of a bulk load); absent columns become NULL."""
    if len(parts) == 1:
        return parts[0]
    dims = sorted({d for p in parts for d in p.dims})

    def dim(p: TypeRows, d: str) -> np.ndarray:
        got = p.dims.get(d)
        return got if got is not None else np.full(len(p.cids), NO_CODE, np.uint32)

    has_amount = any(p.amount is not None for p in parts)
    return TypeRows(
        np.concatenate([p.cids for p in parts]),
        np.concatenate([p.ts for p in parts]),
        {d: np.concatenate([dim(p, d) for p in parts]) for d in dims},
        np.concatenate(
            [
                p.amount if p.amount is not None else np.full(len(p.cids), np.nan)
                for p in parts
            ]
        )
        if has_amount
        else None,
    )


# The columns whose *values* can make an event batch invalid; the others are text, and
# their type is checked from the schema alone (see check_event_values).
VALUE_CHECKED = ("customer_id", "ts", "type", "amount")


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
            first = 0
            for batch in pf.iter_batches(batch_size=rows_per_chunk, columns=columns):
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput.at(str(source), f"cannot read events: {exc}") from None
        return
    table = read_table(source, "events")
    for first in range(0, table.num_rows, rows_per_chunk):
        yield first, table.slice(first, rows_per_chunk)


def check_events(source, rows_per_chunk: int) -> int:
    """Validate a whole event source without applying it; the number of rows.

    For Parquet the schema is checked once (names, types) and only the columns whose
    values can be wrong are read — the text columns, most of the file, are read once,
    when the load encodes them."""
    if is_parquet(source):
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(source)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput.at(str(source), f"cannot read events: {exc}") from None
        validate_events(schema.empty_table())
        columns = list(VALUE_CHECKED)
    else:
        columns = None
    total = 0
    for first, chunk in event_chunks(source, rows_per_chunk, columns):
        validate_chunk(chunk, first)
        total = first + chunk.num_rows
    return total


_ROW_PATH = re.compile(r"^events\[(\d+)\]")


def validate_chunk(table: pa.Table, first: int) -> EventBatch:
    """validate_events for a chunk, with row numbers counted from the start of the load."""
    try:
        return validate_events(table)
    except InvalidInput as exc:
        if first == 0:
            raise

        def shift(text: str) -> str:
            return _ROW_PATH.sub(lambda m: f"events[{int(m.group(1)) + first}]", text)

        raise InvalidInput(
            shift(str(exc)),
            [Violation(shift(v.where), v.message) for v in exc.violations],
        ) from None


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
    """Check a contacts / items batch; owner is the ContactStore or the Catalog."""
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
                raise InvalidInput.at(
                    f"{kind}.{name}",
                    f"unsupported type {arr.type} "
                    "(expected int, float, bool, timestamp, text or a "
                    "list of text)",
                )
            new_columns[name] = col_kind
            col = new_column(name, col_kind)
        try:
            prepared[name] = col.convert(arr)
        except ValueError as exc:
            msg = str(exc)
            if msg.startswith("row "):
                row, _, msg = msg.partition(": ")
                where = f"{kind}[{row.removeprefix('row ')}].{name}"
            else:
                where = f"{kind}.{name}"
            raise InvalidInput.at(
                where, f"{msg} (column {name!r} is {col.kind})"
            ) from None
    return AttributeBatch(keys, new_columns, prepared)


# Built-in attributes whose meaning fixes their type even when they arrive as text
# (CSV, JSON Lines): `age` needs birth_date to be a time, not a category.
BUILTIN_ATTRIBUTE_KINDS = {"birth_date": "timestamp", "registered_at": "timestamp"}


def _builtin_kind(name: str, t: pa.DataType) -> str | None:
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    return BUILTIN_ATTRIBUTE_KINDS.get(name) if text else None


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
