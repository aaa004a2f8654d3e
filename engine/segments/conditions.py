"""Plan nodes for profile conditions: attributes (incl. derived age) and aggregates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from pyroaring import BitMap

from segd import aggindex, aggregates
from segd.columns import CategoryColumn, NumericColumn, TagsColumn
from segd.errors import InvalidQuery
from segd.explain import AggregateEvidence, AttributeEvidence, Evidence
from segd.native import columns as kernels
from segd.native import pairscan
from segd.native.bitset import cids_to_bitmap
from segd.predicates import (
    INF,
    check_strings,
    dictionary_mask,
    in_intervals,
    integer_range,
    numeric_intervals,
)
from segd.segments.context import Context
from segd.segments.plan import Node
from segd.timeutil import DAY_S, full_years_cutoff_ms, period_bounds_s

ALL = (np.array([-INF]), np.array([INF]))
# Up to this many matching values, OR-ing per-value bitmaps beats a column scan.
MAX_BITMAPS_TO_UNION = 256
# A restricted category condition over several values keeps their bitmaps' union on
# the node (CategoryAttr._union) while the column's bitmaps do not change (False: the
# union is made on every run; for A/B runs).
KEEP_VALUE_UNIONS = True


def _scan(ctx: Context, cand: BitMap | None, fill) -> BitMap:
    """Run a kernel that fills a bitset, over `cand` ids when few, and make a BitMap."""
    words = ctx.words()
    fill(ctx.candidate_cids(cand), words)
    out = ctx.to_bitmap(words)
    return out if cand is None else out & cand


# A restricted run takes the value index when its answer has at most this many
# contacts per candidate: building the answer from the index's slice costs a few ns
# per contact, where a gather of a candidate's value from a column of the whole base
# is a cache miss (~30 ns at 1M contacts).
INDEX_PER_CANDIDATE = 4


def _indexed(
    ctx: Context, cand: BitMap | None, key: str, owner, source, lo, hi, fill
) -> BitMap | None:
    """The contacts whose value lies in [lo, hi] by the value index (segd.aggindex),
    restricted to `cand`; None when the scan should decide instead: few candidates
    and a larger answer (the per-candidate check is cheaper) or an answer too large
    for the index."""
    indexes, n = ctx.store.value_index, ctx.n
    if cand is not None and len(cand) * 8 <= n:
        counted = indexes.count(key, owner, n, source, lo, hi)
        if counted is None or counted > INDEX_PER_CANDIDATE * len(cand):
            return None
    ids = aggindex.sorted_ids(
        indexes, key, owner, n, source, lo, hi, n // aggindex.SORT_SHARE
    )
    if ids is not None:
        out = cids_to_bitmap(ids)
        merged = ctx.store.contacts.merged
        if merged:
            out -= merged
    else:
        words = ctx.words()
        if not aggindex.fill(indexes, key, owner, n, source, lo, hi, words, fill):
            return None
        out = ctx.to_bitmap(words)
    return out if cand is None else out & cand


def _answer_of(node: Node, idx: aggindex.SortedIndex, lo, hi) -> aggindex.Answer:
    """`node`'s slices of `idx` for its intervals [lo, hi], kept on the node for that
    (immutable) index: a plan reused from the engine's plan cache finds them once per
    index build, not per run."""
    memo = node.__dict__.get("_answer")
    if memo is not None and memo.sorted_index is idx:
        return memo
    got = aggindex.answer(idx, np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    node.__dict__["_answer"] = got
    return got


def _sampled_gather(ctx: Context, node: NumericAttr) -> float:
    """Contacts in `node`'s intervals estimated from the fixed sample by one gather
    kernel over its ~2k ids (no bitset of the base)."""
    sample = ctx.sample_cids()
    if len(sample) == 0:
        return 0.0
    col = node.column
    hits = pairscan.interval_pairs(
        col.values,
        np.asarray(node.lo, np.float64),
        np.asarray(node.hi, np.float64),
        sample,
        valid=col.valid,
    )
    return int(np.count_nonzero(hits)) / len(sample) * ctx.n


class AttrNode(Node):
    """A condition on one attribute column; explain shows the contact's value."""

    kind = "attr"
    column: NumericColumn | CategoryColumn | TagsColumn

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        return AttributeEvidence(self.column.name, self.column.value_of(cid))


class NumericAttr(AttrNode):
    """int / float / bool / timestamp attribute compared with a value (intervals)."""

    column: NumericColumn

    def __init__(self, ast, key, column: NumericColumn, where: str) -> None:
        super().__init__(ast, key)
        self.column = column
        op, value = ast["op"], ast.get("value")
        if op in ("is_null", "is_not_null"):
            self.lo, self.hi = ALL
        elif op in ("prefix", "contains", "contains_any", "contains_all"):
            raise InvalidQuery.at(
                where,
                f"operator {op!r} does not apply to {column.kind} "
                f"attribute {column.name!r}",
            )
        else:
            self.lo, self.hi = numeric_intervals(
                column.kind, op, value, f"{where}.value"
            )
        self.negate = op == "is_null"

    def fill(self, ctx: Context, cids, words) -> None:
        """Mark contacts (all, or the given sorted cids) whose value is not NULL and
        lies in the intervals."""
        col, n = self.column, ctx.n
        kernels.interval_scan(
            col.values[:n],
            self.lo,
            self.hi,
            words,
            valid=col.valid[:n],
            candidates=cids,
        )

    def index_count(self, ctx: Context) -> int | None:
        """Contacts in the intervals by an index some query built (else None)."""
        col = self.column
        return ctx.store.value_index.count(
            f"attr:{col.name}", col, ctx.n, None, self.lo, self.hi
        )

    def index_answer(self, ctx: Context) -> aggindex.Answer | None:
        """By the attribute's index when some query built it and no contact needs a
        re-check; NULL tests (``is_null``) are complements: no answer."""
        if self.negate:
            return None
        col = self.column
        idx = ctx.store.value_index.clean(f"attr:{col.name}", col, ctx.n, None)
        return None if idx is None else _answer_of(self, idx, self.lo, self.hi)

    def estimate(self, ctx: Context) -> float:
        got = self.index_answer(ctx)  # exact, and kept on the node
        if got is not None:
            return float(got.total)
        counted = self.index_count(ctx)  # else a sample of look-ups
        present = _sampled_gather(ctx, self) if counted is None else float(counted)
        return ctx.n - present if self.negate else present

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        col, n = self.column, ctx.n
        present = _indexed(
            ctx,
            cand,
            f"attr:{col.name}",
            col,
            lambda: (col.values[:n], col.valid[:n]),
            self.lo,
            self.hi,
            lambda c, w: self.fill(ctx, c, w),
        )
        if present is None:
            present = _scan(ctx, cand, lambda c, w: self.fill(ctx, c, w))
        if self.negate:
            return (ctx.universe if cand is None else cand) - present
        return present

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        value = self.column.value_of(cid)
        if self.column.kind == "timestamp" and value is not None:
            value = datetime.fromtimestamp(value / 1000, UTC)
        return AttributeEvidence(self.column.name, value)


class AgeAttr(NumericAttr):
    """``age`` derived from ``birth_date``: full years as of now, as a birth-date range."""

    def __init__(
        self, ast, key, birth: NumericColumn, now_s: float, where: str
    ) -> None:
        Node.__init__(self, ast, key)
        self.column = birth
        self.now_s = now_s
        op, value = ast["op"], ast.get("value")
        self.negate = op == "is_null"
        if op in ("is_null", "is_not_null"):
            self.lo, self.hi = ALL
            return
        if op in ("prefix", "contains", "contains_any", "contains_all"):
            raise InvalidQuery.at(where, f"operator {op!r} does not apply to age")
        lo, hi = [], []
        for a, b in integer_range(op, value, f"{where}.value"):
            # age >= a  <=>  birth < cutoff(a);  age <= b  <=>  birth >= cutoff(b + 1)
            upper = INF if a == -INF else full_years_cutoff_ms(now_s, int(a)) - 1
            lower = -INF if b == INF else full_years_cutoff_ms(now_s, int(b) + 1)
            if lower <= upper:
                lo.append(lower)
                hi.append(upper)
        self.lo, self.hi = (
            np.array(lo, dtype=np.float64),
            np.array(hi, dtype=np.float64),
        )

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        birth = self.column.value_of(cid)
        age = None
        if birth is not None:
            b = datetime.fromtimestamp(birth / 1000, UTC).date()
            t = datetime.fromtimestamp(self.now_s, UTC).date()
            age = t.year - b.year - ((t.month, t.day) < (b.month, b.day))
        return AttributeEvidence("age", age, derived_from="birth_date")


class CategoryAttr(AttrNode):
    """Text attribute: per-value bitmaps when the column has them, else a code scan."""

    column: CategoryColumn

    def cost(self, ctx: Context) -> float:
        return 0.2 if self.column.has_bitmaps() else 1.0  # a bitmap AND vs a lookup

    def __init__(self, ast, key, column: CategoryColumn, where: str) -> None:
        super().__init__(ast, key)
        self.column = column
        self.op = ast["op"]
        if self.op in ("<", "<=", ">", ">=", "between", "contains_any", "contains_all"):
            raise InvalidQuery.at(
                where,
                f"operator {self.op!r} does not apply to text "
                f"attribute {column.name!r}",
            )
        self.value = ast.get("value")
        self.where = where
        if self.op not in ("is_null", "is_not_null"):  # wrong types fail at compile
            check_strings(self.value, f"{where}.value")

    _mask_memo: tuple | None = None  # (dictionary, its size, mask): plans reused live

    def _mask(self) -> np.ndarray:
        op = self.op
        d = self.column.dictionary
        memo = self._mask_memo
        if memo is not None and memo[0] is d and memo[1] == len(d):
            return memo[2]
        if op in ("is_null", "is_not_null"):
            mask = np.ones(len(d), dtype=np.uint8)
        else:
            # != / not_in are "not null and not equal": the mask excludes NULL codes.
            mask = dictionary_mask(d, op, self.value, f"{self.where}.value")
        self._mask_memo = (d, len(d), mask)
        return mask

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        col, n = self.column, ctx.n
        mask = self._mask()
        hits = np.flatnonzero(mask)
        if (
            self.op not in ("is_null", "is_not_null")
            and col.has_bitmaps()
            and (len(hits) <= MAX_BITMAPS_TO_UNION)
        ):
            bms = col.bitmaps(n)
            chosen = [bms[k] for k in hits.tolist()]
            if cand is not None and len(chosen) == 1:
                return chosen[0] & cand  # no copy of a large value's bitmap
            if cand is not None and len(chosen) > 1 and KEEP_VALUE_UNIONS:
                # The union of the values' bitmaps, kept on the node while they do
                # not change (the reference's three cities at 10M: a union of ~3.7M
                # contacts per run); restricted runs only, so the kept union is never
                # handed out (an unrestricted caller may change its answer in place).
                key = (id(bms), col.bitmaps_version, n, hits.tobytes())
                kept = self.__dict__.get("_union")
                if kept is None or kept[0] != key:
                    kept = self.__dict__["_union"] = (key, BitMap.union(*chosen))
                return kept[1] & cand
            got = (
                BitMap.union(*chosen)
                if len(chosen) > 1
                else (chosen[0].copy() if chosen else BitMap())
            )
            return got if cand is None else got & cand

        def fill(cids, words):
            kernels.code_mask_scan(col.codes[:n], mask, words, candidates=cids)

        present = _scan(ctx, cand, fill)
        if self.op == "is_null":
            return (ctx.universe if cand is None else cand) - present
        return present

    def estimate(self, ctx: Context) -> float:
        col = self.column
        if self.op in ("=", "in") and col.has_bitmaps():
            bms = col.bitmaps(ctx.n)
            return float(
                sum(len(bms[k]) for k in np.flatnonzero(self._mask()).tolist())
            )
        return ctx.n / 2


class TagsAttr(AttrNode):
    """Tag-set attribute: contains_any / contains_all / = (contains) over per-tag bitmaps."""

    column: TagsColumn

    def cost(self, ctx: Context) -> float:
        return 0.2

    def __init__(self, ast, key, column: TagsColumn, where: str) -> None:
        super().__init__(ast, key)
        self.column = column
        self.op = ast["op"]
        value = ast.get("value")
        if self.op not in (
            "contains_any",
            "contains_all",
            "=",
            "in",
            "contains",
            "is_null",
            "is_not_null",
        ):
            raise InvalidQuery.at(
                where,
                f"operator {self.op!r} does not apply to tag "
                f"attribute {column.name!r} (use contains_any, "
                "contains_all, is_null)",
            )
        self.tags = (
            value if isinstance(value, list) else ([] if value is None else [value])
        )
        for i, t in enumerate(self.tags):
            if not isinstance(t, str):
                raise InvalidQuery.at(
                    f"{where}.value[{i}]", f"expected a tag, got {t!r}"
                )

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        col = self.column
        if self.op in ("is_null", "is_not_null"):
            valid = np.flatnonzero(col.valid[: ctx.n]).astype(np.uint32)
            present = BitMap(valid)
            base = ctx.universe if cand is None else cand
            return base - present if self.op == "is_null" else base & present
        bms = []
        for t in self.tags:
            code = col.dictionary.lookup_one(t)
            bms.append(
                col.tag_bitmaps[code] if 0 <= code < len(col.tag_bitmaps) else BitMap()
            )
        if self.op == "contains_all":
            got = BitMap.intersection(*bms) if len(bms) > 1 else bms[0].copy()
        else:
            got = BitMap.union(*bms) if len(bms) > 1 else bms[0].copy()
        return got if cand is None else got & cand


class AggregateNode(Node):
    """orders_count, revenue, avg_order_value and days_since_* (all time or a period)."""

    kind = "aggregate"

    def __init__(self, ast, key, now_s: float, where: str) -> None:
        super().__init__(ast, key)
        self.name = ast["aggregate"]
        self.op = ast["op"]
        self.now_s = now_s
        self.where = where
        if self.op in ("prefix", "contains", "contains_any", "contains_all"):
            raise InvalidQuery.at(
                where, f"operator {self.op!r} does not apply to aggregate {self.name!r}"
            )
        if self.op in ("is_null", "is_not_null"):
            self.lo, self.hi = ALL
        else:
            self.lo, self.hi = numeric_intervals(
                "float", self.op, ast.get("value"), f"{where}.value"
            )
        self.period = ast.get("period")

    # Value of each contact with no qualifying events: counts and sums are 0, the rest NULL.
    def _default(self):
        return 0.0 if self.name in ("orders_count", "revenue") else None

    def _days_to_ts_intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """days_since in [a, b]  <=>  last_ts in [floor(now - (b+1)d) + 1, floor(now - a d)]
        (kept on the node for its `now_s`: a cached plan asks it on every run)."""
        memo = self.__dict__.get("_days_memo")
        if memo is not None and memo[0] == self.now_s:
            return memo[1]
        got = self._days_intervals_now()
        self.__dict__["_days_memo"] = (self.now_s, got)
        return got

    def _days_intervals_now(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = [], []
        if self.op in ("is_null", "is_not_null"):
            return np.array([1.0]), np.array([INF])
        for a, b in integer_range(
            self.op, self.ast.get("value"), f"{self.where}.value"
        ):
            upper = INF if a == -INF else np.floor(self.now_s - a * DAY_S)
            lower = (
                1.0
                if b == INF
                else max(1.0, np.floor(self.now_s - (b + 1) * DAY_S) + 1)
            )
            if lower <= upper:
                lo.append(lower)
                hi.append(upper)
        return np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)

    def fill(self, ctx: Context, cids, words) -> None:
        """Mark contacts whose all-time aggregate satisfies the condition (not NULL)."""
        agg, n = ctx.store.aggregates, ctx.n
        if self.name.startswith("days_since_"):
            last = {
                "days_since_last_order": agg.last_order_s,
                "days_since_last_visit": agg.last_visit_s,
                "days_since_last_email_open": agg.last_email_open_s,
            }[self.name][:n]
            lo, hi = self._days_to_ts_intervals()
            kernels.interval_scan(last, lo, hi, words, candidates=cids)
        elif self.name == "avg_order_value":
            kernels.ratio_interval_scan(
                agg.revenue[:n],
                agg.orders_count[:n],
                self.lo,
                self.hi,
                words,
                candidates=cids,
            )
        else:
            arr = (
                agg.orders_count[:n] if self.name == "orders_count" else agg.revenue[:n]
            )
            kernels.interval_scan(arr, self.lo, self.hi, words, candidates=cids)

    def estimate(self, ctx: Context) -> float:
        """All time: the length of the value index's slices (exact but for contacts
        written since its build; the index is built here if no query has yet)."""
        if self.period:
            return ctx.n / 2
        got = self.index_answer(ctx)  # exact, and kept on the node
        if got is not None:
            return float(got.total)
        counted = self.index_count(ctx)
        present = float(ctx.n if counted is None else counted)
        return ctx.n - present if self.op == "is_null" else present

    def index_count(self, ctx: Context) -> int | None:
        """All time: contacts in the intervals by the value index of the rollup
        (built here if no query has yet); None with a period."""
        if self.period:
            return None
        key, source, lo, hi = self._index_args(ctx)
        return ctx.store.value_index.count(
            key, ctx.store.aggregates, ctx.n, source, lo, hi
        )

    def index_answer(self, ctx: Context) -> aggindex.Answer | None:
        """All time, by the value index of the rollup (built here if no query has yet)
        when no contact needs a re-check; None with a period or for ``is_null``."""
        if self.period or self.op == "is_null":
            return None
        key, source, lo, hi = self._index_args(ctx)
        idx = ctx.store.value_index.clean(key, ctx.store.aggregates, ctx.n, source)
        return None if idx is None else _answer_of(self, idx, lo, hi)

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        if self.period:
            return self._run_period(ctx, cand)
        got = self._run_indexed(ctx, cand)
        if got is None:
            got = _scan(ctx, cand, lambda c, w: self.fill(ctx, c, w))
        if self.op == "is_null":
            return (ctx.universe if cand is None else cand) - got
        return got

    def _index_args(self, ctx: Context) -> tuple[str, Callable, np.ndarray, np.ndarray]:
        """(index key, source of its values, lo, hi) of the all-time condition."""
        agg, n = ctx.store.aggregates, ctx.n
        lo, hi = self.lo, self.hi
        if self.name.startswith("days_since_"):
            array = {
                "days_since_last_order": "last_order_s",
                "days_since_last_visit": "last_visit_s",
                "days_since_last_email_open": "last_email_open_s",
            }[self.name]
            lo, hi = self._days_to_ts_intervals()

            def source():
                return getattr(agg, array)[:n], None

        elif self.name == "avg_order_value":
            array = "avg_order_value"

            def source():
                count = agg.orders_count[:n]
                ratio = np.full(n, np.nan)
                np.divide(agg.revenue[:n], count, out=ratio, where=count > 0)
                return ratio, None

        else:
            array = self.name  # orders_count, revenue

            def source():
                return getattr(agg, array)[:n], None

        return f"agg:{array}", source, lo, hi

    def _run_indexed(self, ctx: Context, cand: BitMap | None) -> BitMap | None:
        """The all-time condition by the value index of its rollup (segd.aggindex)."""
        key, source, lo, hi = self._index_args(ctx)
        return _indexed(
            ctx,
            cand,
            key,
            ctx.store.aggregates,
            source,
            lo,
            hi,
            lambda c, w: self.fill(ctx, c, w),
        )

    def _values_in_period(self, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
        """(cids, values) of contacts with qualifying events in the period (nogil
        kernels in segd.aggregates; no sort of the window's rows)."""
        store = ctx.store
        lo_s, hi_s = period_bounds_s(self.period, self.now_s, f"{self.where}.period")
        if self.name in ("orders_count", "revenue", "avg_order_value"):
            log = store.logs.get("order")
            if log is None:
                return np.zeros(0, np.uint32), np.zeros(0)
            cids, revenue, orders = aggregates.orders_in_period(
                log, store.aggregates, lo_s, hi_s, ctx.n
            )
            if self.name == "orders_count":
                return cids, orders.astype(np.float64)
            if self.name == "revenue":
                return cids, revenue
            return cids, revenue / orders
        if self.name == "days_since_last_visit":
            visits = store.aggregates.visit_events
            logs = [log for etype, log in store.logs.items() if etype in visits]
        else:
            etype = (
                "email_open" if self.name == "days_since_last_email_open" else "order"
            )
            logs = [store.logs[etype]] if etype in store.logs else []
        cids, last = aggregates.last_seen_in_period(logs, lo_s, hi_s, ctx.n)
        days = np.floor((self.now_s - last.astype(np.float64)) / DAY_S)
        return cids, days

    def _run_period(self, ctx: Context, cand: BitMap | None) -> BitMap:
        cids, values = self._values_in_period(ctx)
        if self.op in ("is_null", "is_not_null"):
            ok = np.ones(len(cids), dtype=bool)
        else:
            ok = in_intervals(values, self.lo, self.hi)
        base = ctx.universe if cand is None else cand
        default = self._default()
        if self.op in ("is_null", "is_not_null"):
            # Counts and sums are never NULL (0 without events); the rest is NULL then.
            present = base.copy() if default is not None else base & BitMap(cids)
            return base - present if self.op == "is_null" else present
        if (
            default is not None
            and self.op != "is_not_null"
            and in_intervals(np.array([default]), self.lo, self.hi)[0]
        ):
            return base - BitMap(cids[~ok].astype(np.uint32))
        got = BitMap(cids[ok].astype(np.uint32))
        return got if cand is None else got & cand

    def value_of(self, ctx: Context, cid: int):
        if self.period:
            cids, values = self._values_in_period(ctx)
            hit = np.flatnonzero(cids == cid)
            return float(values[hit[0]]) if len(hit) else self._default()
        agg = ctx.store.aggregates
        if self.name == "orders_count":
            return int(agg.orders_count[cid])
        if self.name == "revenue":
            return float(agg.revenue[cid])
        if self.name == "avg_order_value":
            k = int(agg.orders_count[cid])
            return float(agg.revenue[cid]) / k if k else None
        last = {
            "days_since_last_order": agg.last_order_s,
            "days_since_last_visit": agg.last_visit_s,
            "days_since_last_email_open": agg.last_email_open_s,
        }[self.name][cid]
        return None if last == 0 else int((self.now_s - float(last)) // DAY_S)

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        return AggregateEvidence(self.name, self.value_of(ctx, cid))
