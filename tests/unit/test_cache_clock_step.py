"""A clock step (``Engine.advance``) keeps the cached results of queries that read no
segment events, and drops the others: every cached answer stays the fresh one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.aggregates import VISIT_EVENTS

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z
PLAIN = "view() in last 1 days"
ENTERED = 'entered segment "viewers" in last 1 days'
EXITED = 'exited segment "viewers" in last 2 days'
QUERIES = [
    PLAIN,
    'in segment "viewers"',
    'in segment "gone"',  # its definition reads segment events
    ENTERED,
    EXITED,
    'order() in last 30 days and not exited segment "viewers"',
    "add_to_cart() then no segment_exited within 1d",
    'in segment "frozen"',
]


def _engine(visit_events=VISIT_EVENTS) -> Engine:
    e = Engine(visit_events=visit_events)
    e.append_events(
        [
            {"customer_id": "a", "type": "view", "ts": T - DAY + 5},
            {"customer_id": "b", "type": "view", "ts": T - 10},
            {"customer_id": "c", "type": "order", "ts": T - DAY, "amount": 5.0},
            {"customer_id": "a", "type": "order", "ts": T - DAY, "amount": 7.0},
            {"customer_id": "c", "type": "add_to_cart", "ts": T - 3, "item_id": "i"},
        ]
    )
    e.create_segment("viewers", PLAIN)
    e.create_segment("gone", EXITED)
    e.create_segment("frozen", PLAIN, static=True)
    return e


def _evaluations(e: Engine, monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = e._evaluate_warned
    monkeypatch.setattr(
        e, "_evaluate_warned", lambda ast, *a: calls.append(ast) or real(ast, *a)
    )
    return calls


def test_a_step_keeps_results_without_segment_events(monkeypatch) -> None:
    e = _engine()
    e.advance(T)
    for q in QUERIES:  # cached at the next second, as the server's refresh-ahead does
        e.segment(q, now=T + 1)
    calls = _evaluations(e, monkeypatch)
    e.advance(T + 10)  # a's view runs out: viewers changes, segment events appended
    again = {q: set(e.segment(q, now=T + 1).ids()) for q in QUERIES}
    assert len(calls) == 5  # re-evaluated: the five that read segment events
    for q in QUERIES:
        assert again[q] == set(e.segment(q, now=T + 1, cache=False).ids()), q
    calls.clear()
    e.segment(PLAIN, now=T + 1)
    e.segment('in segment "frozen"', now=T + 1)
    assert calls == []


def test_segment_events_as_visits_drop_everything(monkeypatch) -> None:
    e = _engine(VISIT_EVENTS | {"segment_entered", "segment_exited"})
    e.advance(T)
    e.segment("days_since_last_visit <= 0", now=T + 20)
    calls = _evaluations(e, monkeypatch)
    e.advance(T + 10)
    got = e.count("days_since_last_visit <= 0", now=T + 20)
    assert len(calls) == 1  # not from the cache: the step's segment events are visits
    assert got == e.count("days_since_last_visit <= 0", now=T + 20, cache=False)


def test_a_write_still_drops_everything(monkeypatch) -> None:
    e = _engine()
    e.advance(T)
    e.segment(PLAIN, now=T + 1)
    calls = _evaluations(e, monkeypatch)
    e.append_events([{"customer_id": "d", "type": "view", "ts": T}])
    assert set(e.segment(PLAIN, now=T + 1).ids()) == {"a", "b", "d"}
    assert len(calls) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("advance"), st.integers(1, 2 * DAY)),
            st.tuples(st.just("view"), st.sampled_from("abcde"), st.integers(0, DAY)),
            st.tuples(
                st.just("ask"),
                st.sampled_from(QUERIES),
                st.integers(0, 2 * DAY),
                st.integers(1, 2 * DAY),
            ),
        ),
        max_size=25,
    )
)
def test_cached_answers_are_fresh_answers(ops) -> None:
    """Random steps, late views and questions (at the clock and ahead of it, then
    again after a step): the cached answer is always the uncached one."""
    e = _engine()
    e.advance(T)
    clock = T
    for op in ops:
        if op[0] == "advance":
            clock += op[1]
            e.advance(clock)
        elif op[0] == "view":
            e.append_events(
                [{"customer_id": op[1], "type": "view", "ts": clock - op[2]}]
            )
        else:
            now = clock + op[2]
            got = set(e.segment(op[1], now=now).ids())
            assert got == set(e.segment(op[1], now=now, cache=False).ids()), op
            # asked again after a step: from the cache or re-evaluated, still fresh
            clock += op[3]
            e.advance(clock)
            got = set(e.segment(op[1], now=now).ids())
            assert got == set(e.segment(op[1], now=now, cache=False).ids()), op


def test_clock_free_keys_follow_evictions() -> None:
    """The keys a clock step would keep never outgrow the result cache: an engine that
    is asked many different questions and never written to holds at most its size."""
    e = _engine()
    e.result_cache_size = 4
    for k in range(40):
        e.segment(PLAIN, now=T + k)
    assert len(e._results) == 4
    assert e._clock_free == set(e._results)
