"""Plan nodes for RFM conditions: ``rfm.r/f/m/code/segment`` and ``rfm.entered``.

Both read the engine's ``RfmState`` as it was when the query was compiled: the scores and
segments of the latest ``rfm_compute`` (as of its ``as_of``, not the query's ``now``) and
the transition history. A contact without a row in that computation (no order before its
``as_of``, or created since) has NULL scores, code and segment.
"""

from __future__ import annotations

import difflib

import numpy as np
from pyroaring import BitMap

from segd.errors import InvalidQuery
from segd.explain import AttributeEvidence, Evidence
from segd.predicates import in_intervals, numeric_intervals
from segd.rfm import (
    RfmResult,
    RfmState,
    code_text,
    parse_code,
    values_matching,
)
from segd.segments.context import Context
from segd.segments.plan import Node
from segd.timeutil import period_bounds_s


def rfm_node(ast: dict, key: str, path: str, state: RfmState) -> Node:
    """The plan node of one RFM condition (the compiler's ``rfm`` hook)."""
    if ast["rfm"] == "entered":
        return RfmEnteredNode(ast, key, path, state)
    return RfmValueNode(ast, key, path, state.require_latest())


class RfmValueNode(Node):
    """``rfm.<field> op value``: a union of the computation's per-value bitmaps."""

    kind = "rfm"

    def __init__(self, ast: dict, key: str, path: str, result: RfmResult) -> None:
        super().__init__(ast, key)
        self.result = result
        self.field = ast["rfm"]
        self.op = ast["op"]
        self._members: BitMap | None = None
        self._keys = self._matching_keys(ast, path)

    def _matching_keys(self, ast: dict, path: str) -> list[int] | None:
        """Bitmap keys whose value satisfies the condition (None: is_null)."""
        op, value, res = self.op, ast.get("value"), self.result
        if op in ("is_null", "is_not_null"):
            return None if op == "is_null" else self.result.present_keys(self.field)
        where = f"{path}.value"
        if self.field in ("r", "f", "m"):
            if op in ("prefix", "contains"):
                raise InvalidQuery.at(
                    path,
                    f"operator {op!r} does not apply to rfm.{self.field} (a score)",
                )
            lo, hi = numeric_intervals("int", op, value, where)
            scores = np.arange(1, res.scale + 1, dtype=np.float64)
            return [int(s) for s in scores[in_intervals(scores, lo, hi)]]
        if self.field == "code":
            self._check_codes(op, value, where)
            # The present codes leave out 0 (no code), so every key has a text.
            present = {t: k for k in res.present_keys("code") if (t := code_text(k))}
            return [present[t] for t in values_matching(present, op, value)]
        names = res.segments
        self._check_names(op, value, where, names)
        return [names.index(t) for t in values_matching(names, op, value)]

    @staticmethod
    def _check_codes(op: str, value, where: str) -> None:
        if op not in ("=", "!=", "in", "not_in"):
            return
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if parse_code(v) is None:
                at = f"{where}[{i}]" if isinstance(value, list) else where
                raise InvalidQuery.at(
                    at, f"{v!r} is not an RFM code (they look like R4F5M3)"
                )

    @staticmethod
    def _check_names(op: str, value, where: str, names: list[str]) -> None:
        if op not in ("=", "!=", "in", "not_in"):
            return
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if v not in names:
                close = difflib.get_close_matches(v, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                at = f"{where}[{i}]" if isinstance(value, list) else where
                raise InvalidQuery.at(
                    at,
                    f"unknown RFM segment {v!r}{hint}; segments: {', '.join(names)}",
                )

    def members(self, ctx: Context) -> BitMap:
        if self._members is None:
            res = self.result
            if self._keys is None:  # is_null: everyone without a value
                present = res.members_of(self.field, res.present_keys(self.field))
                self._members = ctx.universe - present
            else:
                self._members = res.members_of(self.field, self._keys)
        return self._members

    def estimate(self, ctx: Context) -> float:
        return float(len(self.members(ctx)))

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        got = self.members(ctx)
        return got.copy() if cand is None else got & cand

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        """The contact's score, code or named segment in the current computation."""
        res = self.result
        value: str | int | None = None
        if cid < res.n:
            if self.field == "segment":
                s = int(res.segment[cid])
                value = None if s == 255 else res.segments[s]
            elif self.field == "code":
                value = code_text(int(res.code[cid]))
            else:
                value = int(getattr(res, self.field)[cid]) or None
        return AttributeEvidence(f"rfm.{self.field}", value)


class RfmEnteredNode(Node):
    """``rfm.entered "X" [from "Y"] [first time | again] [period]`` over the history."""

    kind = "rfm"

    def __init__(self, ast: dict, key: str, path: str, state: RfmState) -> None:
        super().__init__(ast, key)
        self.state = state
        self.path = path
        try:  # unknown names fail at compile time, with a suggestion
            state.transitions_mask(0, 0, ast["value"], ast.get("from"))
        except Exception as exc:  # InvalidInput from the state: re-point at the AST
            raise InvalidQuery.at(
                f"{path}.value", str(exc).split(": ", 1)[-1]
            ) from None
        self._members: BitMap | None = None

    def members(self, ctx: Context) -> BitMap:
        if self._members is None:
            ast, st = self.ast, self.state
            rows = st.transitions_mask(None, None, ast["value"], ast.get("from"))
            if "period" in ast:
                # A computation as of T saw the data before T, so its transitions belong
                # to the period that ends at T: (from, to], and `in last 7 days` asked
                # right at T includes them.
                lo, hi = period_bounds_s(
                    ast["period"], ctx.now_s, f"{self.path}.period"
                )
                at = st.transitions.at
                rows &= (at > lo) & (at <= hi)
            entry = ast.get("entry")
            if entry is not None:
                entries = np.flatnonzero(
                    st.transitions_mask(None, None, ast["value"], None)
                )
                _, first = np.unique(st.transitions.cid[entries], return_index=True)
                is_first = np.zeros(len(rows), dtype=bool)
                is_first[entries[first]] = True
                rows &= is_first if entry == "first" else ~is_first
            cids = np.unique(st.transitions.cid[rows])
            self._members = BitMap(cids.astype(np.uint32))
        return self._members

    def estimate(self, ctx: Context) -> float:
        return float(len(self.members(ctx)))

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        got = self.members(ctx)
        return got.copy() if cand is None else got & cand
