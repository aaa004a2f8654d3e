"""The contact store: external ``customer_id`` <-> dense cid, and typed attribute columns.

cids are dense (0..n-1) so a per-contact array is indexed directly and a set of contacts is
a bitmap. Ids are never reused; a contact exists from the first time any batch names it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd.columns import (
    CategoryColumn,
    NumericColumn,
    TagsColumn,
    column_from_snapshot,
    encode_text,
    new_column,
)
from segd.native.idmap import IdMap

Column = NumericColumn | CategoryColumn | TagsColumn


class ContactStore:
    """Contacts and their attributes; every mutation arrives through engine.ingest."""

    def __init__(self) -> None:
        self.ids = IdMap()
        self.columns: dict[str, Column] = {}
        # Identity merges (segd.identity): contacts merged away, and cid -> the contact
        # it now is (path-compressed; None until the first merge, identity past its end).
        self.merged = BitMap()
        self.redirect: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n(self) -> int:
        return len(self.ids)

    def lookup(self, customer_ids: pa.Array) -> np.ndarray:
        """cids of existing contacts (NO_CODE for unknown); adds nothing. The id of a
        merged contact gives its survivor."""
        return self.canonical(encode_text(customer_ids, self.ids.lookup))

    def cid_of(self, customer_id: str) -> int:
        """cid of one contact (the survivor for a merged id), -1 when unknown."""
        cid = self.ids.lookup_one(customer_id)
        return cid if cid < 0 else self.canonical_one(cid)

    def ensure(self, customer_ids: pa.Array) -> np.ndarray:
        """cids for the ids, creating contacts (with NULL attributes) for new ones; the
        id of a merged contact gives its survivor."""
        cids = encode_text(customer_ids, self.ids.get_or_add)
        self._resize()
        return self.canonical(cids)

    def canonical(self, cids: np.ndarray) -> np.ndarray:
        """cids with merged contacts replaced by their survivors (one gather; NO_CODE
        and cids past the redirect table stay as they are)."""
        red = self.redirect
        if red is None or not len(cids):
            return cids
        cids = np.array(cids, dtype=np.uint32, copy=True)
        inside = cids < len(red)
        cids[inside] = red[cids[inside]]
        return cids

    def canonical_one(self, cid: int) -> int:
        red = self.redirect
        return int(red[cid]) if red is not None and 0 <= cid < len(red) else cid

    def live_count(self) -> int:
        """Contacts that are not merged away."""
        return len(self.ids) - len(self.merged)

    def _resize(self) -> None:
        n = len(self.ids)
        for col in self.columns.values():
            col.resize(n)

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)

    def add_column(self, name: str, kind: str) -> Column:
        """A new attribute column, all NULL for existing contacts."""
        col = new_column(name, kind)
        col.resize(len(self.ids))
        self.columns[name] = col
        return col

    def suggest(self, name: str) -> str:
        """' (did you mean ...?)' for a mistyped attribute name, or '' (names are
        case-sensitive; ``GENDER`` is told so and pointed at ``gender``)."""
        from segd.segments.hints import name_hint

        if name == "age" and "birth_date" not in self.columns:
            return " (age is derived from a birth_date column, and there is none)"
        known = [*self.columns, *(["age"] if "birth_date" in self.columns else [])]
        return name_hint(name, known)

    def external_ids(self, cids: np.ndarray) -> list[str]:
        """customer_ids for cids, in the given order."""
        if len(cids) == 0:
            return []
        return self.ids.decode(np.ascontiguousarray(cids, dtype=np.uint32)).to_pylist()

    def profile(self, cid: int) -> dict:
        """All attribute values of one contact (for explain)."""
        return {name: col.value_of(cid) for name, col in self.columns.items()}

    def nbytes(self) -> int:
        n = len(self.ids)
        return self.ids.nbytes() + sum(col.nbytes(n) for col in self.columns.values())

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self, w, prefix: str) -> dict:
        n = len(self.ids)
        w.idmap(f"{prefix}.ids", self.ids)
        merges = self.redirect is not None
        if merges:
            w.array(f"{prefix}.redirect", self.redirect)
            w.bitmaps(f"{prefix}.merged", [self.merged])
        return {
            "n": n,
            "merges": merges,
            "columns": [
                col.to_snapshot(w, f"{prefix}.c{i}", n)
                for i, col in enumerate(self.columns.values())
            ],
        }

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> ContactStore:
        store = cls()
        store.ids = r.idmap(f"{prefix}.ids")
        if meta.get("merges"):
            store.redirect = np.array(r.array(f"{prefix}.redirect", np.uint32))
            store.merged = BitMap(r.bitmaps(f"{prefix}.merged")[0])
        for i, col_meta in enumerate(meta["columns"]):
            col = column_from_snapshot(r, f"{prefix}.c{i}", col_meta)
            store.columns[col.name] = col
        return store
