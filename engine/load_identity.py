"""Identity of a bulk ``load_events`` whose rows name contacts by link columns.

A live batch resolves its rows under the write lock (``segd.identity.resolve``). A bulk
load streams its source twice (validate, then apply) and must resolve the *whole load*
as one batch — rows sharing a link value are one contact however far apart they sit —
without holding the file. What a row's contact depends on is its *identity*: the tuple
(customer_id or NULL, one normalised value or NULL per link column). A load has far
fewer distinct identities than rows (a contact's events repeat its identity), so:

1. while validating (no lock), every chunk's identity columns are coded per column
   (one native ``IdMap`` per column, values kept once) and the codes of a row packed
   into a fixed-width key, coded again by an ``IdMap`` of keys: the row's *identity
   code*, dense in order of first appearance. The distinct identities (their values and
   the load row each first appeared on) are kept, nothing per row;
2. under the write lock, the distinct identities are resolved as one batch by
   ``segd.identity.resolve`` (same rules, same conflict policy; a conflict is reported
   at the first load row of each conflicting identity): one customer_id per identity,
   the links to add and the merges to do;
3. applying, each chunk is read again and its rows get ``customer_ids[identity code]``
   (a lookup per column, one per key, one take).

The write-ahead log keeps each chunk's identity codes (4 bytes a row) with the chunk and
the resolution (merges, links, one customer_id per identity) with the commit, so replay
re-keys the chunks from the log alone (docs/storage.md, "Bulk loads").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd import identity_api
from segd.errors import InvalidInput, Violation
from segd.identity import IdentityConflict, Resolved, resolve
from segd.ingest import EventBatch, validate_chunk
from segd.native import NO_CODE
from segd.native.idmap import IdMap

CUSTOMER_ID = "customer_id"


def link_kinds_of(names: Iterable[str], kinds: Iterable[str]) -> list[str]:
    """The link kinds a source's columns carry, in the engine's kind order."""
    present = set(names)
    return [k for k in kinds if k in present]


def _packed(codes: list[np.ndarray]) -> pa.Array:
    """Rows of per-column uint32 codes as fixed-width binary strings (for an IdMap):
    never decoded, only hashed and compared."""
    rows = len(codes[0])
    width = 4 * len(codes)
    data = np.ascontiguousarray(np.stack(codes, axis=1), dtype=np.uint32)
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


class LoadIdentity:
    """The distinct identities of one bulk load (see module docstring)."""

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.columns = (CUSTOMER_ID, *kinds)
        self.values = {c: IdMap() for c in self.columns}
        self.keys = IdMap()
        # Per distinct identity: its column values and the load row it first appears on.
        self._parts: dict[str, list[pa.Array]] = {c: [] for c in self.columns}
        self._first_rows: list[np.ndarray] = []
        self.customer_ids: pa.Array | None = None  # per identity, once resolved

    def __len__(self) -> int:
        return len(self.keys)

    # -- reading chunks -------------------------------------------------------------------
    def split(self, engine, table: pa.Table, first: int) -> tuple[EventBatch, dict]:
        """A chunk validated (link columns taken out as identity, NULL customer_ids
        standing in as placeholders) and its identity columns (column -> normalised
        Arrow text with NULLs). A row naming nobody is refused here, by load row."""
        try:
            table, ids = identity_api.split_links(engine, table, "events")
        except InvalidInput as exc:  # a bad link value: at its load row
            raise exc.shifted(first) from None
        batch = validate_chunk(table, first)
        # ids None: every row has its customer_id and no link value
        customer_id, links = (batch.customer_id, {}) if ids is None else ids
        cols: dict[str, pa.Array] = {}
        n = table.num_rows
        if customer_id is None:
            customer_id = pa.nulls(n, pa.string())
        if isinstance(customer_id, pa.ChunkedArray):
            customer_id = customer_id.combine_chunks()
        if pa.types.is_dictionary(customer_id.type):
            customer_id = customer_id.cast(customer_id.type.value_type)
        cols[CUSTOMER_ID] = customer_id.cast(pa.string())
        for kind in self.kinds:
            arr = links.get(kind)
            cols[kind] = pa.nulls(n, pa.string()) if arr is None else arr
        nobody = ~np.asarray(pc.is_valid(cols[CUSTOMER_ID]))
        for kind in self.kinds:
            nobody &= ~np.asarray(pc.is_valid(cols[kind]))
        if nobody.any():
            row = int(np.flatnonzero(nobody)[0])
            raise InvalidInput.in_batch(
                "events",
                "the row names no contact: customer_id is NULL or absent and no link "
                f"column ({', '.join(self.kinds)}) has a value",
                row=first + row,
                column=CUSTOMER_ID,
            )
        return batch, cols

    def add(self, cols: dict[str, pa.Array], first: int) -> np.ndarray:
        """Pass 1: the identity code of each row, adding new identities."""
        codes = []
        for c in self.columns:
            arr = cols[c]
            got = self.values[c].get_or_add(arr.fill_null(""))
            if arr.null_count:
                got[~np.asarray(pc.is_valid(arr))] = NO_CODE
            codes.append(got)
        before = len(self.keys)
        out = self.keys.get_or_add(_packed(codes))
        new = np.flatnonzero(out >= before)
        if len(new):
            _, at = np.unique(out[new], return_index=True)
            rows = new[at]  # first row of each new identity, in code order
            take = pa.array(rows)
            for c in self.columns:
                self._parts[c].append(cols[c].take(take))
            self._first_rows.append(first + rows.astype(np.int64))
        return out

    def codes(self, cols: dict[str, pa.Array]) -> np.ndarray:
        """Pass 2: the identity code of each row (every identity was added in pass 1)."""
        codes = [self.values[c].lookup(cols[c]) for c in self.columns]
        out = self.keys.lookup(_packed(codes))
        if (out == NO_CODE).any():
            raise InvalidInput.at(
                "events", "the source changed while it was loading (a row's identity "
                "was not there when it was validated)"
            )  # fmt: skip
        return out

    # -- resolving (under the write lock) -------------------------------------------------
    def resolve(self, engine, policy: str) -> Resolved:
        """The load's identities resolved as one batch (``segd.identity.resolve``); a
        conflict names the first load row of each conflicting identity."""
        if policy not in identity_api.MERGE_POLICIES:
            raise InvalidInput.at(
                "on_conflict", f"expected reject or merge, got {policy!r}"
            )
        n = len(self.keys)
        cols = {
            c: pa.concat_arrays(parts) if parts else pa.array([], pa.string())
            for c, parts in self._parts.items()
        }
        first_rows = (
            np.concatenate(self._first_rows) if self._first_rows else np.zeros(0)
        )
        customer_id = cols[CUSTOMER_ID]
        links = {k: cols[k] for k in self.kinds}
        try:
            resolved = resolve(
                engine.store, customer_id, links, n, "events", policy=policy
            )
        except IdentityConflict as exc:
            raise _at_load_rows(exc, first_rows) from None
        self.customer_ids = resolved.customer_id
        return resolved

    def rekeyed(self, batch: EventBatch, codes: np.ndarray) -> EventBatch:
        """The chunk with every row's customer_id resolved."""
        assert self.customer_ids is not None, "resolve() first"
        return replace(batch, customer_id=self.customer_ids.take(pa.array(codes)))


def _at_load_rows(exc: IdentityConflict, first_rows: np.ndarray) -> IdentityConflict:
    """A conflict among distinct identities, reported at load rows."""
    violations = []
    for v in exc.violations:
        row = int(first_rows[v.row]) if v.row is not None else None
        violations.append(
            Violation(f"events[{row}].{v.column}", v.message, row, v.column)
        )
    violations.sort(key=lambda v: v.row if v.row is not None else -1)
    first = violations[0]
    return IdentityConflict(
        f"{len(violations)} row(s) name different contacts (the first row of each "
        f"conflicting identity); first: {first}",
        violations,
        kind="events",
        row=first.row,
        column=first.column,
        reason=first.message,
    )


def record(resolved: Resolved) -> dict[str, Any]:
    """The commit record's identity part: merges, links, one customer_id per identity."""
    out = identity_api.record(resolved) or {"merges": [], "links": {}}
    out["ids"] = resolved.customer_id
    return out


def source_kinds(engine, source) -> list[str]:
    """The link kinds among an event source's columns (Parquet: from its schema)."""
    from segd.ingest import is_parquet, read_table

    kinds = engine.store.identity.kinds
    if is_parquet(source):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(source).names
        except (pa.ArrowInvalid, OSError):
            return []  # the load's own read reports it
    elif isinstance(source, (str, Path)) and Path(source).suffix.lower() in (
        ".csv",
        ".tsv",
        ".txt",
    ):
        import pyarrow.csv as pcsv

        delimiter = "\t" if Path(source).suffix.lower() == ".tsv" else ","
        try:  # the header only: the load reads the file itself
            with pcsv.open_csv(
                source, parse_options=pcsv.ParseOptions(delimiter=delimiter)
            ) as reader:
                names = reader.schema.names
        except (pa.ArrowInvalid, OSError):
            return []
    else:
        names = read_table(source, "events").column_names
    return link_kinds_of(names, kinds)


def check_schema(source, kinds: list[str]) -> list[str] | None:
    """Parquet: the schema checked once with the link columns as identity (the
    customer_id column may be absent) and the columns whose values pass 1 must read;
    None for other sources (read whole)."""
    from segd.ingest import VALUE_CHECKED, is_parquet, validate_events

    if not is_parquet(source):
        return None
    import pyarrow.parquet as pq

    empty = pq.read_schema(source).empty_table().drop_columns(kinds)
    if CUSTOMER_ID not in empty.column_names:
        empty = empty.append_column(CUSTOMER_ID, pa.array([], pa.string()))
    validate_events(empty)
    return [*VALUE_CHECKED, *kinds]


def chunks(engine, source, rows_per_chunk: int, ident: LoadIdentity, *, adding: bool,
           columns: list[str] | None = None):  # fmt: skip
    """(rows done, batch, identity codes) per chunk of the source. Pass 1 (`adding`)
    adds identities and yields the batch as validated (placeholders for NULL ids);
    pass 2 yields it re-keyed to the resolved customer_ids."""
    from segd.ingest import event_chunks

    for first, table in event_chunks(source, rows_per_chunk, columns):
        batch, cols = ident.split(engine, table, first)
        if adding:
            yield first + table.num_rows, batch, ident.add(cols, first)
        else:
            codes = ident.codes(cols)
            yield first + table.num_rows, ident.rekeyed(batch, codes), codes
