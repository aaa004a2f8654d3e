"""The event condition: type + filters + period + count / sum range + "then no".

Compilation turns each filter into one of two shapes the kernel understands:

- a **code filter**: a dimension column of the log (item, phrase, campaign, ...) and a uint8
  mask over its codes. Catalog fields (category, brand, price, colours ...) become a mask
  over item codes; text properties a mask over their dictionary;
- a **row mask** for the numeric `amount`, computed with numpy over the window.

At run time the period becomes a row range of the log; if one code filter is selective, its
postings inside that range are gathered and only those rows are scanned. The kernel counts
per contact and sorts contacts into "qualifies" / "has events but does not qualify"; contacts
without events qualify when the count range admits zero (did not happen).
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime

import numpy as np
from pyroaring import BitMap

from segd.errors import InvalidQuery
from segd.explain import EventEvidence, Evidence
from segd.native import NO_CODE, columns, contactindex, eventscan
from segd.native.bitset import cids_to_bitmap, distinct_to_bitmap
from segd.native.idmap import IdMap
from segd.predicates import dictionary_mask, in_intervals, numeric_intervals
from segd.segments.context import Context, thread_scratch, thread_seen_bits
from segd.segments.plan import Node
from segd.store import Store
from segd.timeutil import duration_s, period_bounds_s

U64_MAX = 2**64 - 1
# Gather postings only when they cover less than this share of the window's rows: beyond it
# a sequential scan of the window is faster than random row access.
GATHER_SHARE = 0.5
# Relative costs per row for the access-path choice in EventFilters.bind, in units of
# one row of a sequential window scan (measured at 1M contacts: a gathered posting costs
# about 1.5 scanned rows, a contact's row about 2, seeking to a contact about 4).
GATHER_COST = 1.5
CONTACT_ROW_COST = 2.0
CONTACT_SEEK_COST = 4.0
CONTACT_SAMPLE = 256
# EventNode._run lists the matching contacts of an "at least once" condition (no n-bit
# bitsets) when it visits at most 1/SORT_RATIO rows per contact, as count_matches sorts.
SORT_RATIO = 4
MAX_GATHER_CODES = 50_000
# EventFilters.bind(fused=True)'s source when the candidates' own rows are cheapest.
CONTACTS = object()
MAX_SHOWN_TIMES = 10
# Event type -> the dimension whose distinct values its `count` counts (a row without
# one counts on its own): an order has several lines, one per item.
DISTINCT_COUNT_DIMS = {"order": "order_id"}
# The first leaf's contacts (EventNode._by_value_contacts) de-duplicated by setting bits
# in a per-thread bitset turned straight into a BitMap (bitset.distinct_to_bitmap);
# False: radix-sorted (eventscan.distinct_contacts) then cids_to_bitmap. A switch for
# in-process A/B measurements; both give the same contacts.
DISTINCT_BY_BITSET = True


class EventFilters:
    """The compiled `where` list of one event type (see module docstring)."""

    def __init__(self, store: Store, etype: str, where: list[dict], path: str) -> None:
        self.etype = etype
        # (dimension, mask over its codes, the codes the mask admits)
        self.code_filters: list[tuple[str, np.ndarray, np.ndarray]] = []
        # aligned with code_filters: (catalog field, its admitted value codes) for an
        # item filter on a category column (gathered from the log's attribute
        # postings when it keeps them, ``EventLog.attribute_rows``), else None
        self.value_filters: list[tuple[str, np.ndarray] | None] = []
        self.catalog = store.catalog
        self.amount_intervals: list[tuple[np.ndarray, np.ndarray]] = []
        fields = store.event_fields()
        for i, f in enumerate(where):
            fpath = f"{path}.where[{i}]"
            field, op, value = f["field"], f["op"], f.get("value")
            if store.catalog.has_field(field):
                mask, codes = store.catalog.item_filter(
                    field, op, value, f"{fpath}.value"
                )
                self.code_filters.append(("item", mask, codes))
                values = store.catalog.value_codes(field, op, value, f"{fpath}.value")
                self.value_filters.append(None if values is None else (field, values))
            elif field == "amount":
                self.amount_intervals.append(
                    numeric_intervals("float", op, value, f"{fpath}.value")
                )
            elif field in store.dim_maps or field == "segment":
                if op in ("<", "<=", ">", ">=", "between"):
                    raise InvalidQuery.at(
                        f"{fpath}.op",
                        f"operator {op!r} does not apply to text property {field!r}",
                    )
                # `segment` (of segment_entered / _exited) exists once a live
                # segment changed: before that an empty dictionary matches nothing.
                mask = dictionary_mask(
                    store.dim_maps.get(field) or IdMap(), op, value, f"{fpath}.value"
                )
                self._add(field, mask)
            else:
                raise InvalidQuery.at(
                    f"{fpath}.field",
                    f"unknown event field {field!r}"
                    + store.catalog.suggest(field, sorted(fields)),
                )

    def _add(self, dim: str, mask: np.ndarray) -> None:
        codes = np.flatnonzero(mask).astype(np.uint32)
        self.code_filters.append((dim, mask, codes))
        self.value_filters.append(None)

    def _by_values(self, log, k: int) -> tuple[str, np.ndarray] | None:
        """Filter k's (field, value codes) when `log` keeps postings per that field's
        values (a few lists to gather instead of one per admitted item)."""
        vf = self.value_filters[k]
        if vf is None or not log.has_attribute_postings(vf[0]):
            return None
        return vf

    def _postings_estimate(
        self, log, dim: str, codes: np.ndarray, r0: int, r1: int, k: int = -1
    ):
        """Rows of `codes` expected in [r0, r1): their total postings times the window's
        share of the log (vectorised; exact counts would cost a binary search per code)."""
        vf = self._by_values(log, k) if k >= 0 else None
        if vf is not None and log.n:
            total = log.attribute_total(self.catalog, vf[0], vf[1])
            if total is not None:
                return total * (r1 - r0) / log.n
        postings = log.postings.get(dim)
        if postings is None or len(codes) > MAX_GATHER_CODES or log.n == 0:
            return None
        return _postings_total(log, dim, codes) * (r1 - r0) / log.n

    def bind(
        self,
        log,
        r0: int,
        r1: int,
        cand: BitMap | None,
        n_contacts: int,
        fused: bool = False,
    ):
        """Kernel arguments for a window of `log`: (source_rows, code_filters, row_mask),
        or None when no event can match (a filtered dimension the type never carries).
        With `fused`, the *contacts* path returns `CONTACTS` as its source instead of
        the candidates' rows: the caller counts per candidate in one kernel
        (``contactindex.count_filtered_of_contacts``) with every code filter.

        The rows to visit are picked by estimated cost, cheapest first:
        - *contacts*: only the candidates' own rows, via the contact-major index — when
          an AND already narrowed the candidates (cost ~ their share of the window);
        - *postings*: the rows of the most selective code filter inside the window;
        - *scan*: every row of the window.
        """
        filters = []
        for dim, mask, codes in self.code_filters:
            col = log.dim(dim)
            if col is None or not len(codes):
                return None
            filters.append((dim, col, mask, codes))
        row_mask = None
        if self.amount_intervals:
            if log.amount is None:
                return None
            window = log.amount[r0:r1]
            ok = np.ones(r1 - r0, dtype=bool)
            for lo, hi in self.amount_intervals:
                ok &= in_intervals(window, lo, hi)
            row_mask = ok.astype(np.uint8)
        window_rows = r1 - r0
        best = None  # (estimated rows, filter index)
        for k, (dim, _, _, codes) in enumerate(filters):
            est = self._postings_estimate(log, dim, codes, r0, r1, k)
            if est is None:
                continue
            vf = self._by_values(log, k)
            # a binary search per list gathered
            est += (len(codes) if vf is None else len(vf[1])) * 0.05
            if est < GATHER_SHARE * window_rows and (best is None or est < best[0]):
                best = (est, k)
        cost = best[0] * GATHER_COST if best is not None else window_rows
        source = None
        if cand is not None and window_rows:
            slots, rows, limit = log.contact_index(n_contacts)
            cids = np.frombuffer(cand.to_array(), dtype=np.uint32)
            # Candidates picked by earlier conditions are often the most active
            # contacts, so their rows are counted on a sample, not assumed average.
            step = max(1, len(cids) // CONTACT_SAMPLE)
            sample = np.ascontiguousarray(cids[::step])
            sampled = contactindex.rows_of_contacts(sample, slots, rows, limit, r0, r1)
            tail = max(0, r1 - max(r0, limit))
            cand_rows = (len(sampled) - tail) * (len(cids) / max(1, len(sample)))
            cand_cost = (
                len(cids) * CONTACT_SEEK_COST + cand_rows * CONTACT_ROW_COST + tail
            )
            if cand_cost < cost and fused:
                return (
                    CONTACTS,
                    [
                        (col, mask, log.contact_codes(dim))
                        for dim, col, mask, _ in filters
                    ],
                    None,
                )
            if cand_cost < cost:
                source = contactindex.rows_of_contacts(cids, slots, rows, limit, r0, r1)
                best = None
        if best is not None:
            k = best[1]
            dim, _, _, codes = filters[k]
            vf = self._by_values(log, k)
            source = None
            if vf is not None:
                source = log.attribute_rows(self.catalog, vf[0], vf[1], r0, r1)
            if source is None:
                source = log.postings[dim].gather(codes, r0, r1)
            del filters[k]  # gathering already applied it
        return source, [(col, mask) for _, col, mask, _ in filters], row_mask

    def estimate_rows(self, log, r0: int, r1: int) -> float:
        """Expected matching rows in [r0, r1) for ordering AND operands (cheap, rough)."""
        best = float(r1 - r0)
        for k, (dim, _, codes) in enumerate(self.code_filters):
            if log.dim(dim) is None or not len(codes):
                return 0.0
            est = self._postings_estimate(log, dim, codes, r0, r1, k)
            if est is not None:
                best = min(best, est)
        return best


# id of a catalog code array (read-only, cached by Catalog.item_filter until the
# catalog changes) -> (a weak reference to it, {(log, dimension, log state): its
# postings in that log}).
_TOTALS: dict[int, tuple[weakref.ref, dict]] = {}
MAX_TOTALS = 256


def _postings_total(log, dim: str, codes: np.ndarray) -> float:
    """Postings of `codes` in `log`'s `dim`: a gather over the codes (45k item codes
    for three categories at 10M contacts, ~0.1-0.3 ms each time), kept per log state
    for the catalog's own code arrays, which every query over the same filter shares
    (an estimate is asked when ordering an AND and again when binding the scan)."""
    key = (id(log), dim, log.n, log._version)
    memo = None
    kept = not codes.flags.writeable
    if kept:
        hit = _TOTALS.get(id(codes))
        if hit is not None and hit[0]() is codes:
            memo = hit[1]
            if key in memo:
                return memo[key]
    sizes = log.posting_sizes(dim)
    inside = codes[codes < len(sizes)]
    total = float(sizes[inside].sum()) if len(inside) else 0.0
    if kept:
        if memo is None or len(memo) >= 8:
            if len(_TOTALS) >= MAX_TOTALS:
                _TOTALS.clear()
            memo = {}
            _TOTALS[id(codes)] = (weakref.ref(codes), memo)
        memo[key] = total
    return total


class EventNode(Node):
    kind = "event"

    def __init__(
        self, ast: dict, key: str, store: Store, now_s: float, path: str
    ) -> None:
        super().__init__(ast, key)
        self.etype = ast["event"]
        self.now_s = now_s
        self.filters = EventFilters(store, self.etype, ast.get("where", []), path)
        self.lo_s, self.hi_s = period_bounds_s(
            ast.get("period"), now_s, f"{path}.period"
        )
        count = ast.get("count", {"min": 1})
        self.count_min = int(count.get("min", 0))
        self.count_max = int(count.get("max", U64_MAX))
        s = ast.get("sum")
        self.use_sum = s is not None
        if s is not None and s["field"] != "amount":
            raise InvalidQuery.at(
                f"{path}.sum.field", f"can only sum 'amount', got {s['field']!r}"
            )
        self.sum_min = float(s.get("min", -np.inf)) if s else -np.inf
        self.sum_max = float(s.get("max", np.inf)) if s else np.inf
        then = ast.get("then_no")
        self.then = None
        if then is not None:
            self.then = (
                then["event"],
                duration_s(then["within"], f"{path}.then_no.within"),
                EventFilters(
                    store, then["event"], then.get("where", []), f"{path}.then_no"
                ),
            )
        # No filter, sum or "then no": a count per contact decides (see _count_candidates).
        self._plain = not (
            self.filters.code_filters
            or self.filters.amount_intervals
            or self.use_sum
            or self.then is not None
        )
        self.count_range = eventscan.CountRange(
            self.count_min,
            self.count_max,
            sum_range=(self.sum_min, self.sum_max) if self.use_sum else None,
        )
        zero_sum_ok = not self.use_sum or self.sum_min <= 0 <= self.sum_max
        self.zero_qualifies = self.count_min == 0 and zero_sum_ok
        # The count of an order condition counts orders (distinct order_id), as the
        # aggregates do; only bounds other than "at least one" need the distinct count.
        self.distinct_dim = (
            DISTINCT_COUNT_DIMS.get(self.etype)
            if self.count_min > 1 or self.count_max != U64_MAX
            else None
        )
        if self.distinct_dim is not None:
            self._plain = False
        # Only code filters: a count of matching rows per contact decides (fused path).
        self._counts_only = not (
            self.filters.amount_intervals
            or self.use_sum
            or self.then is not None
            or self.distinct_dim is not None
        )
        # "Happened at least once": the matching rows' distinct contacts decide.
        self._at_least_one = (
            self.count_min == 1
            and self.count_max == U64_MAX
            and not self.use_sum
            and self.distinct_dim is None
        )

    def estimate(self, ctx: Context) -> float:
        log = ctx.store.logs.get(self.etype)
        if log is None:
            return float(ctx.n) if self.zero_qualifies else 0.0
        r0, r1 = log.window(self.lo_s, self.hi_s)
        rows = min(self.filters.estimate_rows(log, r0, r1), float(ctx.n))
        return max(0.0, ctx.n - rows) if self.zero_qualifies else rows

    def cost(self, ctx: Context) -> float:
        """Per candidate: a seek into its rows plus its rows in the window (and in the
        "then no" window), at the measured relative costs."""
        n = max(1, ctx.n)
        cost = CONTACT_SEEK_COST
        log = ctx.store.logs.get(self.etype)
        if log is not None:
            r0, r1 = log.window(self.lo_s, self.hi_s)
            cost += CONTACT_ROW_COST * (r1 - r0) / n
        if self.then is not None:
            then_log = ctx.store.logs.get(self.then[0])
            if then_log is not None:
                r0, r1 = then_log.window(
                    self.lo_s, min(self.hi_s + self.then[1], 2**32)
                )
                cost += CONTACT_SEEK_COST + CONTACT_ROW_COST * (r1 - r0) / n
        return cost

    def _count_candidates(
        self, ctx: Context, log, cand: BitMap, r0: int, r1: int, code_filters=None
    ):
        """A condition with no sum, amount filter, distinct count or "then no" only needs
        each candidate's number of matching events in the window: without code filters
        two binary searches in its contact-major rows, with them one fused walk of its
        rows in the window (``count_filtered_of_contacts``)."""
        cids = np.frombuffer(cand.to_array(), dtype=np.uint32)
        if not code_filters:
            got = self._by_last_seen(ctx, log, cids, r0, r1)
            if got is not None:
                return got
        slots, rows, limit = log.contact_index(ctx.n)
        if code_filters:
            counts = contactindex.count_filtered_of_contacts(
                cids, slots, rows, limit, log.cid, r0, r1, code_filters
            )
        else:
            counts = contactindex.count_of_contacts(
                cids, slots, rows, limit, log.cid, r0, r1
            )
        ok = (counts >= self.count_min) & (counts <= min(self.count_max, 2**32 - 1))
        return cids_to_bitmap(np.ascontiguousarray(cids[ok]))

    def _by_last_seen(
        self, ctx: Context, log, cids: np.ndarray, r0: int, r1: int
    ) -> BitMap | None:
        """At least one event in [lo, hi) of a type whose latest time per contact the
        rollups keep (``order``, ``email_open``), unfiltered: a gather of that time per
        candidate decides it (before lo: none; in [lo, hi): one), the contact-major
        count only for candidates with a later event. ``not order() in last 30 days``
        over 9k candidates: one cache miss each instead of a seek into each one's rows
        and two binary searches. None: the rollup does not decide this condition."""
        split = self._split_by_last_seen(ctx, cids)
        if split is None:
            return None
        inside, later = split
        got = cids_to_bitmap(inside)  # in the candidates' (ascending) order
        if len(later):  # rare: only with events after the window (a `now` in the past)
            slots, rows, limit = log.contact_index(ctx.n)
            sub = np.ascontiguousarray(cids[later])
            counts = contactindex.count_of_contacts(
                sub, slots, rows, limit, log.cid, r0, r1
            )
            got |= cids_to_bitmap(np.ascontiguousarray(sub[counts >= 1]))
        return got

    def keep_by_last_seen(self, ctx: Context, cids: np.ndarray) -> np.ndarray | None:
        """The `cids` (distinct uint32, any order; kept in it) with at least one event
        in the window, decided by the last-seen rollup alone (``_by_last_seen``
        without a BitMap): an index-first AND hands its few candidates over as an
        array. None when the rollup does not decide this condition, or some
        candidate's latest event is past the window (an earlier one may be inside)."""
        split = self._split_by_last_seen(ctx, cids)
        if split is None:
            return None
        inside, later = split
        return None if len(later) else inside

    def _split_by_last_seen(
        self, ctx: Context, cids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(`cids` whose latest event lies in the window, positions of those whose
        latest is after it) by one gather of the last-seen rollup
        (``columns.window_split``); None when the rollup does not decide this
        condition (another type, filters or counts, or a window from the epoch)."""
        from segd.segments.pairs import _last_seen

        last = _last_seen(ctx.store, self)
        if last is None or self.lo_s < 1 or len(last) < ctx.n:
            return None
        return columns.window_split(last, cids, self.lo_s, self.hi_s)

    def _by_value_contacts(self, ctx: Context, log, r0: int, r1: int) -> BitMap | None:
        """ "Happened at least once" with one filter, on a category column the log
        keeps postings per value of (``order(category in (...)) in last 90 days``),
        over few rows: the contacts kept beside those values' rows in the window,
        sorted and de-duplicated (``eventscan.distinct_contacts``), read in order
        instead of a miss per row in ``log.cid`` (``matching_contacts``: 7.6 ms of
        the reference's 17.8 at 10M). None: not this case."""
        filters = self.filters
        if (
            not self._at_least_one
            or self.then is not None
            or filters.amount_intervals
            or len(filters.code_filters) != 1
        ):
            return None
        vf = filters._by_values(log, 0)
        if vf is None:
            return None
        est = filters._postings_estimate(
            log, "item", filters.code_filters[0][2], r0, r1, 0
        )
        if est is None or est * SORT_RATIO > ctx.n:
            return None
        cids = log.attribute_cids(filters.catalog, vf[0], vf[1], r0, r1)
        if cids is None:
            return None
        if DISTINCT_BY_BITSET:
            got = distinct_to_bitmap(cids, thread_seen_bits(ctx.n))
        else:
            got = cids_to_bitmap(eventscan.distinct_contacts(cids, ctx.n))
        merged = ctx.store.contacts.merged
        if merged:
            got -= merged
        return got

    def _then_keys(
        self, ctx: Context, cand: BitMap | None, cand_words, only_cid: int = -1
    ):
        """Sorted (cid << 32 | ts) of the "then no" events that can follow an A event."""
        if self.then is None:
            return None, 0
        etype, within, filters = self.then
        log = ctx.store.logs.get(etype)
        if log is None:
            return None, within
        hi = min(self.hi_s + within, 2**32)
        r0, r1 = log.window(self.lo_s, hi)
        bound = filters.bind(log, r0, r1, cand, ctx.n)
        if bound is None:
            return None, within
        source, code_filters, row_mask = bound
        scan = eventscan.EventScanParams(
            log.cid,
            log.ts,
            r0,
            r1,
            source_rows=source,
            code_filters=code_filters,
            row_mask=row_mask,
            candidates=cand_words,
            only_contact=None if only_cid < 0 else only_cid,
        )
        return eventscan.collect_keys(scan), within

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        log = ctx.store.logs.get(self.etype)
        if log is None:
            return self._everyone(ctx, cand)
        r0, r1 = log.window(self.lo_s, self.hi_s)
        if cand is None:
            got = self._by_value_contacts(ctx, log, r0, r1)
            if got is not None:
                return got
        if (
            cand is not None
            and self._plain
            and len(cand) * 2 * CONTACT_SEEK_COST < r1 - r0
        ):
            return self._count_candidates(ctx, log, cand, r0, r1)
        bound = self.filters.bind(
            log, r0, r1, cand, ctx.n, fused=cand is not None and self._counts_only
        )
        if bound is None:
            return self._everyone(ctx, cand)
        source, code_filters, row_mask = bound
        if source is CONTACTS and cand is not None:
            return self._count_candidates(ctx, log, cand, r0, r1, code_filters)
        cand_words = ctx.candidate_words(cand)
        then_keys, within = self._then_keys(ctx, cand, cand_words)
        distinct = None if self.distinct_dim is None else log.dim(self.distinct_dim)
        scan = eventscan.EventScanParams(
            log.cid,
            log.ts,
            r0,
            r1,
            source_rows=source,
            code_filters=code_filters,
            row_mask=row_mask,
            amount=log.amount if self.use_sum else None,
            candidates=cand_words,
            then_keys=then_keys,
            within_s=within,
            distinct_codes=distinct,
        )
        visited = len(source) if source is not None else r1 - r0
        if self._at_least_one and visited * SORT_RATIO <= ctx.n:
            # "Happened" over few rows: their distinct contacts, without the two
            # bitsets of all contacts (eventscan.matching_contacts).
            got = cids_to_bitmap(eventscan.matching_contacts(scan, ctx.n))
            merged = ctx.store.contacts.merged
            if merged:
                got -= merged
            return got if cand is None else got & cand
        scratch = thread_scratch()
        scratch.ensure(ctx.n, self.use_sum)
        split = eventscan.count_matches(scan, self.count_range, scratch, ctx.n)
        yes, no = split.yes, split.no
        if self.zero_qualifies:
            base = ctx.universe if cand is None else cand
            return base - ctx.to_bitmap(no)
        got = ctx.to_bitmap(yes)
        return got if cand is None else got & cand

    def _everyone(self, ctx: Context, cand: BitMap | None) -> BitMap:
        """The answer when no event can match: every contact of the base for a
        condition that zero events satisfy, else nobody. The universe bitmap (a
        range of every contact minus the merged ones) is built only here, not on
        every run without candidates."""
        if not self.zero_qualifies:
            return BitMap()
        return (ctx.universe if cand is None else cand).copy()

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        """The contact's events that pass this condition's filters, window and "then no"."""
        matching, total = 0, None
        last: tuple[datetime, ...] = ()
        merged_from: tuple[tuple[str, int], ...] = ()
        log = ctx.store.logs.get(self.etype)
        if log is not None:
            r0, r1 = log.window(self.lo_s, self.hi_s)
            one = BitMap([cid])
            bound = self.filters.bind(log, r0, r1, one, ctx.n)
            if bound is not None:
                source, code_filters, row_mask = bound
                then_keys, within = self._then_keys(ctx, one, None, cid)
                rows = eventscan.collect_rows(
                    eventscan.EventScanParams(
                        log.cid,
                        log.ts,
                        r0,
                        r1,
                        source_rows=source,
                        code_filters=code_filters,
                        row_mask=row_mask,
                        then_keys=then_keys,
                        within_s=within,
                        only_contact=cid,
                    )
                )
                matching = int(len(rows))
                last = tuple(_utc(t) for t in log.ts[rows][-MAX_SHOWN_TIMES:].tolist())
                merged_from = _merged_from(ctx, log, rows)
                if self.use_sum:
                    amounts = (
                        log.amount[rows] if log.amount is not None else np.zeros(0)
                    )
                    total = float(np.nansum(amounts))
        if self.use_sum and total is None:
            total = 0.0
        return EventEvidence(
            event=self.etype,
            matching_events=matching,
            window_from=None if self.lo_s <= 0 else _utc(self.lo_s),
            window_to=None if self.hi_s > 2**32 - 1 else _utc(self.hi_s),
            count_min=self.count_min,
            count_max=None if self.count_max == U64_MAX else self.count_max,
            last_times=last,
            sum=total,
            then_no=None if self.then is None else _then_text(self.ast["then_no"]),
            merged_from=merged_from,
        )


def _then_text(then: dict) -> str:
    """``order within 1d`` (with its filters) for a then_no part of the AST."""
    from segd.segments.dsl import format as format_dsl

    body = format_dsl({"event": then["event"], "where": then.get("where", [])})
    body = body.removesuffix("()") if body.endswith("()") else body
    return f"{body} within {then['within']}"


def _utc(ts_s: int) -> datetime:
    return datetime.fromtimestamp(ts_s, UTC)


def _merged_from(ctx: Context, log, rows: np.ndarray) -> tuple[tuple[str, int], ...]:
    """(original customer_id, events) of rows an identity merge moved to this contact."""
    origin = log.origin()
    if origin is None or not len(rows):
        return ()
    came = origin[rows]
    came = came[came != NO_CODE]
    if not len(came):
        return ()
    ids, counts = np.unique(came, return_counts=True)
    names = ctx.store.contacts.ids.decode(np.ascontiguousarray(ids)).to_pylist()
    return tuple(zip(names, counts.tolist(), strict=True))
