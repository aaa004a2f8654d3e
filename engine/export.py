"""Audience exports for marketing: member rows with profile columns, and retargeting hashes.

Both stream. The member bitmap is walked in rank slices of ``chunk_rows`` (a roaring slice
by rank costs the slice, not the segment); each slice becomes one Arrow record batch built
from the contact columns with numpy gathers and the id map's native decoder, and the
batch goes to an incremental writer (``pyarrow.parquet.ParquetWriter``: one row group per
batch; ``pyarrow.csv.CSVWriter``). So an export of 10M members holds one batch and the
writer's buffers, never the whole table. Each batch is read under the engine's read lock,
so it is consistent in itself; the members are those of the evaluation the export started
with (a ``SegmentResult`` is a snapshot), the profile values those at the time of the
batch.

The retargeting export (SPEC section 3) takes the members a channel cannot reach and
exports the identifiers they do have as SHA-256 of the normalised value
(``segd.normalize``), the form ad platforms match on. Reach is defined in
docs/data-model.md ("Channels and consent"): a channel reaches a contact when the contact
has a valid address for it and consent for it (the ``*_subscribed`` column is true).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from segd.columns import CategoryColumn, NumericColumn, TagsColumn
from segd.errors import FailedPrecondition, InvalidInput, UnknownColumn
from segd.native import addresses
from segd.normalize import normalize_email, normalize_phone

EXPORT_FORMATS = ("csv", "parquet")
HASH_FORMATS = ("lines", "csv")
IDENTIFIERS = ("email", "phone")
# channel -> (the address column it needs, or None; the consent column)
CHANNELS: dict[str, tuple[str | None, str]] = {
    "email": ("email", "email_subscribed"),
    "sms": ("phone", "sms_subscribed"),
    "push": (None, "push_subscribed"),
}
DEFAULT_CHUNK_ROWS = 65_536
MAX_CHUNK_ROWS = 1_048_576
# File bytes are handed on in pieces of at most this size (a gRPC message each).
PIECE_BYTES = 1 << 20
TAG_SEPARATOR = "|"  # tags in one CSV cell

_NUMERIC_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
}


@dataclass(frozen=True)
class ExportReport:
    """What one export wrote: ``rows`` (members, or hash lines / rows), the file
    ``format``, the ``columns`` of each row, the ``bytes`` written and the ``seconds``
    it took. ``members`` is the segment's size (for a retargeting export, more than the
    rows: reachable members and members without any identifier are not exported)."""

    rows: int
    members: int
    format: str
    columns: tuple[str, ...]
    bytes: int
    seconds: float


def check_chunk_rows(chunk_rows: int) -> int:
    if not isinstance(chunk_rows, int) or not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise InvalidInput.at(
            "chunk_rows", f"must be 1..{MAX_CHUNK_ROWS}, got {chunk_rows!r}"
        )
    return chunk_rows


def check_format(fmt: str, known: Sequence[str], field: str = "format") -> str:
    if fmt not in known:
        raise InvalidInput.at(
            field, f"unknown format {fmt!r} (expected {' or '.join(known)})"
        )
    return fmt


def check_columns(contacts: Any, columns: Iterable[str]) -> tuple[str, ...]:
    """The profile columns asked for, checked against the contact store: each must be
    an attribute column, named once (``customer_id`` always comes first by itself).
    ``UnknownColumn`` names the first bad one and its position."""
    if isinstance(columns, str):
        raise TypeError("columns is a list of column names, not a str")
    out: list[str] = []
    for i, name in enumerate(columns):
        where = f"columns[{i}]"
        if not isinstance(name, str) or not name:
            raise InvalidInput.at(where, f"expected a column name, got {name!r}")
        if name == "customer_id":
            raise InvalidInput.at(
                where, "customer_id is always the first column; do not list it"
            )
        if name in out:
            raise InvalidInput.at(where, f"column {name!r} is listed twice")
        if contacts.column(name) is None:
            known = ", ".join(sorted(contacts.columns)) or "none"
            raise UnknownColumn(
                name, i, f"{contacts.suggest(name)} (contact columns: {known})"
            )
        out.append(name)
    return tuple(out)


def member_slices(bitmap: BitMap, chunk_rows: int) -> Iterator[np.ndarray]:
    """The members' cids in ascending rank slices of ``chunk_rows`` (uint32 arrays)."""
    n = len(bitmap)
    if n <= chunk_rows:
        if n:
            yield np.frombuffer(bitmap.to_array(), dtype=np.uint32)
        return
    for start in range(0, n, chunk_rows):
        part = bitmap[start : start + chunk_rows]
        yield np.frombuffer(part.to_array(), dtype=np.uint32)


def schema_of(contacts: Any, columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of an export's rows: customer_id, then the columns as stored."""
    fields = [pa.field("customer_id", pa.large_string(), nullable=False)]
    for name in columns:
        fields.append(pa.field(name, _arrow_type(contacts.column(name))))
    return pa.schema(fields)


def _arrow_type(col: Any) -> pa.DataType:
    if isinstance(col, NumericColumn):
        return _NUMERIC_TYPES[col.kind]
    if isinstance(col, CategoryColumn):
        return pa.large_string()
    if isinstance(col, TagsColumn):
        return pa.list_(pa.large_string())
    raise TypeError(f"no export type for {type(col).__name__}")


def repeating_columns(contacts: Any, columns: Sequence[str]) -> list[str]:
    """The category columns with few distinct values (a bitmap per value)."""
    return [
        name
        for name in columns
        if isinstance(col := contacts.column(name), CategoryColumn)
        and col.has_bitmaps()
    ]


def column_array(col: Any, cids: np.ndarray) -> pa.Array:
    """One column's values for ``cids`` (NULL where the contact has none)."""
    if isinstance(col, NumericColumn):
        values = col.values[cids]
        missing = col.valid[cids] == 0
        if col.kind == "bool":
            values = values.astype(bool)
        return pa.array(
            values,
            type=_NUMERIC_TYPES[col.kind],
            mask=missing if missing.any() else None,
        )
    if isinstance(col, CategoryColumn):
        return col.dictionary.decode(np.ascontiguousarray(col.codes[cids]))
    if isinstance(col, TagsColumn):
        return _tags_array(col, cids)
    raise TypeError(f"no export for {type(col).__name__}")


def _tags_array(col: TagsColumn, cids: np.ndarray) -> pa.Array:
    """list<large_string> per contact, its tags in alphabetical (UTF-8 byte) order:
    one bitmap intersection per tag, then the (row, tag) pairs sorted into offsets."""
    chunk = BitMap(cids)
    names = col.dictionary.to_arrow()
    alphabetical = np.empty(len(names), dtype=np.int64)
    alphabetical[np.asarray(pc.sort_indices(names))] = np.arange(len(names))
    rows_parts, tag_parts = [], []
    for code, bm in enumerate(col.tag_bitmaps):
        hit = bm & chunk
        if hit:
            members = np.frombuffer(hit.to_array(), dtype=np.uint32)
            rows_parts.append(np.searchsorted(cids, members))
            tag_parts.append(np.full(len(members), code, dtype=np.uint32))
    n = len(cids)
    if rows_parts:
        rows = np.concatenate(rows_parts)
        tags = np.concatenate(tag_parts)
        order = np.lexsort((alphabetical[tags], rows))
        rows, tags = rows[order], tags[order]
    else:
        rows = np.zeros(0, dtype=np.int64)
        tags = np.zeros(0, dtype=np.uint32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    missing = col.valid[cids] == 0
    return pa.ListArray.from_arrays(
        pa.array(offsets),
        col.dictionary.decode(np.ascontiguousarray(tags)),
        mask=pa.array(missing) if missing.any() else None,
    )


def member_batches(
    store: Any,
    bitmap: BitMap,
    columns: Sequence[str],
    chunk_rows: int,
    read_lock: Callable[[], Any],
) -> Iterator[pa.RecordBatch]:
    """One record batch (customer_id + ``columns``) per rank slice of the members.
    ``columns`` must have passed ``check_columns``."""
    schema = schema_of(store.contacts, columns)
    for cids in member_slices(bitmap, chunk_rows):
        with read_lock():
            contacts = store.contacts
            arrays = [contacts.ids.decode(cids)]
            arrays += [column_array(contacts.column(name), cids) for name in columns]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- files ------------------------------------------------------------------------------
class _Spool(io.RawIOBase):
    """A write-only file that keeps what it is given until ``drain``: the writers write
    into it, and the bytes are handed on piece by piece (a file, a gRPC stream)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def drain(self) -> Iterator[bytes]:
        data = b"".join(self._parts)
        self._parts.clear()
        for start in range(0, len(data), PIECE_BYTES):
            yield data[start : start + PIECE_BYTES]


def _csv_field(field: pa.Field) -> pa.Field:
    """CSV has no lists and writes zoned timestamps slowly (6 s per 1M cells): a tags
    cell is its tags joined by ``|``, a timestamp is written as UTC without a zone."""
    if pa.types.is_list(field.type):
        return pa.field(field.name, pa.large_string())
    if pa.types.is_timestamp(field.type):
        return pa.field(field.name, pa.timestamp("ms"))
    return field


def _csv_ready(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field, arr in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(field.type):
            arr = pc.binary_join(arr, pa.scalar(TAG_SEPARATOR, pa.large_string()))
        elif pa.types.is_timestamp(field.type):
            arr = arr.cast(pa.timestamp("ms"))
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def file_pieces(
    batches: Iterable[pa.RecordBatch],
    fmt: str,
    schema: pa.Schema,
    progress: Callable[[int], None] | None = None,
    repeating: Sequence[str] = (),
) -> Iterator[bytes]:
    """The bytes of a CSV (header first) or Parquet file of ``batches``, in pieces of
    at most PIECE_BYTES, produced batch by batch. ``progress(rows)`` is called after
    each batch with the rows written so far. ``repeating``: columns with few distinct
    values (Parquet dictionary-encodes those)."""
    spool = _Spool()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # Dictionary pages only where values repeat (categories, tags): on unique
        # strings (customer_id, email) they cost time and save nothing.
        dictionary = [
            f.name for f in schema if f.name in repeating or pa.types.is_list(f.type)
        ]
        writer: Any = pq.ParquetWriter(
            spool, schema, compression="snappy", use_dictionary=dictionary
        )
        write = writer.write_batch
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        csv_schema = pa.schema(_csv_field(f) for f in schema)
        writer = pcsv.CSVWriter(spool, csv_schema)
        write = lambda batch: writer.write_batch(_csv_ready(batch, csv_schema))  # noqa: E731
    else:
        raise ValueError(f"file_pieces: unknown format {fmt!r}")
    rows = 0
    try:
        for batch in batches:
            write(batch)
            rows += batch.num_rows
            if progress is not None:
                progress(rows)
            yield from spool.drain()
    finally:
        writer.close()
    yield from spool.drain()


# -- retargeting ------------------------------------------------------------------------
def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise InvalidInput.at(
            "channel",
            f"unknown channel {channel!r} (expected one of {', '.join(CHANNELS)})",
        )
    return channel


def check_identifiers(identifiers: Iterable[str]) -> tuple[str, ...]:
    if isinstance(identifiers, str):
        raise TypeError("identifiers is a list (email, phone), not a str")
    out: list[str] = []
    for i, name in enumerate(identifiers):
        if name not in IDENTIFIERS:
            raise InvalidInput.at(
                f"identifiers[{i}]",
                f"unknown identifier {name!r} (expected {' or '.join(IDENTIFIERS)})",
            )
        if name in out:
            raise InvalidInput.at(f"identifiers[{i}]", f"{name!r} is listed twice")
        out.append(name)
    if not out:
        raise InvalidInput.at("identifiers", "name at least one of email, phone")
    return tuple(out)


def _address_array(col: Any, cids: np.ndarray) -> pa.Array:
    """The raw address values of ``cids`` as Arrow text (NULL: no value)."""
    if col is None:
        return pa.nulls(len(cids), pa.large_string())
    if isinstance(col, CategoryColumn):
        return col.dictionary.decode(np.ascontiguousarray(col.codes[cids]))
    if isinstance(col, NumericColumn) and col.kind == "int":
        missing = col.valid[cids] == 0
        numbers = pa.array(col.values[cids], mask=missing if missing.any() else None)
        return pc.cast(numbers, pa.large_string())
    raise FailedPrecondition(
        f"contact column {col.name!r} is a {col.kind} column; an address column "
        "must hold text (or whole numbers for phones)"
    )


def _consent(col: Any, cids: np.ndarray) -> np.ndarray:
    """True where the contact consented (the column is true / non-zero); a missing
    column or NULL is no consent."""
    if col is None:
        return np.zeros(len(cids), dtype=bool)
    if not isinstance(col, NumericColumn) or col.kind not in ("bool", "int"):
        raise FailedPrecondition(
            f"contact column {col.name!r} is a {col.kind} column; a consent column "
            "must be bool"
        )
    return (col.valid[cids] != 0) & (col.values[cids] != 0)


_NORMALIZERS = {"email": normalize_email, "phone": normalize_phone}
_KINDS = {"email": addresses.EMAIL, "phone": addresses.PHONE}
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def address_digests(values: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(present bool[n], digests uint8[n, 32]): SHA-256 of each value normalised as
    ``segd.normalize`` does (present False: NULL or not an address). The native kernel
    does ASCII values; the rare others go through segd.normalize and hashlib."""
    status, digests = addresses.hash_addresses(values, _KINDS[kind])
    slow = np.flatnonzero(status == addresses.NEEDS_PYTHON)
    if len(slow):
        norm = _NORMALIZERS[kind]
        texts = values.take(pa.array(slow)).to_pylist()
        for i, text in zip(slow.tolist(), texts, strict=True):
            value = norm(text)
            if value is None:
                status[i] = addresses.NO_VALUE
            else:
                digests[i] = np.frombuffer(sha256(value.encode()).digest(), np.uint8)
                status[i] = addresses.HASHED
    return status == addresses.HASHED, digests


def _hex_array(digests: np.ndarray, present: np.ndarray) -> pa.Array:
    """Lowercase hex of each digest as Arrow text, NULL where not present: one
    64-character slot per row (nulls too), so a writer can take the rows whole."""
    n = len(digests)
    hexes = np.empty((n, 64), dtype=np.uint8)
    hexes[:, 0::2] = _HEX[digests >> 4]
    hexes[:, 1::2] = _HEX[digests & 15]
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    validity = np.packbits(present, bitorder="little")
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(hexes)],
        null_count=int(n - np.count_nonzero(present)),
    )


def unreachable_hashes(
    contacts: Any, cids: np.ndarray, channel: str, identifiers: Sequence[str]
) -> pa.RecordBatch:
    """For the members in ``cids`` that ``channel`` cannot reach, the SHA-256 of each
    normalised identifier (``<identifier>_sha256`` columns, NULL when the contact has
    none); members with none of the identifiers are left out."""
    address_name, consent_name = CHANNELS[channel]
    digests = {
        kind: address_digests(_address_array(contacts.column(kind), cids), kind)
        for kind in {*identifiers, *([address_name] if address_name else [])}
    }
    reachable = _consent(contacts.column(consent_name), cids)
    if address_name is not None:
        reachable &= digests[address_name][0]
    keep = ~reachable
    any_identifier = np.zeros(len(cids), dtype=bool)
    for kind in identifiers:
        any_identifier |= digests[kind][0] & keep
    rows = np.flatnonzero(any_identifier)
    arrays = [
        _hex_array(digests[kind][1][rows], digests[kind][0][rows])
        for kind in identifiers
    ]
    return pa.RecordBatch.from_arrays(
        arrays, names=[f"{kind}_sha256" for kind in identifiers]
    )


def hash_batches(
    store: Any,
    bitmap: BitMap,
    channel: str,
    identifiers: Sequence[str],
    chunk_rows: int,
    read_lock: Callable[[], Any],
) -> Iterator[pa.RecordBatch]:
    for cids in member_slices(bitmap, chunk_rows):
        with read_lock():
            batch = unreachable_hashes(store.contacts, cids, channel, identifiers)
        if batch.num_rows:
            yield batch


def _fixed_hexes(arr: pa.Array) -> np.ndarray | None:
    """The (n, 64) hex bytes of an array made by ``_hex_array`` (None otherwise)."""
    bufs = arr.buffers()
    n = len(arr)
    if arr.offset or bufs[2] is None or bufs[2].size != 64 * n:
        return None
    return np.frombuffer(bufs[2], dtype=np.uint8).reshape(n, 64)


def _lines_bytes(batch: pa.RecordBatch, names: Sequence[str], fmt: str) -> bytes:
    """One batch of the file: vectorised over the fixed 64-byte hex slots."""
    n = batch.num_rows
    hexes = [_fixed_hexes(batch.column(name)) for name in names]
    present = [
        pc.is_valid(batch.column(name)).to_numpy(zero_copy_only=False) for name in names
    ]
    if any(h is None for h in hexes):  # not from unreachable_hashes: by row
        columns = [batch.column(name).to_pylist() for name in names]
        if fmt == "csv":
            lines = [",".join(v or "" for v in r) for r in zip(*columns, strict=True)]
        else:
            lines = [v for r in zip(*columns, strict=True) for v in r if v]
        return ("\n".join(lines) + "\n").encode() if lines else b""
    k = len(names)
    if fmt == "lines":  # row-major: a contact's email hash, then its phone hash
        cells = np.empty((n, k, 65), dtype=np.uint8)
        for j in range(k):
            cells[:, j, :64] = hexes[j]
        cells[:, :, 64] = ord("\n")
        mask = np.stack(present, axis=1)
        return cells[mask].tobytes()
    # csv: each cell 64 hex or empty, "," between, "\n" after
    width = 65 * k
    out = np.empty((n, width), dtype=np.uint8)
    keep = np.ones((n, width), dtype=bool)
    for j in range(k):
        out[:, 65 * j : 65 * j + 64] = hexes[j]
        keep[:, 65 * j : 65 * j + 64] = present[j][:, None]
        out[:, 65 * j + 64] = ord(",") if j < k - 1 else ord("\n")
    return out[keep].tobytes()


def hash_pieces(
    batches: Iterable[pa.RecordBatch],
    fmt: str,
    identifiers: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """``lines``: one hash per line (a contact's email hash, then its phone hash);
    ``csv``: a header ``email_sha256,phone_sha256`` and one row per contact, an empty
    cell where it has no such identifier. ``progress(rows)`` counts lines / rows."""
    names = [f"{kind}_sha256" for kind in identifiers]
    if fmt == "csv":
        yield (",".join(names) + "\n").encode()
    rows = 0
    for batch in batches:
        data = _lines_bytes(batch, names, fmt)
        if fmt == "csv":
            rows += batch.num_rows
        else:
            rows += sum(
                len(batch.column(name)) - batch.column(name).null_count
                for name in names
            )
        if progress is not None:
            progress(rows)
        for start in range(0, len(data), PIECE_BYTES):
            yield data[start : start + PIECE_BYTES]


def write_pieces(pieces: Iterable[bytes], target: str | Any) -> int:
    """Write ``pieces`` to a path or a binary file object; the bytes written."""
    if isinstance(target, str) or hasattr(target, "__fspath__"):
        with open(target, "wb") as file:
            return _write_all(pieces, file)
    return _write_all(pieces, target)


def write_report(
    stream_of: Callable[[Callable[[int], None]], Iterable[bytes]],
    target: str | Any,
    *,
    members: int,
    format: str,
    columns: tuple[str, ...],
    started: float,
) -> ExportReport:
    """Write the pieces of ``stream_of(progress)`` to ``target`` and report it: the
    stream calls ``progress(rows)`` as it goes, so the report counts what was written
    (both the column export and the retargeting export end this way)."""
    rows = [0]
    size = write_pieces(stream_of(lambda n: rows.__setitem__(0, n)), target)
    return ExportReport(
        rows=rows[0],
        members=members,
        format=format,
        columns=columns,
        bytes=size,
        seconds=time.perf_counter() - started,
    )


def _write_all(pieces: Iterable[bytes], out: IO[bytes]) -> int:
    total = 0
    for piece in pieces:
        out.write(piece)
        total += len(piece)
    return total


def format_from_path(target: Any, known: Sequence[str], default: str) -> str:
    """The format a path's extension names (``.parquet``, ``.csv``, ``.txt`` = lines)."""
    name = (
        str(target) if isinstance(target, str) or hasattr(target, "__fspath__") else ""
    )
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    ext = {"txt": "lines", "pq": "parquet"}.get(ext, ext)
    return ext if ext in known else default
