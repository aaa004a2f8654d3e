"""Exactness of live segments, as a hypothesis state machine.

Random dynamic segments (every core condition kind: attributes incl. derived age,
events with filters, relative and absolute periods, count ranges, sums, then-no,
aggregates incl. days_since_*, NOT, references to another dynamic segment, conditions on
the segment events ``segment_entered`` / ``segment_exited``), random
interleavings of event appends (late and future ones), contact and item upserts, new
contacts, identity merges (``Engine.merge``), RFM computations (``rfm_compute`` at the
clock) with segments on ``rfm.*`` (incl. ``rfm.entered`` over relative periods, which
moves with the clock) and ``advance`` steps from a second to months. After every step each
segment's ``members`` equals a fresh ``Engine.segment(query, now=clock)`` (with every
referenced plan inlined, ``live_refs=False``, and with references answered from the live
members, the default at the clock), and replaying
the change log (entered / exited in order) gives the members.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from segd import Engine
from segd.errors import InvalidQuery
from segd.identity import MergeError
from tests.property.strategies import asts

DAY = 86_400
BASE = 1_735_689_600  # 2025-01-01T00:00:00Z: the ISO periods drawn lie around it
CONTACTS = [f"c{i}" for i in range(8)]
TYPES = ["view", "order", "email_open", "add_to_cart"]
ITEMS = ["i1", "i2", "i3"]
CATEGORIES = ["Pets/Cats", "Pets/Dogs", "Home"]
BRANDS = ["acme", "zeta"]

queries = asts(
    attrs={"city": "category", "score": "int", "age": "int"},
    values={
        "city": ["Kazan", "Moscow"],
        "score": [1, 3, 5],
        "age": [18, 30, 45],
        "category": ["Pets", "Pets/Cats", "Home"],
        "brand": BRANDS,
        "amount": [100.0, 500.0],
        "item": ITEMS,
        "segment": ["base", "s1", "s2", "s3"],
    },
    event_types=[*TYPES, "segment_entered", "segment_exited"],
    filter_fields={
        "category": "category",
        "brand": "category",
        "item": "category",
        "amount": "float",
        "segment": "category",
    },
    include_rfm=False,
    segment_names=["base"],
    max_depth=3,
)

# Segments on RFM too, once a computation exists (rfm.* reads the latest one).
rfm_queries = asts(
    attrs={"city": "category", "score": "int"},
    values={"city": ["Kazan", "Moscow"], "score": [1, 3, 5]},
    event_types=TYPES,
    filter_fields={"amount": "float"},
    include_rfm=True,
    segment_names=["base"],
    max_depth=2,
)

offsets = st.one_of(
    st.integers(-3, 3),
    st.integers(-2 * DAY, 2 * DAY),
    st.integers(-400 * DAY, 60 * DAY),
)
# (contact, type, offset from the clock, item, amount, order number)
event_row = st.tuples(
    st.sampled_from(CONTACTS),
    st.sampled_from(TYPES),
    offsets,
    st.sampled_from(ITEMS),
    st.sampled_from([100.0, 250.0, 900.0]),
    st.integers(0, 3),
)
events = st.lists(event_row, min_size=1, max_size=6)
steps = st.one_of(
    st.integers(0, 3),
    st.integers(1, 3600),
    st.integers(1, 10 * DAY),
    st.integers(20 * DAY, 400 * DAY),
    st.floats(0, 5 * DAY, allow_nan=False).map(lambda x: round(x, 3)),
)
births = st.one_of(
    st.none(),
    st.sampled_from(
        ["1980-02-29", "1995-01-02", "2007-01-01", "1979-12-31", "1990-03-01"]
    ),
)


class LiveMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(result_cache_size=0)
        self.queries: dict[str, dict] = {}
        self.n_events = 0
        self.rfm_computed = False

    @initialize(start=st.integers(-30 * DAY, 30 * DAY), base=queries)
    def setup(self, start: int, base: dict) -> None:
        e = self.engine
        e.upsert_items(
            [
                {"item_id": i, "category": c, "brand": b, "price": 10.0}
                for i, c, b in zip(ITEMS, CATEGORIES, BRANDS * 2, strict=False)
            ]
        )
        e.upsert_contacts(
            [
                {
                    "customer_id": c,
                    "city": "Kazan" if k % 2 else "Moscow",
                    "score": k % 5,
                    "birth_date": "1990-03-01",
                }
                for k, c in enumerate(CONTACTS[:5])
            ]
        )
        # Every type exists, so every drawn condition compiles.
        e.append_events(
            [
                {
                    "customer_id": "c0",
                    "type": t,
                    "ts": BASE - 500 * DAY,
                    "item_id": "i1",
                }
                for t in TYPES
            ]
        )
        base = _no_refs(base)
        try:
            e.create_segment("base", base)
        except InvalidQuery:  # it asks its own segment events: a cycle
            base = {"attr": "score", "op": ">=", "value": 2}
            e.create_segment("base", base)
        self.queries["base"] = base
        e.advance(BASE + start)

    @rule(query=queries)
    def create(self, query: dict) -> None:
        name = f"s{len(self.queries)}"
        try:
            self.engine.create_segment(name, query)
        except InvalidQuery:
            return
        self.queries[name] = query

    @precondition(lambda self: self.rfm_computed)
    @rule(query=rfm_queries, data=st.data())
    def create_or_redefine_on_rfm(self, query: dict, data) -> None:
        names = sorted(set(self.queries) - {"base"})
        name = data.draw(st.sampled_from([f"s{len(self.queries)}", *names]))
        try:
            if name in self.queries:
                self.engine.update_segment(name, query)
            else:
                self.engine.create_segment(name, query)
        except InvalidQuery:
            return
        self.queries[name] = query

    @rule()
    def rfm(self) -> None:
        """RFM as of the clock (it may not go back: the clock does not either)."""
        self.engine.rfm_compute(as_of=self.engine.clock)
        self.rfm_computed = True

    @rule(survivor=st.sampled_from(CONTACTS), merged=st.sampled_from(CONTACTS))
    def merge(self, survivor: str, merged: str) -> None:
        try:
            self.engine.merge(survivor, merged)
        except MergeError:  # into itself, unknown, or merged already
            return

    @rule(query=queries, data=st.data())
    def redefine(self, query: dict, data) -> None:
        name = data.draw(st.sampled_from(sorted(self.queries)))
        if name == "base":
            query = _no_refs(query)
        try:
            self.engine.update_segment(name, query)
        except InvalidQuery:
            return
        self.queries[name] = query

    @rule(rows=events)
    def append(self, rows) -> None:
        clock = int(self.engine.clock)
        batch = []
        for cid, etype, off, item, amount, order in rows:
            self.n_events += 1
            row = {
                "customer_id": cid,
                "type": etype,
                "ts": max(1, clock + off),
                "item_id": item,
                "amount": amount if etype == "order" else None,
            }
            if etype == "order":
                row["order_id"] = f"o{order}"
            batch.append(row)
        self.engine.append_events(batch)

    @rule(
        contact=st.sampled_from(CONTACTS),
        city=st.sampled_from(["Kazan", "Moscow", None]),
        score=st.integers(0, 6),
        birth=births,
    )
    def upsert(self, contact, city, score, birth) -> None:
        self.engine.upsert_contacts(
            [
                {
                    "customer_id": contact,
                    "city": city,
                    "score": score,
                    "birth_date": birth,
                }
            ]
        )

    @rule(item=st.sampled_from(ITEMS), category=st.sampled_from(CATEGORIES))
    def recategorise(self, item, category) -> None:
        self.engine.upsert_items([{"item_id": item, "category": category}])

    @rule(step=steps)
    def advance(self, step) -> None:
        self.engine.advance(self.engine.clock + step)

    @invariant()
    def exact(self) -> None:
        e = self.engine
        clock = e.clock
        if clock is None:
            return
        changes = e.segment_changes().to_pylist()
        replayed: dict[str, set] = {}
        for row in changes:
            s = replayed.setdefault(row["segment"], set())
            if row["change"] == "entered":
                assert row["customer_id"] not in s, row
                s.add(row["customer_id"])
            else:
                assert row["customer_id"] in s, row
                s.remove(row["customer_id"])
        for name, query in self.queries.items():
            e.live_refs = False  # the oracle inlines every referenced plan
            try:
                want = set(e.segment(query, now=clock, cache=False).ids())
            finally:
                e.live_refs = True
            got = set(e.members(name).ids())
            assert got == want, (name, query, clock, got ^ want)
            # at the clock, references are answered from the live members: the same
            at_clock = set(e.segment(query, now=clock, cache=False).ids())
            assert at_clock == want, (name, query, clock, at_clock ^ want)
            assert replayed.get(name, set()) == got, name
        # time-driven changes are in time order and never after the clock
        ats = [r["at"].timestamp() for r in changes]
        assert all(a <= clock + 1e-6 for a in ats)


def _no_refs(query: dict) -> dict:
    """`base` must not refer to itself."""
    if "segment" in query:
        return {"attr": "score", "op": ">=", "value": 2}
    for key in ("and", "or"):
        if key in query:
            return {key: [_no_refs(c) for c in query[key]]}
    if "not" in query:
        return {"not": _no_refs(query["not"])}
    return query


TestLive = LiveMachine.TestCase
# 30 examples locally, 60 under CI=true (the ci profile's 150 cost minutes of CI time
# for little more reach: 60 x 25 steps = 1,500 steps of every rule and invariant).
TestLive.settings = settings(
    max_examples=min(settings.default.max_examples, 60),
    stateful_step_count=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
