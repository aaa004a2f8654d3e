"""What a segment evaluation returns: members as a bitmap, external ids on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap


@dataclass(frozen=True)
class QueryWarning:
    """A query that is valid but probably not what was meant: it names a value that no
    item or contact has (``unknown category "Outdor" (did you mean "Outdoor"?)``).

    ``where`` is the path into the query's AST (``and[0].where[0].value``), ``field`` the
    field tested (category, brand, item, ...), ``value`` the unknown value and
    ``suggestion`` the closest existing value ("" if none is close). The count that comes
    with a warning is still exact.
    """

    where: str
    field: str
    value: str
    suggestion: str = ""

    @property
    def message(self) -> str:
        text = f"unknown {self.field} {_quoted(self.value)}"
        if self.suggestion:
            text += f" (did you mean {_quoted(self.suggestion)}?)"
        return text

    def __str__(self) -> str:
        return self.message


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SegmentResult:
    """Members of a segment at one moment (a snapshot: later ingest does not change it).

    ``bitmap`` holds internal contact ids (cids); ``ids`` / ``sample`` / ``iter_ids`` turn
    them into external customer_ids, in ascending cid order, a page at a time.
    The bitmap may be shared with the engine's result cache: treat it as read-only.
    """

    def __init__(
        self,
        bitmap: BitMap,
        decode: Callable[[np.ndarray], list[str]],
        now_s: float,
        warnings: tuple[QueryWarning, ...] = (),
    ) -> None:
        self.bitmap = bitmap
        self._decode = decode
        self.now_s = now_s
        self.warnings = warnings  # see QueryWarning

    def count(self) -> int:
        return len(self.bitmap)

    def __len__(self) -> int:
        return len(self.bitmap)

    def cids(self) -> np.ndarray:
        """All member cids, ascending (uint32)."""
        return np.frombuffer(self.bitmap.to_array(), dtype=np.uint32)

    def ids(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """External ids of members [offset, offset + limit) in cid order."""
        n = len(self.bitmap)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        end = n if limit is None else min(n, offset + max(0, limit))
        if offset >= end:
            return []
        if end - offset == n:
            return self._decode(self.cids())
        # A roaring slice selects by rank: O(page), not O(members), per page.
        page = self.bitmap[offset:end].to_array()
        return self._decode(np.frombuffer(page, dtype=np.uint32))

    def sample(self, n: int, seed: int | None = None) -> list[str]:
        """Up to n members chosen uniformly at random (without replacement)."""
        size = len(self.bitmap)
        if n <= 0 or size == 0:
            return []
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(size, size=min(n, size), replace=False))
        cids = (
            np.array([self.bitmap[int(i)] for i in picks], dtype=np.uint32)
            if len(picks) < 256
            else self.cids()[picks]
        )
        return self._decode(cids)

    def iter_ids(self, chunk: int = 10_000) -> Iterator[list[str]]:
        """External ids in chunks, for streaming exports."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        n = len(self.bitmap)
        if n <= chunk:
            if n:
                yield self._decode(self.cids())
            return
        # Rank slices of the bitmap: memory for one chunk, not for every member.
        for start in range(0, n, chunk):
            part = self.bitmap[start : start + chunk].to_array()
            yield self._decode(np.frombuffer(part, dtype=np.uint32))

    def __iter__(self) -> Iterator[str]:
        for part in self.iter_ids():
            yield from part
