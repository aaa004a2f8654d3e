"""Parquet row groups with their dictionary-encoded text columns read by segd, not Arrow.

Why: Arrow's reader builds a dictionary column by inserting each column chunk's whole
dictionary page into a hash table of its own (``BinaryMemoTable``), to deduplicate values a
Parquet dictionary page holds once each anyway. At 10M contacts a 1M-row row group holds
~600k distinct customer ids and ~270k item ids, and that re-hash was more than half of
reading those columns — and a bulk load hashes the same values again into its id maps.
Here a column chunk's pages are parsed (thrift compact page headers), decompressed with
Arrow's codecs, and decoded by the native kernels of ``segd.native.pqdict``: the
dictionary page becomes the Arrow dictionary as it is, the RLE / bit-packed indices and
definition levels become the indices and their validity. The result is the same
``DictionaryArray`` Arrow would give (tests/property/test_pqdict.py checks it against
Arrow's reader).

Only what the fast path understands is read here: a flat (not nested, not repeated)
BYTE_ARRAY column whose Arrow type is ``dictionary<int32, string>``, compressed with
ZSTD, Snappy, gzip or not at all, every data page dictionary-encoded (a writer that fell
back to PLAIN pages, an unknown encoding, a corrupt page...). Anything else — and any
inconsistency found while decoding — leaves the column to Arrow's reader, which reads it
the usual way (and names the problem, if there is one).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segd.native.pqdict import plain_byte_array, rle_hybrid

# Parquet's enums (parquet.thrift)
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
_CODECS = {"UNCOMPRESSED": None, "ZSTD": "zstd", "SNAPPY": "snappy", "GZIP": "gzip"}


# A column chunk is decoded here only when its dictionary page holds at least this many
# (compressed) bytes: Arrow's re-hash costs per dictionary entry, this reader a fixed
# ~0.3 ms per page in Python, so a small dictionary (event types, channels, a few hundred
# phrases) is cheaper to leave to Arrow. Measured on the 10M cache's row groups: customer
# ids 0.028 s here vs 0.22 s in Arrow, `type` (10 values) 0.035 s vs 0.008 s.
MIN_DICTIONARY_BYTES = 256 << 10


class _Unsupported(Exception):
    """The fast path does not read this column chunk: Arrow's reader will."""


# -- thrift compact protocol (just enough to read a PageHeader) ------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Unsupported("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: bytes, pos: int, ctype: int) -> tuple[Any, int]:
    """One compact-protocol value of type `ctype` at `pos`."""
    if ctype in (1, 2):  # bool in a field header: the type is the value
        return ctype == 1, pos
    if ctype == 3:
        if pos >= len(buf):
            raise _Unsupported("truncated byte")
        return struct.unpack_from("<b", buf, pos)[0], pos + 1
    if ctype in (4, 5, 6):
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if ctype == 7:
        if pos + 8 > len(buf):
            raise _Unsupported("truncated double")
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if ctype == 8:
        size, pos = _varint(buf, pos)
        if pos + size > len(buf):
            raise _Unsupported("truncated binary")
        return buf[pos : pos + size], pos + size
    if ctype in (9, 10):
        if pos >= len(buf):
            raise _Unsupported("truncated list")
        head = buf[pos]
        pos += 1
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            if etype in (1, 2):  # list booleans are one byte each
                items.append(buf[pos] == 1)
                pos += 1
            else:
                item, pos = _value(buf, pos, etype)
                items.append(item)
        return items, pos
    if ctype == 11:
        size, pos = _varint(buf, pos)
        out = {}
        if size:
            kv = buf[pos]
            pos += 1
            for _ in range(size):
                k, pos = _value(buf, pos, kv >> 4)
                v, pos = _value(buf, pos, kv & 0x0F)
                out[k] = v
        return out, pos
    if ctype == 12:
        return _struct(buf, pos)
    raise _Unsupported(f"thrift compact type {ctype}")


def _struct(buf: bytes, pos: int) -> tuple[dict[int, Any], int]:
    """A compact-protocol struct at `pos` as {field id: value}, and the end position."""
    fields: dict[int, Any] = {}
    last = 0
    while True:
        if pos >= len(buf):
            raise _Unsupported("truncated struct")
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, ctype = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _zigzag(raw)
        fields[fid], pos = _value(buf, pos, ctype)
        last = fid


# -- one column chunk --------------------------------------------------------------------
def _decompress(body: bytes, codec: str | None, size: int) -> np.ndarray:
    if codec is None:
        out = np.frombuffer(body, dtype=np.uint8)
    else:
        try:
            raw = pa.Codec(codec).decompress(body, decompressed_size=size)
        except (pa.ArrowException, OSError) as exc:
            raise _Unsupported(f"cannot decompress: {exc}") from None
        out = np.frombuffer(raw, dtype=np.uint8)
    if len(out) != size:
        raise _Unsupported("decompressed page size differs from its header")
    return out


def _decode(values: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """n dictionary indices (bit width byte + RLE / bit-packed runs)."""
    if n == 0:
        return np.zeros(0, dtype=np.int32), 0
    if len(values) < 1:
        raise _Unsupported("no bit width")
    try:
        idx, used = rle_hybrid(values[1:], int(values[0]), n)
    except ValueError as exc:
        raise _Unsupported(str(exc)) from None
    return idx, used + 1


def _levels(buf: np.ndarray, n: int) -> np.ndarray:
    """Definition levels (max level 1) as a bool array: True where a value is present."""
    try:
        levels, _ = rle_hybrid(buf, 1, n)
    except ValueError as exc:
        raise _Unsupported(str(exc)) from None
    return levels.astype(bool)


def read_dictionary_column(
    f: BinaryIO, meta: pq.ColumnChunkMetaData, max_def: int, rows: int
) -> pa.DictionaryArray:
    """One dictionary-encoded BYTE_ARRAY column chunk as ``dictionary<int32, string>``.

    `f` is the Parquet file (binary, seekable), `meta` the chunk's metadata, `max_def` its
    maximum definition level (0: required, 1: optional), `rows` the row group's rows.
    Raises ``_Unsupported`` for anything the fast path does not read."""
    raw, codec = _chunk_bytes(f, meta, rows)
    return _decode_column_chunk(raw, codec, max_def, rows)


def _chunk_bytes(
    f: BinaryIO, meta: pq.ColumnChunkMetaData, rows: int
) -> tuple[bytes, str | None]:
    """A column chunk's bytes (dictionary page first) and its codec, read from `f`;
    ``_Unsupported`` for a chunk the fast path does not read."""
    codec_name = meta.compression
    if codec_name not in _CODECS:
        raise _Unsupported(f"codec {codec_name}")
    if not meta.has_dictionary_page or meta.num_values != rows:
        raise _Unsupported("no dictionary page")
    start = meta.dictionary_page_offset or meta.data_page_offset
    if start is None or start < 0 or meta.total_compressed_size <= 0:
        raise _Unsupported("no page offsets")
    f.seek(start)
    raw = f.read(meta.total_compressed_size)
    if len(raw) != meta.total_compressed_size:
        raise _Unsupported("column chunk runs past the end of the file")
    return raw, _CODECS[codec_name]


def _decode_column_chunk(
    raw: bytes, codec: str | None, max_def: int, rows: int
) -> pa.DictionaryArray:
    """``read_dictionary_column``'s decoding of a column chunk's bytes `raw` (no file
    access: ``iter_row_groups`` runs it on a helper thread)."""
    dictionary: pa.StringArray | None = None
    pieces: list[np.ndarray] = []
    valids: list[np.ndarray | None] = []
    got = pos = 0
    while got < rows:
        header, pos = _struct(raw, pos)
        ptype, usize, csize = header.get(1), header.get(2), header.get(3)
        if not isinstance(usize, int) or not isinstance(csize, int) or csize < 0:
            raise _Unsupported("page header without sizes")
        if pos + csize > len(raw):
            raise _Unsupported("page runs past its column chunk")
        body = raw[pos : pos + csize]
        pos += csize
        if ptype == _DICTIONARY_PAGE:
            dph = header.get(7) or {}
            if dictionary is not None or dph.get(2) not in (_PLAIN, _PLAIN_DICTIONARY):
                raise _Unsupported("second or non-PLAIN dictionary page")
            page = _decompress(body, codec, usize)
            try:
                offsets, data, _ = plain_byte_array(page, int(dph.get(1, -1)))
            except ValueError as exc:
                raise _Unsupported(str(exc)) from None
            dictionary = pa.StringArray.from_buffers(
                len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
            )
            continue
        if ptype == _INDEX_PAGE:
            continue
        if dictionary is None:
            raise _Unsupported("data page before the dictionary page")
        if ptype == _DATA_PAGE:
            dh = header.get(5) or {}
            n = int(dh.get(1, -1))
            if n < 0 or dh.get(2) not in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
                raise _Unsupported("data page not dictionary-encoded")
            page = _decompress(body, codec, usize)
            valid = None
            if max_def:
                if dh.get(3) != _RLE or len(page) < 4:
                    raise _Unsupported("definition levels not RLE")
                size = int.from_bytes(page[:4].tobytes(), "little")
                if 4 + size > len(page):
                    raise _Unsupported("definition levels past the page")
                valid = _levels(page[4 : 4 + size], n)
                page = page[4 + size :]
        elif ptype == _DATA_PAGE_V2:
            dh = header.get(8) or {}
            n = int(dh.get(1, -1))
            def_len, rep_len = int(dh.get(5, 0)), int(dh.get(6, 0))
            if (
                n < 0
                or rep_len
                or dh.get(4) not in (_PLAIN_DICTIONARY, _RLE_DICTIONARY)
            ):
                raise _Unsupported("v2 data page not dictionary-encoded")
            if def_len > len(body) or (def_len and not max_def):
                raise _Unsupported("definition levels past the page")
            levels = np.frombuffer(body, dtype=np.uint8, count=def_len)
            valid = _levels(levels, n) if max_def else None
            rest = body[def_len:]
            if dh.get(7, True) and codec is not None:
                page = _decompress(rest, codec, usize - def_len)
            else:
                page = np.frombuffer(rest, dtype=np.uint8)
        else:
            raise _Unsupported(f"page type {ptype}")
        present = n if valid is None else int(np.count_nonzero(valid))
        idx, _ = _decode(page, present)
        if valid is not None and present < n:
            full = np.zeros(n, dtype=np.int32)
            full[valid] = idx
            idx = full
        pieces.append(idx)
        valids.append(valid if valid is not None and present < n else None)
        got += n
    if got != rows or dictionary is None:
        raise _Unsupported("pages hold a different number of rows")
    indices = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    if len(indices) and (
        int(indices.min()) < 0 or int(indices.max()) >= len(dictionary)
    ):
        raise _Unsupported("dictionary index out of range")
    if any(v is not None for v in valids):
        valid_all = np.concatenate(
            [
                np.ones(len(p), bool) if v is None else v
                for p, v in zip(pieces, valids, strict=True)
            ]
        )
        nulls = rows - int(np.count_nonzero(valid_all))
        bitmap = pa.py_buffer(np.packbits(valid_all, bitorder="little"))
    else:
        nulls, bitmap = 0, None
    index_array = pa.Array.from_buffers(
        pa.int32(), rows, [bitmap, pa.py_buffer(indices)], null_count=nulls
    )
    return pa.DictionaryArray.from_arrays(index_array, dictionary, safe=False)


# -- row groups --------------------------------------------------------------------------
def _fast_columns(pf: pq.ParquetFile, columns: list[str]) -> dict[str, tuple[int, int]]:
    """{name: (Parquet column index, max definition level)} of the columns the fast
    path may read: flat BYTE_ARRAY columns read by Arrow as dictionary<int32, string>."""
    arrow = pf.schema_arrow
    schema = pf.metadata.schema
    out = {}
    for i in range(len(schema)):
        col = schema.column(i)
        name = col.path
        if name not in columns or "." in name:
            continue
        try:
            t = arrow.field(name).type
        except KeyError:
            continue
        if not (
            pa.types.is_dictionary(t)
            and t.index_type == pa.int32()
            and pa.types.is_string(t.value_type)
        ):
            continue
        if (
            col.physical_type != "BYTE_ARRAY"
            or col.max_repetition_level != 0
            or col.max_definition_level > 1
        ):
            continue
        out[name] = (i, col.max_definition_level)
    return out


def _dictionary_bytes(meta: pq.ColumnChunkMetaData) -> int:
    """Compressed bytes of a column chunk's dictionary page (0 when it has none)."""
    if not meta.has_dictionary_page or not meta.dictionary_page_offset:
        return 0
    return max(0, meta.data_page_offset - meta.dictionary_page_offset)


# With two or more columns decoded here in a row group, the first (the file's first:
# customer ids at 10M, the biggest) is decoded on a helper thread while this thread
# decodes the others and Arrow reads the rest: at 10M the read-ahead thread was the
# slower side of a bulk load (reading ~62 CPU-s against the loading thread's ~36), and
# customer ids are ~40% of its work. The same arrays either way. False: one thread.
PARALLEL_COLUMNS = True


def _decode_or_none(
    raw: bytes | None, codec: str | None, max_def: int, rows: int
) -> pa.DictionaryArray | None:
    if raw is None:
        return None
    try:
        return _decode_column_chunk(raw, codec, max_def, rows)
    except _Unsupported:
        return None


def _column_bytes(
    f: BinaryIO, meta: pq.ColumnChunkMetaData, rows: int
) -> tuple[bytes | None, str | None]:
    """``_chunk_bytes``, or (None, None) when the fast path does not read the chunk."""
    try:
        return _chunk_bytes(f, meta, rows)
    except _Unsupported:
        return None, None


def iter_row_groups(
    pf: pq.ParquetFile, f: BinaryIO, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Each row group of `pf` (opened on the file `f` also is) as a table of `columns`
    (all when None), in the file's column order; dictionary text columns are decoded
    here (``read_dictionary_column``) when their dictionary page is big enough to pay
    (``MIN_DICTIONARY_BYTES``), the others, and any column the fast path does not read,
    by Arrow. With ``PARALLEL_COLUMNS`` the first such column of a row group is decoded
    on a helper thread (its bytes read here first)."""
    names = pf.schema_arrow.names if columns is None else columns
    names = [c for c in pf.schema_arrow.names if c in names]
    fast = _fast_columns(pf, names)
    fields = [pf.schema_arrow.field(c) for c in names]
    helper: ThreadPoolExecutor | None = None
    try:
        for g in range(pf.metadata.num_row_groups):
            group = pf.metadata.row_group(g)
            rows = group.num_rows
            decoded: dict[str, pa.Array] = {}
            chosen = [
                (name, group.column(i), max_def)
                for name, (i, max_def) in fast.items()
                if _dictionary_bytes(group.column(i)) >= MIN_DICTIONARY_BYTES
            ]
            aside: tuple[str, Future] | None = None
            if PARALLEL_COLUMNS and len(chosen) >= 2:
                name, meta, max_def = chosen.pop(0)
                raw, codec = _column_bytes(f, meta, rows)
                if helper is None:
                    helper = ThreadPoolExecutor(1, thread_name_prefix="segd-pq-column")
                aside = name, helper.submit(_decode_or_none, raw, codec, max_def, rows)
            for name, meta, max_def in chosen:
                try:
                    decoded[name] = read_dictionary_column(f, meta, max_def, rows)
                except _Unsupported:
                    pass
            skip = () if aside is None else (aside[0],)
            rest = [c for c in names if c not in decoded and c not in skip]
            others = pf.read_row_group(g, columns=rest) if rest else None
            if aside is not None:
                column = aside[1].result()
                if column is not None:
                    decoded[aside[0]] = column
                else:  # not for the fast path: Arrow reads it (and names a problem)
                    late = pf.read_row_group(g, columns=[aside[0]])
                    decoded[aside[0]] = late.column(aside[0])
            arrays = [
                decoded[c] if c in decoded else others.column(c)  # type: ignore[union-attr]
                for c in names
            ]
            yield pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    finally:
        if helper is not None:
            helper.shutdown(wait=True, cancel_futures=True)
