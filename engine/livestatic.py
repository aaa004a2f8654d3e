"""Per dynamic segment, which contacts pass its time-independent conjuncts ("static pass").

Most operands of a live segment's top AND read contact attributes only (``gender = "m"``,
``city = "Kazan"``, ``email_subscribed = true``, ``rating >= 2``): their value for a
contact changes only when that contact's attributes do (an upsert or a merge), never
with the clock or an event. A write or a time step re-decides a segment for touched or
scheduled contacts; those that fail one of these operands are not members whatever the
events say, and most touched contacts fail one. Keeping the AND of these operands per
contact lets the live path drop them with one lookup before any event kernel.

The bits of every segment are one matrix of 64-bit words, word-major (bit ``slot % 64``
of word row ``slot // 64``, one column per contact): a flush gathers the touched
contacts' columns once for all segments (``columns``); a time step reads one segment's
word row at its candidates (ascending, a contiguous array).

A slot is computed in full (its operands run as bitmaps over the base) the first time a segment
needs it, and again when its static operands change (the segment was redefined). Rows
of contacts whose attributes changed since (``touched``) and of contacts new to the
engine are recomputed when the segment next asks. When a contact column is replaced or
the store changes, everything is recomputed. Nothing here is durable: it is derived
from the data and rebuilt after a restart.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np
from pyroaring import BitMap

from segd.segments.pairs import evaluate_conjunction

# Plan nodes whose value reads only the contact's attributes (no clock, no events, no
# other segment): the operands a static pass holds (alone or under NOT / AND / OR).
STATIC_KINDS = frozenset({"CategoryAttr", "NumericAttr", "TagsAttr"})
_UNSET = object()


def is_static(node: Any) -> bool:
    """Whether `node` depends on contact attributes only."""
    kind = type(node).__name__
    if kind == "NotNode":
        return is_static(node.inner)
    if kind in ("AndNode", "OrNode"):
        return all(is_static(p) for p in node.parts)
    return kind in STATIC_KINDS


def split(plan: Any) -> tuple[list[Any], list[Any]] | None:
    """(static operands, the other operands) of the plan's top AND (through the
    references that wrap it); None when it has no static operand. Noted on the plan."""
    hit = getattr(plan, "_static_split", _UNSET)
    if hit is not _UNSET:
        return cast("tuple[list[Any], list[Any]] | None", hit)
    node = plan
    while type(node).__name__ == "RefNode":
        node = node.inner
    got = None
    if type(node).__name__ == "AndNode":
        static = [p for p in node.parts if is_static(p)]
        if static:
            got = (static, [p for p in node.parts if not is_static(p)])
    plan._static_split = got
    return got


class _Slot(NamedTuple):
    bit: int  # bit position in a contact's row
    keys: tuple[str, ...]  # canonical keys of the static operands it holds


class StaticPass:
    """The static-pass bits of every live segment over every contact."""

    def __init__(self) -> None:
        self._shape: tuple | None = None  # the store and contact columns they read
        self._bits = np.zeros((1, 0), np.uint64)  # [word, contact]
        self._slots: dict[str, _Slot] = {}
        # per segment: contacts whose attributes changed since its bits were set
        self._dirty: dict[str, BitMap] = {}
        self._done: dict[str, int] = {}  # per segment: contacts covered
        self.version = 0  # bumped whenever bits change (gathered rows go stale)
        self._touches = 0  # attribute changes seen (the operand memo's state)
        # operand key -> whole-base bitmap, shared by the slots built at one state
        self._memo: tuple[tuple, dict[str, BitMap]] = ((), {})

    def touched(self, cids: np.ndarray) -> None:
        """Contacts' attributes changed (an upsert or a merge)."""
        self._touches += 1
        if not self._slots:
            return
        changed = BitMap(np.asarray(cids, np.uint32))
        for dirty in self._dirty.values():
            dirty |= changed

    def forget(self, name: str) -> None:
        self._slots.pop(name, None)
        self._dirty.pop(name, None)
        self._done.pop(name, None)

    def slot(self, name: str, static: list[Any], store: Any) -> int:
        """Segment `name`'s bit position, its bits brought up to date for every contact
        of `store` with the operands `static` (from its current plan)."""
        self._sync(store)
        n = store.n_contacts
        keys = tuple(p.key for p in static)
        slot = self._slots.get(name)
        if slot is None or slot.keys != keys:
            index = slot.bit if slot is not None else self._free_index()
            slot = self._slots[name] = _Slot(index, keys)
            self._set_all(index, static, store)
            self._dirty[name] = BitMap()
            self._done[name] = n
            return index
        todo = self._dirty[name]
        done = self._done[name]
        if not todo and done == n:
            return slot.bit
        rows = np.asarray(todo.to_array(), np.uint32)
        rows = rows[rows < done]
        if done < n:
            rows = np.r_[rows, np.arange(done, n, dtype=np.uint32)]
        self._set(slot.bit, rows, static, store)
        self._dirty[name] = BitMap()
        self._done[name] = n
        return slot.bit

    def bit(self, name: str) -> int | None:
        """Segment `name`'s bit position (None: it has none yet)."""
        slot = self._slots.get(name)
        return None if slot is None else slot.bit

    def columns(self, cids: np.ndarray) -> np.ndarray:
        """The words of `cids`, ``[word, i]``: one gather for every segment of a
        flush (``passing`` reads one segment's bit from them)."""
        return self._bits[:, np.asarray(cids, np.intp)]

    @staticmethod
    def passing(columns: np.ndarray, index: int) -> np.ndarray:
        """Whether each contact of `columns` (from ``columns``) passes slot `index`."""
        word = columns[index >> 6] >> np.uint64(index & 63)
        return (word & np.uint64(1)).astype(bool)

    def passes(self, name: str, static: list[Any], store: Any, cids: Any) -> np.ndarray:
        """Whether each of `cids` passes segment `name`'s static operands `static`
        (ascending cids read the word row in order: the cheap way)."""
        index = self.slot(name, static, store)
        word = self._bits[index >> 6].take(np.asarray(cids, np.intp))
        return self.passing(word[None, :], index & 63)

    # -- internals ----------------------------------------------------------------------
    def prime(self, static: list[Any], store: Any) -> None:
        """Run the operands `static` over the whole base into the memo that
        ``_set_all`` reads, under the engine's *read* lock: a segment save sets its
        bits under the write lock, and the operands' scans (age, city, ...) were most
        of that time, with every reader waiting. The memo is keyed by the data's
        state; a write in between makes ``_set_all`` run them again itself."""
        from segd.segments.context import Context

        state = (self._shape_of(store), store.n_contacts, self._touches)
        memo_state, memo = self._memo
        if memo_state != state:
            memo = {}
        ctx = Context(store, 0.0, None)
        for part in static:
            if part.key not in memo:
                memo[part.key] = part.run(ctx, None)
        self._memo = (state, memo)

    @staticmethod
    def _shape_of(store: Any) -> tuple:
        """The store and contact columns the bits were computed from."""
        return (
            id(store),
            tuple((k, id(c)) for k, c in store.contacts.columns.items()),
        )

    def _sync(self, store: Any) -> None:
        shape = self._shape_of(store)
        if shape != self._shape:  # another store or a replaced column: start over
            self._shape = shape
            self._slots.clear()
            self._dirty.clear()
            self._done.clear()
            self._bits = np.zeros((1, 0), np.uint64)
            self.version += 1
        n = store.n_contacts
        words, have = self._bits.shape
        if have < n:  # new contacts: zeros until their segments ask
            grown = np.zeros((words, max(n, have + have // 4)), np.uint64)
            grown[:, :have] = self._bits
            self._bits = grown

    def _free_index(self) -> int:
        used = {s.bit for s in self._slots.values()}
        index = next(i for i in range(len(used) + 1) if i not in used)
        words, have = self._bits.shape
        if index >= 64 * words:
            wider = np.zeros((words + 1, have), np.uint64)
            wider[:words] = self._bits
            self._bits = wider
        return index

    def _set_all(self, index: int, static: list[Any], store: Any) -> None:
        """Bit `index` of every contact: the operands run as bitmaps over the base
        (as ``Engine.segment`` runs them; per-pair gathers of a million contacts
        cost ten times more). Merged contacts may keep their bit: the rest of the
        segment never matches them."""
        from segd.segments.context import Context

        n = store.n_contacts
        ctx = Context(store, 0.0, None)
        state = (self._shape, n, self._touches)
        if self._memo[0] != state:
            self._memo = (state, {})
        memo = self._memo[1]
        passing: BitMap | None = None
        for part in static:
            got = memo.get(part.key)
            if got is None:  # whole-base: segments built together share operands
                got = memo[part.key] = part.run(ctx, None)
            passing = got.copy() if passing is None else got & passing
            if not passing:
                break
        ok = np.zeros(n, np.uint64)
        if passing:
            ok[np.asarray(passing.to_array(), np.intp)] = 1
        word, bit = index >> 6, np.uint64(index & 63)
        column = self._bits[word, :n]
        column &= ~(np.uint64(1) << bit)
        column |= ok << bit
        self.version += 1

    def _set(self, index: int, cids: np.ndarray, static: list[Any], store: Any) -> None:
        if not len(cids):
            return
        ok = evaluate_conjunction(static, store, cids, np.zeros(len(cids)))
        word, bit = index >> 6, np.uint64(index & 63)
        column = self._bits[word, cids]
        column &= ~(np.uint64(1) << bit)
        column |= ok.astype(np.uint64) << bit
        self._bits[word, cids] = column
        self.version += 1
