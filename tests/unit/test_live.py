"""Live segments: the engine clock, exact-second entries and exits, change causes,
history, references, and durability (clean close, crash replay, snapshot)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from segd import Engine
from segd.errors import FailedPrecondition, InvalidInput, InvalidQuery

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z


def changes(e: Engine, name: str | None = None) -> list[tuple]:
    return [
        (r["segment"], r["customer_id"], r["change"], r["at"].timestamp(), r["cause"])
        for r in e.segment_changes(name).to_pylist()
    ]


def ids(e: Engine, name: str) -> set[str]:
    return set(e.members(name).ids())


def agree(e: Engine, name: str, query: str) -> None:
    assert ids(e, name) == set(e.segment(query, now=e.clock, cache=False).ids())


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.upsert_contacts([{"customer_id": c, "city": "Moscow"} for c in ("a", "b", "c")])
    e.append_events([{"customer_id": "b", "type": "order", "ts": 1, "amount": 1.0}])
    return e


def test_clock_unset_then_forward_only(eng: Engine) -> None:
    eng.create_segment("v", "view() in last 7 days" if False else "orders_count >= 1")
    assert eng.clock is None
    with pytest.raises(FailedPrecondition):
        eng.members("v")
    assert eng.advance(datetime(2025, 1, 1, tzinfo=UTC)) == T
    assert ids(eng, "v") == {"b"}
    with pytest.raises(InvalidInput):
        eng.advance(T - 1)
    eng.advance(T)  # same moment: fine, nothing happens
    assert eng.clock == T
    assert changes(eng) == [("v", "b", "entered", T, "definition")]


def test_window_exit_at_the_exact_second(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    eng.create_segment("v", "view() in last 7 days")
    eng.advance(T)  # [T - 7d, T) does not hold T yet
    assert ids(eng, "v") == set()
    eng.advance(T + 30 * DAY)  # one step: enters and leaves within it
    assert ids(eng, "v") == set()
    assert changes(eng, "v") == [
        ("v", "a", "entered", T, "time"),
        ("v", "a", "exited", T + 7 * DAY, "time"),
    ]


@pytest.mark.parametrize("step", [3571, DAY - 1, 7 * DAY])
def test_member_at_the_edge_and_not_a_second_later(eng: Engine, step: int) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    eng.create_segment("v", "view() in last 7 days")
    eng.advance(T + 1)
    assert ids(eng, "v") == {"a"}
    clock = T + 1
    while clock < T + 7 * DAY:
        clock = min(clock + step, T + 7 * DAY)
        eng.advance(clock)
    assert ids(eng, "v") == {"a"}  # at t + 7 d still a member
    eng.advance(T + 7 * DAY + 1)
    assert ids(eng, "v") == set()  # from t + 7 d + 1 s not
    assert changes(eng, "v")[-1] == ("v", "a", "exited", T + 7 * DAY, "time")


def test_fractional_clock_agrees_with_segment(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    q = "view() in last 7 days and days_since_last_visit < 7"
    eng.create_segment("v", q)
    for now in (T - 0.5, T + 0.25, T + 7 * DAY - 0.5, T + 7 * DAY + 0.5):
        eng.advance(now)
        agree(eng, "v", q)


def test_ago_window_enters_and_leaves(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    q = "view() from 10 to 3 days ago"
    eng.create_segment("v", q)
    eng.advance(T)
    eng.advance(T + 20 * DAY)
    assert changes(eng, "v") == [
        ("v", "a", "entered", T + 3 * DAY, "time"),
        ("v", "a", "exited", T + 10 * DAY, "time"),
    ]


def test_then_no_and_counts(eng: Engine) -> None:
    eng.append_events(
        [
            {"customer_id": "a", "type": "add_to_cart", "ts": T},
            {"customer_id": "a", "type": "add_to_cart", "ts": T + DAY},
            {"customer_id": "c", "type": "add_to_cart", "ts": T},
        ]
    )
    q = "add_to_cart() count >= 2 in last 3 days then no order within 7 days"
    eng.create_segment("cart", q)
    eng.advance(T + DAY + 1)
    assert ids(eng, "cart") == {"a"}
    # the order cancels the later cart only: one survives, under count >= 2
    eng.append_events(
        [{"customer_id": "a", "type": "order", "ts": T + 2 * DAY, "amount": 5.0}]
    )
    agree(eng, "cart", q)
    assert ids(eng, "cart") == set()
    assert changes(eng, "cart")[-1] == ("cart", "a", "exited", T + DAY + 1, "order")


def test_days_since_threshold_changes_at_its_second(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "order", "ts": T, "amount": 10.0}])
    q = "days_since_last_order >= 30"
    eng.create_segment("lapsed", q)
    eng.advance(T)
    eng.advance(T + 60 * DAY)
    # b's only order is from 1970: a member from the start
    assert changes(eng, "lapsed") == [
        ("lapsed", "b", "entered", T, "definition"),
        ("lapsed", "a", "entered", T + 30 * DAY, "time"),
    ]
    eng.advance(T + 60 * DAY + 5)
    agree(eng, "lapsed", q)


def test_age_changes_at_midnight_of_the_birthday(eng: Engine) -> None:
    eng.upsert_contacts([{"customer_id": "a", "birth_date": "1990-01-05"}])
    q = "age >= 35"
    eng.create_segment("older", q)
    eng.advance(T)
    eng.advance(T + 10 * DAY)
    assert changes(eng, "older") == [("older", "a", "entered", T + 4 * DAY, "time")]


def test_writes_log_their_cause_at_the_clock(eng: Engine) -> None:
    eng.create_segment("kazan", 'city = "Kazan" and not view() in last 1 day')
    eng.advance(T + 0.5)
    eng.upsert_contact("a", city="Kazan")
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T - 5}])
    eng.upsert_contact("new", city="Kazan")  # a new contact enters by upsert
    assert changes(eng) == [
        ("kazan", "a", "entered", T + 0.5, "upsert"),
        ("kazan", "a", "exited", T + 0.5, "view"),
        ("kazan", "new", "entered", T + 0.5, "upsert"),
    ]


def test_item_upserts_re_evaluate_catalog_filters(eng: Engine) -> None:
    eng.upsert_items([{"item_id": "i1", "category": "Home"}])
    eng.append_events(
        [{"customer_id": "a", "type": "view", "ts": T - 5, "item_id": "i1"}]
    )
    eng.create_segment("pets", 'view(category = "Pets")')
    eng.advance(T)
    assert ids(eng, "pets") == set()
    eng.upsert_items([{"item_id": "i1", "category": "Pets/Cats"}])
    assert ids(eng, "pets") == {"a"}
    assert changes(eng, "pets")[-1][-1] == "items"


def test_references_propagate_and_redefinition_logs_definition(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    eng.create_segment("viewers", "view() in last 2 days")
    eng.create_segment("outer", 'in segment "viewers" or orders_count >= 1')
    eng.advance(T + 1)
    assert ids(eng, "outer") == {"a", "b"}
    eng.advance(T + 3 * DAY)
    assert ids(eng, "outer") == {"b"}
    eng.update_segment("viewers", "orders_count = 0")
    assert ids(eng, "outer") == {"a", "b", "c"}
    assert ("outer", "c", "entered", T + 3 * DAY, "definition") in changes(eng)
    with pytest.raises(InvalidQuery):
        eng.update_segment("viewers", 'in segment "outer"')
    eng.delete_segment("outer")
    assert [r for r in changes(eng, "outer") if r[2] == "exited"][-3:] == [
        ("outer", c, "exited", T + 3 * DAY, "definition") for c in ("a", "b", "c")
    ]


def test_static_members_and_history(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    eng.create_segment("frozen", "view()", static=True, now=T + 1)
    assert ids(eng, "frozen") == {"a"}  # static: no clock needed
    eng.create_segment("v", "view() in last 2 days")
    eng.advance(T)
    eng.advance(T + 5 * DAY)
    hist = eng.segment_history("v").to_pylist()
    assert [(str(r["day"]), r["count"]) for r in hist] == [
        ("2025-01-01", 1),
        ("2025-01-02", 1),
        ("2025-01-03", 0),
        ("2025-01-04", 0),
        ("2025-01-05", 0),
        ("2025-01-06", 0),
    ]


def test_changes_filters_and_positions(eng: Engine) -> None:
    eng.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    eng.create_segment("v", "view() in last 1 day")
    eng.create_segment("o", "orders_count >= 1")
    eng.advance(T)
    eng.advance(T + 3 * DAY)
    t = eng.segment_changes(since=T + 1, until=T + 2 * DAY)
    assert t.column("change").to_pylist() == ["exited"]
    assert eng.segment_changes(start=1).column("position").to_pylist() == [1, 2]
    assert eng.changes_position == 3


QUERIES = {
    "v": "view() in last 3 days",
    "lapsed": "days_since_last_order >= 2",
    "cart": "add_to_cart() in last 2 days then no order within 1 day",
}


def _drive(e: Engine) -> None:
    for name, q in QUERIES.items():
        e.create_segment(name, q)
    e.advance(T)
    e.append_events(
        [
            {"customer_id": "a", "type": "view", "ts": T + 10},
            {"customer_id": "c", "type": "add_to_cart", "ts": T + 20},
            {"customer_id": "a", "type": "order", "ts": T + 30, "amount": 3.0},
        ]
    )
    e.advance(T + DAY)
    e.upsert_contact("d", city="X")
    e.append_events([{"customer_id": "d", "type": "view", "ts": T + DAY - 5}])
    e.advance(T + 5 * DAY)


def _state(e: Engine) -> tuple:
    return (
        e.clock,
        {n: ids(e, n) for n in QUERIES},
        changes(e),
        e.segment_history("v").to_pylist(),
    )


@pytest.mark.parametrize("how", ["close", "crash", "snapshot"])
def test_durable_membership_and_changes(tmp_path, how: str) -> None:
    mem = Engine()
    mem.upsert_contacts([{"customer_id": c} for c in ("a", "b", "c")])
    mem.append_events([{"customer_id": "b", "type": "order", "ts": 1, "amount": 1.0}])
    _drive(mem)
    want = _state(mem)
    e = Engine.open(tmp_path / "d")
    e.upsert_contacts([{"customer_id": c} for c in ("a", "b", "c")])
    e.append_events([{"customer_id": "b", "type": "order", "ts": 1, "amount": 1.0}])
    if how == "snapshot":
        e.snapshot()  # before the clock: the rest replays on top
    _drive(e)
    if how == "snapshot":
        e.snapshot()
    if how == "crash":
        e._wal.flush() if hasattr(e._wal, "flush") else None
        e._dir_lock.release()  # the process "dies": nothing closed
    else:
        e.close()
    again = Engine.open(tmp_path / "d")
    try:
        assert _state(again) == want
        again.advance(T + 9 * DAY)
        mem.advance(T + 9 * DAY)
        assert _state(again) == _state(mem)
    finally:
        again.close()


# Each kind of time-driven change at its exact second: (query, the data, the second T of
# the change, whether the contact is a member from T on). A member changes "at T" in the
# core's semantics (docs/segment-language.md): windows are half-open, so an event at t in
# `last 7 days` is in the window for now in (t, t + 7 d] and leaves *after* T = t + 7 d
# (the value changes between T and T + 1, logged at T); a `days_since_*` threshold or a
# birthday changes the value *at* T itself.
EDGES = {
    "window exit": (
        "view() in last 7 days",
        [{"customer_id": "a", "type": "view", "ts": T}],
        T + 7 * DAY,
        "after",
        False,
    ),
    "then no: the cart leaves the window": (
        "add_to_cart() in last 3 days then no order within 1 day",
        [
            {"customer_id": "a", "type": "add_to_cart", "ts": T},
            {"customer_id": "a", "type": "order", "ts": T + DAY, "amount": 1.0},
        ],
        T + 3 * DAY,
        "after",
        False,
    ),
    "count drops below its minimum": (
        "view() count >= 2 in last 7 days",
        [
            {"customer_id": "a", "type": "view", "ts": T},
            {"customer_id": "a", "type": "view", "ts": T + DAY},
        ],
        T + 7 * DAY,
        "after",
        False,
    ),
    "count falls back under its maximum": (
        "view() count = 1 in last 7 days",
        [
            {"customer_id": "a", "type": "view", "ts": T},
            {"customer_id": "a", "type": "view", "ts": T + DAY},
        ],
        T + 7 * DAY,
        "after",
        True,
    ),
    "days_since reaches its minimum": (
        "days_since_last_order >= 30",
        [{"customer_id": "a", "type": "order", "ts": T, "amount": 1.0}],
        T + 30 * DAY,
        "at",
        True,
    ),
    "days_since passes its maximum": (
        "days_since_last_visit <= 9",
        [{"customer_id": "a", "type": "view", "ts": T}],
        T + 10 * DAY,
        "at",
        False,
    ),
    "days_since over a period": (
        "days_since_last_order >= 2 and days_since_last_order < 5",
        [{"customer_id": "a", "type": "order", "ts": T + 7, "amount": 1.0}],
        T + 7 + 5 * DAY,
        "at",
        False,
    ),
    "age: the birthday": (
        "age >= 35",
        None,  # a's birth date 1990-01-05: 35 at 2025-01-05T00:00Z
        T + 4 * DAY,
        "at",
        True,
    ),
    "age: out of a range at the birthday": (
        "age between 30 and 34",
        None,
        T + 4 * DAY,
        "at",
        False,
    ),
}


def _edge_engine(events: list | None, query: str) -> Engine:
    e = Engine()
    e.upsert_contacts(
        [{"customer_id": "a", "birth_date": "1990-01-05"}, {"customer_id": "b"}]
    )
    if events:
        e.append_events(events)
    e.create_segment("s", query)
    e.advance(T - DAY)
    return e


@pytest.mark.parametrize("kind", sorted(EDGES))
def test_time_driven_change_at_its_exact_second(kind: str) -> None:
    query, events, at, how, member_after = EDGES[kind]
    # the value as a function of the clock, second by second around T
    e = _edge_engine(events, query)
    first = at if how == "after" else at - 1  # the last second with the old value
    for now in (first - 1, first, first + 1, first + 2):
        e.advance(now)
        agree(e, "s", query)
        want = member_after if now > first else not member_after
        assert ("a" in ids(e, "s")) == want, (kind, now - at)
    # one step from a day before to an hour after logs the change at T exactly
    e = _edge_engine(events, query)
    e.advance(at + 3600)
    agree(e, "s", query)
    rows = [r for r in changes(e, "s") if r[1] == "a" and r[4] == "time"]
    want_change = "entered" if member_after else "exited"
    assert rows[-1][2:4] == (want_change, at), (kind, rows)


def _fresh_order(e: Engine, what: str) -> set[tuple[int, float]]:
    if what == "birthday":
        col = e.store.contacts.column("birth_date")
        n = e.store.n_contacts
        out = set()
        for c in range(n):
            if c < len(col.values) and col.valid[c]:
                day = datetime.fromtimestamp(int(col.values[c]) // 1000, UTC)
                out.add((c, float(day.month * 100 + day.day)))
        return out
    last = getattr(e.store.aggregates, what)[: e.store.n_contacts]
    return {(c, float(v)) for c, v in enumerate(last) if v > 0}


def test_sorted_keys_are_repaired_after_touches() -> None:
    """The sorted last-seen / birthday keys that time steps search are kept across steps
    and repaired for the contacts that changed: always those of a fresh sort."""
    import numpy as np

    rng = np.random.default_rng(3)
    e = Engine()
    e.upsert_contacts(
        [{"customer_id": f"c{i}", "birth_date": "1990-01-05"} for i in range(40)]
    )
    e.create_segment("s", "days_since_last_order >= 3 and age >= 30")
    e.advance(T)
    for round_ in range(12):
        who = rng.integers(0, 60, 8)  # some contacts new
        e.append_events(
            [
                {
                    "customer_id": f"c{w}",
                    "type": "order",
                    "ts": T - int(rng.integers(0, 50 * DAY)),
                    "amount": 1.0,
                }
                for w in who
            ]
        )
        e.upsert_contacts(
            [
                {
                    "customer_id": f"c{int(w)}",
                    "birth_date": None
                    if w % 7 == 0
                    else f"19{80 + w % 20}-0{1 + w % 9}-1{w % 10}",
                }
                for w in rng.integers(0, 60, 3)
            ]
        )
        e.advance(T + (round_ + 1) * DAY)
        agree(e, "s", "days_since_last_order >= 3 and age >= 30")
        for what in ("last_order_s", "birthday"):
            keys, cids = e.live._sorted(what)
            assert np.all(np.diff(keys) >= 0), what
            assert set(zip(cids.tolist(), keys.tolist(), strict=True)) == _fresh_order(
                e, what
            ), (what, round_)


def test_a_merged_contact_leaves_and_never_comes_back() -> None:
    """A merge re-decides both contacts: the merged one leaves (cause ``merge``), and no
    later time step brings it back, even under NOT (it is no one)."""
    e = Engine()
    e.upsert_contacts(
        [
            {"customer_id": "a", "birth_date": "1990-01-05"},
            {"customer_id": "b", "birth_date": "1990-01-05"},
        ]
    )
    e.append_events([{"customer_id": "a", "type": "view", "ts": T}])
    q = "not age = 34 and not view() in last 2 days"
    e.create_segment("s", q)
    e.advance(T - DAY)
    assert ids(e, "s") == set()  # both 34
    e.merge("b", "a")
    e.advance(T + 10 * DAY)  # the birthday (35) and a's view edge pass
    agree(e, "s", q)
    assert ids(e, "s") == {"b"}
    assert [r for r in changes(e, "s") if r[1] == "a"] == []


def test_saves_and_steps_build_sorted_keys_outside_the_write_lock(monkeypatch) -> None:
    """A segment save primes the sorted keys its steps read, and a step repairs them
    after writes, both under the read lock: the write lock only finds them current
    (a build there stalled every reader of a live server; see LiveSegments.prime)."""
    from segd.live import LiveSegments

    e = Engine()
    e.upsert_contacts(
        [{"customer_id": f"c{i}", "birth_date": "1990-01-05"} for i in range(30)]
    )
    e.append_events(
        [
            {"customer_id": f"c{i}", "type": "order", "ts": T - i * DAY, "amount": 1.0}
            for i in range(20)
        ]
    )
    e.advance(T)
    built: list[tuple[str, bool]] = []
    keys_of = LiveSegments._keys_of

    def spy(what, source, rows):
        built.append((what, e._lock._writer))
        return keys_of(what, source, rows)

    monkeypatch.setattr(LiveSegments, "_keys_of", staticmethod(spy))
    query = "days_since_last_order >= 3 and age >= 30"
    e.create_segment("s", query)
    assert {w for w, _ in built} == {"last_order_s", "birthday"}
    for day in range(1, 6):
        e.append_events(
            [
                {
                    "customer_id": f"c{day * 5}",
                    "type": "order",
                    "ts": T + day * DAY - 10,
                    "amount": 2.0,
                }
            ]
        )
        e.upsert_contacts([{"customer_id": f"c{day}", "birth_date": f"1970-03-0{day}"}])
        e.advance(T + day * DAY)
        agree(e, "s", query)
    assert len(built) > 2  # repaired after the writes
    assert not [w for w, under_write in built if under_write], built


def test_a_save_builds_value_indexes_outside_the_write_lock(monkeypatch) -> None:
    """The first query needing a value index builds it; for a segment save that query
    now runs under the read lock first (Engine._warm_for_save), not under the write
    lock every reader waits for."""
    from segd import aggindex

    e = Engine()
    e.upsert_contacts(
        [{"customer_id": f"c{i}", "age": 20 + i % 50} for i in range(5000)]
    )
    e.append_events(
        [
            {
                "customer_id": f"c{i}",
                "type": "order",
                "ts": T - (i % 300) * DAY,
                "amount": float(i % 97),
            }
            for i in range(0, 5000, 3)
        ]
    )
    e.advance(T)
    under_write: list[bool] = []
    build = aggindex.SortedIndex.build

    def spy(*args, **kwargs):
        under_write.append(e._lock._writer)
        return build(*args, **kwargs)

    monkeypatch.setattr(aggindex.SortedIndex, "build", staticmethod(spy))
    # the static pass (attribute operands over the base) finds its operands run
    from segd.livestatic import StaticPass

    primed: list[bool] = []
    set_all = StaticPass._set_all

    def spy_set_all(self, index, static, store):
        state, memo = self._memo
        current = state == (self._shape, store.n_contacts, self._touches)
        primed.append(current and all(p.key in memo for p in static))
        return set_all(self, index, static, store)

    monkeypatch.setattr(StaticPass, "_set_all", spy_set_all)
    query = "revenue >= 90 and orders_count = 1 and age < 30"
    e.create_segment("big", query)
    assert under_write and not any(under_write), under_write
    assert primed == [True]
    agree(e, "big", query)
    e.upsert_contacts([{"customer_id": "c7", "age": 21}])  # a write in between
    e.append_events(
        [{"customer_id": "c7", "type": "order", "ts": T - 5, "amount": 95.0}]
    )
    agree(e, "big", query)
