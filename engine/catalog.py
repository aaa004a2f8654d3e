"""The item catalog: item ids, category tree, brand, price, stock and free attributes.

Event filters on catalog fields (``view(category = "Pets", price < 500)``) compile here to a
uint8 mask over item codes: the event scan then tests ``mask[item_code]`` per event, and the
evaluator may instead gather the postings of the (few) matching items.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from segd.columns import (
    CategoryColumn,
    NumericColumn,
    TagsColumn,
    column_from_snapshot,
    encode_text,
    new_column,
)
from segd.errors import InvalidQuery
from segd.native import NO_CODE
from segd.native.idmap import IdMap
from segd.predicates import dictionary_mask, in_intervals, numeric_intervals

MAX_CACHED_MASKS = 256
BUILTIN_ITEM_COLUMNS = {
    "category": "category",
    "brand": "category",
    "price": "float",
    "in_stock": "bool",
}


class Catalog:
    """Items keyed by dense item codes (the codes of the events' `item` dimension)."""

    def __init__(self) -> None:
        self.ids = IdMap()
        # Masks of recent filters; the catalog changes rarely, event queries constantly.
        self._masks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.version = 0  # bumped by every change (see touch())
        self.columns: dict[str, NumericColumn | CategoryColumn | TagsColumn] = {}
        for name, kind in BUILTIN_ITEM_COLUMNS.items():
            self.columns[name] = new_column(name, kind)

    def __len__(self) -> int:
        return len(self.ids)

    def ensure(self, item_ids: pa.Array) -> np.ndarray:
        """Codes for item ids, adding unknown items (with NULL attributes)."""
        before = len(self.ids)
        codes = encode_text(item_ids, self.ids.get_or_add)
        if len(self.ids) != before:
            self.touch()
        for col in self.columns.values():
            col.resize(len(self.ids))
        return codes

    def touch(self) -> None:
        """The catalog changed: cached filter masks are stale."""
        self.version += 1
        self._masks.clear()

    def add_column(self, name: str, kind: str):
        self.touch()
        col = new_column(name, kind)
        col.resize(len(self.ids))
        self.columns[name] = col
        return col

    def has_field(self, name: str) -> bool:
        return name == "item" or name in self.columns

    def fields(self) -> list[str]:
        return ["item", *self.columns]

    def suggest(self, name: str, extra: list[str]) -> str:
        """' (did you mean ...?)' for a mistyped event field (case-sensitive names)."""
        from segd.segments.hints import name_hint

        return name_hint(name, [*self.fields(), *extra])

    def item_filter(self, field: str, op: str, value, where: str):
        """(mask, codes): the uint8 mask over item codes of ``field op value`` and the
        codes it admits, cached until the catalog changes (both read-only)."""
        key = (field, op, json.dumps(value, sort_keys=True, default=str))
        hit = self._masks.get(key)
        if hit is None:
            mask = self._item_mask(field, op, value, where)
            codes = np.flatnonzero(mask).astype(np.uint32)
            mask.flags.writeable = False
            codes.flags.writeable = False
            if len(self._masks) >= MAX_CACHED_MASKS:
                self._masks.clear()
            hit = self._masks[key] = (mask, codes)
        return hit

    def value_codes(self, field: str, op: str, value, where: str) -> np.ndarray | None:
        """The codes of category column `field`'s dictionary that ``field op value``
        admits (read-only, cached like ``item_filter``): an item passes that filter
        exactly when its code is one of them. None for other kinds of fields. Lets an
        event log keep postings per value (``events.ATTRIBUTE_POSTINGS``) and gather
        a few lists instead of one per admitted item."""
        col = self.columns.get(field)
        if not isinstance(col, CategoryColumn) or op in (
            "<",
            "<=",
            ">",
            ">=",
            "between",
        ):
            return None
        key = ("values", field, op, json.dumps(value, sort_keys=True, default=str))
        hit = self._masks.get(key)
        if hit is None:
            value_mask = dictionary_mask(
                col.dictionary, op, value, where, subtree=(field == "category")
            )
            codes = np.flatnonzero(value_mask).astype(np.uint32)
            codes.flags.writeable = False
            if len(self._masks) >= MAX_CACHED_MASKS:
                self._masks.clear()
            hit = self._masks[key] = (value_mask, codes)
        return hit[1]

    def item_mask(self, field: str, op: str, value, where: str) -> np.ndarray:
        """uint8 mask over item codes: items whose `field` satisfies ``op value``."""
        return self.item_filter(field, op, value, where)[0]

    def _item_mask(self, field: str, op: str, value, where: str) -> np.ndarray:
        """uint8 mask over item codes: items whose `field` satisfies ``op value``.

        Items with a NULL field never match (so ``!=`` excludes them too).
        """
        n = len(self.ids)
        if field == "item":
            return dictionary_mask(self.ids, op, value, where)
        col = self.columns[field]
        if isinstance(col, CategoryColumn):
            if op in ("<", "<=", ">", ">=", "between"):
                raise InvalidQuery.at(
                    where, f"operator {op!r} does not apply to text field {field!r}"
                )
            value_mask = dictionary_mask(
                col.dictionary, op, value, where, subtree=(field == "category")
            )
            codes = col.codes[:n]
            out = np.zeros(n, dtype=np.uint8)
            present = codes != NO_CODE
            if len(value_mask):
                out[present] = value_mask[codes[present]]
            return out
        if isinstance(col, TagsColumn):
            raise InvalidQuery.at(where, f"tag field {field!r} cannot filter events")
        lo, hi = numeric_intervals(col.kind, op, value, where)
        hit = in_intervals(col.values[:n].astype(np.float64), lo, hi)
        return (hit & col.valid[:n].astype(bool)).astype(np.uint8)

    def nbytes(self) -> int:
        n = len(self.ids)
        return self.ids.nbytes() + sum(c.nbytes(n) for c in self.columns.values())

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self, w, prefix: str) -> dict:
        n = len(self.ids)
        w.idmap(f"{prefix}.ids", self.ids)
        return {
            "n": n,
            "version": self.version,
            "columns": [
                col.to_snapshot(w, f"{prefix}.c{i}", n)
                for i, col in enumerate(self.columns.values())
            ],
        }

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> Catalog:
        catalog = cls()
        catalog.ids = r.idmap(f"{prefix}.ids")
        catalog.version = meta["version"]
        catalog.columns = {}
        for i, col_meta in enumerate(meta["columns"]):
            col = column_from_snapshot(r, f"{prefix}.c{i}", col_meta)
            catalog.columns[col.name] = col
        return catalog
