"""Typed per-row attribute columns (contacts and catalog items share them).

Each column grows with its owner (``resize``), keeps NULLs explicitly and knows how to take
an Arrow array of new values for a set of rows (``assign``). Categorical and tag columns
keep a roaring bitmap per value, built on first use and kept in step with upserts, so
``city = "Kazan"`` is a dictionary lookup, not a scan.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from segd.errors import ValueRejected
from segd.native import NO_CODE as _NO_CODE
from segd.native import loadsplit
from segd.native.bitset import cids_to_bitmap
from segd.native.idmap import IdMap
from segd.timeutil import to_epoch_ms

NO_CODE = np.uint32(
    _NO_CODE
)  # a numpy scalar: comparisons with uint32 arrays stay uint32
# Above this many distinct values a per-value bitmap costs more than a scan saves
# (emails, phones): such columns are scanned with a code mask instead.
MAX_BITMAP_VALUES = 65_536

KINDS = ("int", "float", "bool", "timestamp", "category", "tags")


def dictionary_lookup(dictionary: pa.Array, used: np.ndarray, encode) -> np.ndarray:
    """Code per dictionary entry (NO_CODE for entries no valid row uses), with `encode`
    called on the used entries only, as ``encode_text`` calls it. Every entry used (a
    Parquet row group's own dictionary, as a rule): the dictionary is encoded as it is,
    without a filtered copy of its strings."""
    if used.all():
        return encode_text(dictionary, encode)
    lookup = np.full(len(dictionary), NO_CODE, dtype=np.uint32)
    if used.any():
        lookup[used] = encode_text(dictionary.filter(pa.array(used)), encode)
    return lookup


def encode_text(arr, encode) -> np.ndarray:
    """uint32 codes of a text column through `encode` (an IdMap method); NULL -> NO_CODE.

    Takes plain, chunked and dictionary-encoded Arrow text. A dictionary column (Parquet
    written from Arrow keeps it) is encoded once per distinct value actually used, then
    expanded by its indices: 200M event rows naming 10M customers cost 10M hash look-ups.
    """
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks == 1:
            return encode_text(arr.chunk(0), encode)
        if not pa.types.is_dictionary(arr.type) and arr.null_count == 0:
            return encode(arr)
        parts = [encode_text(c, encode) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    n = len(arr)
    if pa.types.is_dictionary(arr.type) and pa.types.is_int32(arr.type.index_type):
        # Native: which entries valid rows use, then one code per row (NULL rows
        # NO_CODE) in one pass each, reading the indices and validity bits in place.
        indices = arr.indices
        idx = np.frombuffer(
            indices.buffers()[1], np.int32, count=n, offset=indices.offset * 4
        )
        bits = indices.buffers()[0] if indices.null_count else None
        valid_bits = None if bits is None else np.frombuffer(bits, np.uint8)
        used = loadsplit.used_entries(
            idx, valid_bits, indices.offset, len(arr.dictionary)
        )
        lookup = dictionary_lookup(arr.dictionary, used, encode)
        return loadsplit.expand_codes(idx, valid_bits, indices.offset, lookup)
    if pa.types.is_dictionary(arr.type):
        idx = np.asarray(arr.indices.fill_null(0)).astype(np.int64, copy=False)
        valid = np.asarray(pc.is_valid(arr)) if arr.null_count else None
        used = (
            np.bincount(
                idx if valid is None else idx[valid], minlength=len(arr.dictionary)
            )
            > 0
        )
        lookup = np.full(len(arr.dictionary), NO_CODE, dtype=np.uint32)
        if used.any():
            lookup[used] = encode_text(arr.dictionary.filter(pa.array(used)), encode)
        codes = lookup[idx]
        if valid is not None:
            codes[~valid] = NO_CODE
        return codes
    if arr.null_count == 0:
        return encode(arr)
    codes = np.full(n, NO_CODE, dtype=np.uint32)
    if arr.null_count == n:
        return codes
    valid = np.asarray(pc.is_valid(arr))
    codes[valid] = encode(arr.filter(pa.array(valid)))
    return codes


def bitmap_nbytes(bm: BitMap) -> int:
    """Bytes held by a roaring bitmap's containers."""
    st = bm.get_statistics()
    return (
        st["n_bytes_array_containers"]
        + st["n_bytes_bitset_containers"]
        + st["n_bytes_run_containers"]
    )


def kind_of_arrow(t: pa.DataType) -> str | None:
    """The segd column kind for an Arrow type, or None when it has no mapping."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "category"
    if pa.types.is_dictionary(t) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    ):
        return "category"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    ):
        return "tags"
    return None


def _grow(arr: np.ndarray, n: int, fill) -> np.ndarray:
    if len(arr) >= n:
        return arr
    out = np.full(max(n, len(arr) + (len(arr) >> 1), 16), fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class NumericColumn:
    """int / float / bool / timestamp values with a validity mask (1 = not NULL)."""

    DTYPES = {
        "int": np.int64,
        "float": np.float64,
        "bool": np.int8,
        "timestamp": np.int64,
    }

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.values = np.zeros(0, dtype=self.DTYPES[kind])
        self.valid = np.zeros(0, dtype=np.uint8)

    def resize(self, n: int) -> None:
        self.values = _grow(self.values, n, 0)
        self.valid = _grow(self.valid, n, 0)

    def convert(self, arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Arrow values -> (values, valid); ``ValueRejected`` (with the row when one value
        is at fault) when they don't fit. Text is not parsed as a number."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if self.kind == "timestamp":
            return to_epoch_ms(arr)
        if pa.types.is_null(arr.type):
            n = len(arr)
            return np.zeros(n, self.values.dtype), np.zeros(n, np.uint8)
        target = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}[
            self.kind
        ]
        t = arr.type
        numeric = (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        )
        if not (numeric or pa.types.is_boolean(t)):
            raise ValueRejected(f"expected {self.kind}, got {t}")
        cast = _cast_or_locate(arr, target, self.kind)
        valid = np.asarray(pc.is_valid(cast)).astype(np.uint8)
        filled = pc.fill_null(cast, False if self.kind == "bool" else 0)
        values = np.asarray(filled).astype(self.values.dtype)
        if self.kind == "float":
            bad = ~np.isfinite(values)  # NULLs were filled with 0
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueRejected(
                    f"{values[row]!r} is not a finite number (send NULL for no value)",
                    row,
                )
        return values, valid

    def store(self, cids: np.ndarray, prepared: tuple[np.ndarray, np.ndarray]) -> None:
        """Write values made by convert() for the given contacts."""
        values, valid = prepared
        self.values[cids] = values
        self.valid[cids] = valid

    def value_of(self, cid: int):
        if not self.valid[cid]:
            return None
        v = self.values[cid]
        if self.kind == "bool":
            return bool(v)
        if self.kind == "float":
            return float(v)
        return int(v)

    def nbytes(self, n: int) -> int:
        return n * (self.values.itemsize + 1)

    # -- snapshots (segd.snapshot): rows [0, n) out, arrays memory-mapped back ---------
    def to_snapshot(self, w, prefix: str, n: int) -> dict:
        w.array(f"{prefix}.values", self.values[:n])
        w.array(f"{prefix}.valid", self.valid[:n])
        return {"name": self.name, "kind": self.kind}

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> NumericColumn:
        col = cls(meta["name"], meta["kind"])
        col.values = r.array(f"{prefix}.values", col.values.dtype)
        col.valid = r.array(f"{prefix}.valid", np.uint8)
        return col


_BITMAP_VERSIONS = itertools.count(1)  # CategoryColumn.bitmaps_version, process-wide


class CategoryColumn:
    """Dictionary-encoded strings: uint32 codes (NO_CODE = NULL) + a bitmap per value."""

    kind = "category"

    def __init__(self, name: str) -> None:
        self.name = name
        self.dictionary = IdMap()
        self.codes = np.zeros(0, dtype=np.uint32)
        self._bitmaps: list[BitMap] | None = None  # built lazily, see bitmaps()
        self._n = 0
        # Changes whenever a value bitmap may have (built, dropped or updated in place):
        # what derived sets (a plan's union of several values' bitmaps) are kept for.
        self.bitmaps_version = next(_BITMAP_VERSIONS)

    def resize(self, n: int) -> None:
        self.codes = _grow(self.codes, n, NO_CODE)
        if self._bitmaps is not None and n > self._n:
            pass  # new rows are NULL: no bitmap changes
        self._n = max(self._n, n)

    def convert(self, arr: pa.Array) -> pa.Array:
        """Check and normalise to Arrow text; the dictionary is only touched by store()
        (under the write lock), so a rejected batch leaves no trace. Numbers are refused:
        a text attribute given an int is a client bug, not a value to stringify."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if pa.types.is_null(arr.type):
            return pa.nulls(len(arr), pa.string())
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise ValueRejected(f"expected text, got {arr.type}")
        return arr

    def encode(self, arr: pa.Array) -> np.ndarray:
        """Dictionary codes of normalised text (NULL -> NO_CODE), adding new values."""
        codes = np.full(len(arr), NO_CODE, dtype=np.uint32)
        if arr.null_count == len(arr):
            return codes
        if arr.null_count == 0:
            return self.dictionary.get_or_add(arr)
        valid = np.asarray(pc.is_valid(arr))
        codes[valid] = self.dictionary.get_or_add(arr.filter(pa.array(valid)))
        return codes

    def store(self, cids: np.ndarray, arr: pa.Array) -> None:
        """Write values made by convert(), keeping the per-value bitmaps in step.

        `cids` must be unique (engine.ingest keeps the last row per contact)."""
        new_codes = self.encode(arr)
        if self._bitmaps is not None:
            self.bitmaps_version = next(_BITMAP_VERSIONS)
            if len(cids) > 10_000:
                self._bitmaps = None  # cheaper to rebuild on the next query
            else:
                self._update_bitmaps(cids, self.codes[cids], new_codes)
        self.codes[cids] = new_codes

    def _update_bitmaps(self, cids, old_codes, new_codes) -> None:
        """Move each changed contact between value bitmaps: one BitMap call per value."""
        bms = self._bitmaps
        if bms is None:
            return  # no bitmaps built yet: bitmaps() builds them from the codes
        self.bitmaps_version = next(_BITMAP_VERSIONS)
        while len(bms) < len(self.dictionary):
            bms.append(BitMap())
        cids = cids.astype(np.uint32)
        for codes, update in ((old_codes, "difference_update"), (new_codes, "update")):
            for code in np.unique(codes[codes != NO_CODE]).tolist():
                moved = cids_to_bitmap(np.unique(cids[codes == code]))
                getattr(bms[code], update)(moved)

    def has_bitmaps(self) -> bool:
        return len(self.dictionary) <= MAX_BITMAP_VALUES

    def bitmaps(self, n: int) -> list[BitMap]:
        """One BitMap of contacts per code, built with one argsort on first use."""
        if self._bitmaps is None:
            self.bitmaps_version = next(_BITMAP_VERSIONS)
            codes = self.codes[:n]
            order = np.argsort(codes, kind="stable").astype(np.uint32)
            bounds = np.searchsorted(
                codes[order], np.arange(len(self.dictionary) + 1, dtype=np.uint64)
            )
            self._bitmaps = [
                cids_to_bitmap(np.ascontiguousarray(order[bounds[k] : bounds[k + 1]]))
                for k in range(len(self.dictionary))
            ]
        bms = self._bitmaps
        while len(bms) < len(self.dictionary):
            bms.append(BitMap())
        return bms

    def value_of(self, cid: int):
        code = int(self.codes[cid])
        return None if code == NO_CODE else self.dictionary.decode_one(code)

    def nbytes(self, n: int) -> int:
        bitmap_bytes = sum(bitmap_nbytes(b) for b in (self._bitmaps or []))
        return n * 4 + self.dictionary.nbytes() + bitmap_bytes

    def to_snapshot(self, w, prefix: str, n: int) -> dict:
        """Codes and dictionary; the per-value bitmaps too when they are built (they are
        an index, but rebuilding them costs the first query an argsort)."""
        w.idmap(f"{prefix}.dictionary", self.dictionary)
        w.array(f"{prefix}.codes", self.codes[:n])
        bitmaps = self._bitmaps
        has = bitmaps is not None
        if has:
            w.bitmaps(f"{prefix}.bitmaps", bitmaps)
        return {"name": self.name, "kind": self.kind, "bitmaps": has}

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> CategoryColumn:
        col = cls(meta["name"])
        col.dictionary = r.idmap(f"{prefix}.dictionary")
        col.codes = r.array(f"{prefix}.codes", np.uint32)
        col._n = len(col.codes)
        if meta.get("bitmaps"):
            col._bitmaps = r.bitmaps(f"{prefix}.bitmaps")
        return col


class TagsColumn:
    """Multi-valued strings: a bitmap of contacts per tag; NULL (no list) kept apart."""

    kind = "tags"

    def __init__(self, name: str) -> None:
        self.name = name
        self.dictionary = IdMap()
        self.tag_bitmaps: list[BitMap] = []
        self.valid = np.zeros(0, dtype=np.uint8)

    def resize(self, n: int) -> None:
        self.valid = _grow(self.valid, n, 0)

    def convert(self, arr: pa.Array) -> pa.Array:
        if pa.types.is_null(arr.type):
            return pa.nulls(len(arr), pa.list_(pa.string()))
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not (
            (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type))
            and (
                pa.types.is_string(arr.type.value_type)
                or pa.types.is_large_string(arr.type.value_type)
                or pa.types.is_null(arr.type.value_type)
            )
        ):
            raise ValueRejected(f"expected a list of strings, got {arr.type}")
        if pc.list_flatten(arr).null_count:
            owners = np.asarray(pc.list_parent_indices(arr))
            flat_valid = np.asarray(pc.is_valid(pc.list_flatten(arr)))
            row = int(owners[np.flatnonzero(~flat_valid)[0]])
            raise ValueRejected("a tag list holds a NULL tag", row)
        return arr

    def store(self, cids: np.ndarray, arr: pa.Array) -> None:
        """Replace the tag sets of the given contacts (arr from convert())."""
        valid = np.asarray(pc.is_valid(arr)).astype(np.uint8)
        touched = cids_to_bitmap(np.unique(cids).astype(np.uint32))
        for bm in self.tag_bitmaps:
            bm.difference_update(touched)
        lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0))
        owners = np.repeat(cids.astype(np.uint32), lengths)
        flat = pc.list_flatten(arr)
        if len(flat):
            codes = self.dictionary.get_or_add(flat)
            while len(self.tag_bitmaps) < len(self.dictionary):
                self.tag_bitmaps.append(BitMap())
            order = np.argsort(codes, kind="stable")
            codes_sorted, owners_sorted = codes[order], owners[order]
            bounds = np.flatnonzero(
                np.r_[True, codes_sorted[1:] != codes_sorted[:-1], True]
            )
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                self.tag_bitmaps[int(codes_sorted[lo])] |= cids_to_bitmap(
                    _sorted_unique(owners_sorted[lo:hi])
                )
        self.valid[cids] = valid

    def value_of(self, cid: int):
        if not self.valid[cid]:
            return None
        return [
            self.dictionary.decode_one(k)
            for k, bm in enumerate(self.tag_bitmaps)
            if cid in bm
        ]

    def nbytes(self, n: int) -> int:
        return (
            n
            + self.dictionary.nbytes()
            + sum(bitmap_nbytes(b) for b in self.tag_bitmaps)
        )

    def to_snapshot(self, w, prefix: str, n: int) -> dict:
        w.idmap(f"{prefix}.dictionary", self.dictionary)
        w.bitmaps(f"{prefix}.bitmaps", self.tag_bitmaps)
        w.array(f"{prefix}.valid", self.valid[:n])
        return {"name": self.name, "kind": self.kind}

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> TagsColumn:
        col = cls(meta["name"])
        col.dictionary = r.idmap(f"{prefix}.dictionary")
        col.tag_bitmaps = r.bitmaps(f"{prefix}.bitmaps")
        col.valid = r.array(f"{prefix}.valid", np.uint8)
        return col


def sorted_unique(cids: np.ndarray) -> np.ndarray:
    """Sorted distinct cids; rows usually arrive sorted, so this is mostly one pass.
    (numpy 2's ``np.unique`` hashes uint32 first: ~100x slower on 100k cids.)"""
    cids = np.ascontiguousarray(cids, dtype=np.uint32)
    if len(cids) > 1 and not (cids[1:] >= cids[:-1]).all():
        cids = np.sort(cids)
    if len(cids) > 1:
        cids = cids[np.r_[True, cids[1:] != cids[:-1]]]
    return cids


_sorted_unique = sorted_unique


def _cast_or_locate(arr: pa.Array, to: pa.DataType, kind: str) -> pa.Array:
    """Cast; when Arrow refuses (a fraction for an int, an overflow), name the first
    value that does not fit by bisection (O(log n) casts)."""
    try:
        return pc.cast(arr, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(arr.slice(lo, mid - lo), to)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    shown = repr(arr[lo].as_py())[:80]
    raise ValueRejected(f"{shown} is not a valid {kind}", lo)


def new_column(name: str, kind: str):
    """A fresh empty column of a kind in KINDS."""
    if kind == "category":
        return CategoryColumn(name)
    if kind == "tags":
        return TagsColumn(name)
    if kind in NumericColumn.DTYPES:
        return NumericColumn(name, kind)
    raise ValueError(
        f"unknown column kind {kind!r} (expected one of {', '.join(KINDS)})"
    )


def column_from_snapshot(r, prefix: str, meta: dict):
    """The column a ``to_snapshot`` wrote under `prefix` (see segd.snapshot)."""
    kind = meta["kind"]
    if kind == "category":
        return CategoryColumn.from_snapshot(r, prefix, meta)
    if kind == "tags":
        return TagsColumn.from_snapshot(r, prefix, meta)
    if kind in NumericColumn.DTYPES:
        return NumericColumn.from_snapshot(r, prefix, meta)
    raise ValueError(f"unknown column kind {kind!r} in a snapshot")
