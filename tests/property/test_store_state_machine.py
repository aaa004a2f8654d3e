"""A RuleBasedStateMachine drives Engine.append_events with random batches (random order,
late batches, ties, a `channel` dimension with NULLs) against a plain list of event
tuples, and checks event conditions (type + channel filter + period + count range) against
a Python loop over that list after every step. Profiles come from tests/conftest.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from segd import Engine

BASE = (
    1_700_000_000  # event times are BASE + small offsets, so ties and late rows abound
)
NOW = BASE + 10_000
CONTACTS = [f"c{i}" for i in range(6)]
TYPES = ["view", "order"]
CHANNELS = ["a", "b", None]

event = st.tuples(
    st.sampled_from(CONTACTS),
    st.integers(0, 40),
    st.sampled_from(TYPES),
    st.sampled_from(CHANNELS),
)
batches = st.lists(event, min_size=1, max_size=8)

filters = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["=", "!="]), st.sampled_from(["a", "b", "zzz"])),
    st.tuples(st.just("in"), st.just(["a", "b"])),
    st.tuples(st.just("not_in"), st.just(["a"])),
)
periods = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 41), st.integers(1, 42)).filter(lambda p: p[0] < p[1]),
)
counts = st.one_of(
    st.none(),
    st.just((0, 0)),
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda p: (p[0], p[0] + p[1])),
    st.tuples(st.integers(1, 3), st.none()),
)
conditions = st.tuples(st.sampled_from(TYPES), filters, periods, counts)


def iso(offset: int) -> str:
    return datetime.fromtimestamp(BASE + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_ast(cond) -> dict:
    etype, flt, period, count = cond
    ast: dict = {"event": etype}
    if flt is not None:
        ast["where"] = [{"field": "channel", "op": flt[0], "value": flt[1]}]
    if period is not None:
        ast["period"] = {"from": iso(period[0]), "to": iso(period[1])}
    if count is not None:
        lo, hi = count
        ast["count"] = {"max": 0} if (lo, hi) == (0, 0) else {"min": lo}
        if hi is not None and (lo, hi) != (0, 0):
            ast["count"]["max"] = hi
    return ast


def channel_ok(value, flt) -> bool:
    if flt is None:
        return True
    if value is None:  # a NULL property never matches a filter, != included
        return False
    op, target = flt
    return {
        "=": value == target,
        "!=": value != target,
        "in": value in target,
        "not_in": value not in target,
    }[op]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.events: list[tuple[str, int, str, str | None]] = []

    def model_members(self, cond) -> set[str]:
        etype, flt, period, count = cond
        lo, hi = period if period is not None else (-1, 10**9)
        cmin, cmax = count if count is not None else (1, None)
        seen = {e[0] for e in self.events}
        out = set()
        for cid in seen:
            k = sum(
                1
                for c, t, ty, ch in self.events
                if c == cid and ty == etype and lo <= t < hi and channel_ok(ch, flt)
            )
            if k >= cmin and (cmax is None or k <= cmax):
                out.add(cid)
        return out

    def check(self, conds) -> None:
        for cond in conds:
            got = set(self.engine.segment(to_ast(cond), NOW).ids())
            assert got == self.model_members(cond), (to_ast(cond), self.events)

    @rule(batch=batches, conds=st.lists(conditions, min_size=2, max_size=3))
    def append(self, batch, conds) -> None:
        rows = [
            {"customer_id": c, "ts": BASE + t, "type": ty, "channel": ch}
            for c, t, ty, ch in batch
        ]
        self.engine.append_events(rows)
        self.events.extend(batch)
        self.check(conds)

    @rule(batch=batches, conds=st.lists(conditions, min_size=1, max_size=2))
    def append_late(self, batch, conds) -> None:
        """A batch entirely older than what the logs hold (offline orders)."""
        if not self.events:
            return
        oldest = min(t for _, t, _, _ in self.events)
        late = [(c, max(0, min(t, oldest - 1)), ty, ch) for c, t, ty, ch in batch]
        if oldest == 0:
            late = [(c, 0, ty, ch) for c, _, ty, ch in batch]  # ties at the start
        self.append(late, conds)

    @rule(conds=st.lists(conditions, min_size=1, max_size=3))
    def query(self, conds) -> None:
        self.check(conds)

    @invariant()
    def sizes(self) -> None:
        s = self.engine.stats()
        assert s["events"] == len(self.events)
        assert s["contacts"] == len({e[0] for e in self.events})
        want = {ty: sum(e[2] == ty for e in self.events) for ty in TYPES}
        assert s["event_types"] == {t: k for t, k in want.items() if k}

    @invariant()
    def logs_sorted_and_postings_exact(self) -> None:
        for log in self.engine.store.logs.values():
            ts = log.ts
            assert (ts[1:] >= ts[:-1]).all()
            col = log.dim("channel")
            if col is None:
                continue
            p = log.postings["channel"]
            for code in set(col.tolist()) - {0xFFFFFFFF}:
                rows = p.rows_of(code).tolist()
                assert rows == [i for i, c in enumerate(col.tolist()) if c == code]


# 30 examples locally, 60 under CI=true (not the ci profile's 150): 60 x 8 steps.
StoreMachine.TestCase.settings = settings(
    settings.default,
    max_examples=min(settings.default.max_examples, 60),
    stateful_step_count=8,
)
TestStoreMachine = StoreMachine.TestCase
