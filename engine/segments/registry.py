"""Saved segments: named queries, static (frozen members) or dynamic (evaluated on use)."""

from __future__ import annotations

import builtins
import re
import time
from dataclasses import dataclass, replace

from pyroaring import BitMap

from segd.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidInput,
    InvalidQuery,
    SegmentNotFound,
    quoted,
)
from segd.segments.ast import walk

# Matched with fullmatch: "$" would also accept a name ending in a newline ("vip\n").
SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class SavedSegment:
    """A named segment. `members` is set for static segments only (frozen at creation)."""

    name: str
    ast: dict
    dsl: str
    static: bool
    version: int
    created_ms: int
    updated_ms: int
    members: BitMap | None = None

    @property
    def references(self) -> set[str]:
        return segment_refs(self.ast)


# The events live segments publish (segd.live): a contact entered / exited a segment,
# named by the event's `segment` property.
SEGMENT_EVENT_TYPES = ("segment_entered", "segment_exited")


def segment_refs(ast: dict) -> set[str]:
    """Segments `ast` depends on: ``in segment "x"`` and conditions on the segment
    events of "x" (``entered segment "x" in last 7 days``), so a cycle through either
    is refused at save and a referenced segment cannot be deleted."""
    out = set()
    for n in walk(ast):
        if "segment" in n:
            out.add(n["segment"])
        elif n.get("event") in SEGMENT_EVENT_TYPES:
            for f in n.get("where", []):
                if f["field"] == "segment" and f["op"] in ("=", "in"):
                    v = f["value"]
                    out.update(v if isinstance(v, list) else [v])
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


class SegmentRegistry:
    """Name -> SavedSegment; reference cycles and dangling deletes are refused."""

    def __init__(self) -> None:
        self._segments: dict[str, SavedSegment] = {}

    def __len__(self) -> int:
        return len(self._segments)

    def get(self, name: str) -> SavedSegment:
        seg = self._segments.get(name)
        if seg is None:
            raise SegmentNotFound(name)
        return seg

    def with_members(self) -> list[SavedSegment]:
        """The static segments (members frozen), in no particular order."""
        return [s for s in self._segments.values() if s.members is not None]

    def list(self) -> list[SavedSegment]:
        return [self._segments[k] for k in sorted(self._segments)]

    def lookup(self, name: str) -> tuple[dict, BitMap | None]:
        """For the compiler: a segment's AST, and its members when static."""
        seg = self.get(name)
        return seg.ast, seg.members

    def check_name(self, name: str) -> None:
        if not isinstance(name, str) or not SEGMENT_NAME.fullmatch(name):
            raise InvalidInput.at(
                "name",
                f"segment names are 1-128 characters of letters, "
                f"digits and _ . : - (starting with a letter or digit), "
                f"got {quoted(name)}",
            )

    def dependents(self, name: str) -> builtins.list[str]:
        """Dynamic segments whose expanded query contains ``name`` (transitively)."""
        users: dict[str, set[str]] = {}
        for seg in self._segments.values():
            if not seg.static:
                for ref in seg.references:
                    users.setdefault(ref, set()).add(seg.name)
        out, stack, seen = [], [name], {name}
        while stack:
            for user in sorted(users.get(stack.pop(), ())):
                if user not in seen:
                    seen.add(user)
                    out.append(user)
                    stack.append(user)
        return out

    def check_references(self, name: str, ast: dict) -> None:
        """Every referenced segment exists and none leads back to `name`."""
        stack = [(ref, [name, ref]) for ref in sorted(segment_refs(ast))]
        while stack:
            ref, chain = stack.pop()
            if ref == name:
                raise InvalidQuery.at(
                    "query", "segment reference cycle: " + " -> ".join(chain)
                )
            target = self._segments.get(ref)
            if target is None:
                raise InvalidQuery.at(
                    "query",
                    f"segment {quoted(ref)} referenced by {quoted(chain[-2])} does "
                    "not exist",
                )
            if target.static:
                continue  # frozen members: its references no longer matter
            stack.extend((r, [*chain, r]) for r in target.references)

    # Each change is checked and built first (``new`` / ``updated`` / ``check_delete``,
    # nothing changes), then stored (``put`` / ``remove``): the engine logs the result in
    # between, and replaying the log calls only ``put`` / ``remove``.
    def create(
        self, name: str, ast: dict, dsl: str, static: bool, members: BitMap | None
    ) -> SavedSegment:
        return self.put(self.new(name, ast, dsl, static, members))

    def new(
        self, name: str, ast: dict, dsl: str, static: bool, members: BitMap | None
    ) -> SavedSegment:
        """The segment `create` would store (checked; nothing stored)."""
        self.check_name(name)
        if name in self._segments:
            raise AlreadyExists(f"segment {quoted(name)} already exists")
        self.check_references(name, ast)
        now = _now_ms()
        return SavedSegment(name, ast, dsl, static, 1, now, now, members)

    def put(self, seg: SavedSegment) -> SavedSegment:
        self._segments[seg.name] = seg
        return seg

    def update(
        self,
        name: str,
        ast: dict,
        dsl: str,
        version: int | None,
        members: BitMap | None,
    ) -> SavedSegment:
        return self.put(self.updated(name, ast, dsl, version, members))

    def updated(
        self,
        name: str,
        ast: dict,
        dsl: str,
        version: int | None,
        members: BitMap | None,
    ) -> SavedSegment:
        """The segment `update` would store (checked; nothing stored)."""
        old = self.get(name)
        if version is not None and version != old.version:
            raise Conflict(
                f"segment {name!r} is at version {old.version}, not {version}"
            )
        self.check_references(name, ast)
        seg = replace(
            old,
            ast=ast,
            dsl=dsl,
            version=old.version + 1,
            updated_ms=_now_ms(),
            members=members if old.static else None,
        )
        return seg

    def delete(self, name: str) -> None:
        self.check_delete(name)
        self.remove(name)

    def remove(self, name: str) -> None:
        self._segments.pop(name, None)

    def check_delete(self, name: str) -> None:
        """Raise unless `name` exists and no dynamic segment refers to it."""
        self.get(name)
        users = [
            s.name
            for s in self._segments.values()
            if name in s.references and s.name != name and not s.static
        ]
        if users:
            raise FailedPrecondition(
                f"segment {name!r} is referenced by "
                f"{', '.join(sorted(users))}; delete or change those first"
            )

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self) -> builtins.list[dict]:
        """Every segment as msgpack-able data; static members in roaring's portable
        serialisation."""
        return [
            {
                "name": seg.name,
                "ast": seg.ast,
                "dsl": seg.dsl,
                "static": seg.static,
                "version": seg.version,
                "created_ms": seg.created_ms,
                "updated_ms": seg.updated_ms,
                "members": None if seg.members is None else seg.members.serialize(),
            }
            for seg in self._segments.values()
        ]

    @classmethod
    def from_snapshot(cls, data: builtins.list[dict]) -> SegmentRegistry:
        registry = cls()
        for d in data:
            members = d["members"]
            registry._segments[d["name"]] = SavedSegment(
                name=d["name"],
                ast=d["ast"],
                dsl=d["dsl"],
                static=d["static"],
                version=d["version"],
                created_ms=d["created_ms"],
                updated_ms=d["updated_ms"],
                members=None if members is None else BitMap.deserialize(members),
            )
        return registry
