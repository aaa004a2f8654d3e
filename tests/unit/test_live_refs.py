"""References to dynamic segments in a query asked at the engine clock are answered from
the live members (``Engine._live_members_at``), at any other moment by inlining the
segment's plan; both give the same members."""

from __future__ import annotations

import pytest

from segd import Engine
from segd.errors import TooComplex
from segd.segments.limits import MAX_CONDITIONS

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z


def ids(e: Engine, query: str, now: float, live_refs: bool = True) -> set[str]:
    e.live_refs = live_refs
    try:
        return set(e.segment(query, now=now, cache=False).ids())
    finally:
        e.live_refs = True


def steps(e: Engine, query: str, now: float) -> list[str]:
    return [s.kind for s in e.profile(query, now=now).steps]


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.upsert_contacts(
        [{"customer_id": c, "city": city} for c, city in [("a", "Omsk"), ("b", "Tver")]]
        + [{"customer_id": "c", "city": "Omsk"}]
    )
    e.append_events(
        [
            {"customer_id": "a", "type": "view", "ts": T - DAY},
            {"customer_id": "b", "type": "view", "ts": T - 2 * DAY},
            {"customer_id": "c", "type": "order", "ts": T - DAY, "amount": 5.0},
        ]
    )
    e.create_segment("viewers", "view() in last 7 days")
    return e


def test_at_the_clock_the_live_members_answer(eng: Engine) -> None:
    query = 'in segment "viewers" and city = "Omsk"'
    eng.advance(T)
    assert ids(eng, query, T) == ids(eng, query, T, live_refs=False) == {"a"}
    # the plan holds the members, not the segment's event condition
    assert "event" not in steps(eng, query, T)
    assert "event" in steps(eng, query, T + 1)  # another moment: inlined
    eng.live_refs = False
    assert "event" in steps(eng, query, T)


def test_results_follow_writes_and_clock_steps(eng: Engine) -> None:
    query = 'in segment "viewers"'
    eng.advance(T)
    before = eng.segment(query, now=T, cache=False)
    assert set(before.ids()) == {"a", "b"}
    eng.append_events([{"customer_id": "c", "type": "view", "ts": T - 1}])
    assert ids(eng, query, T) == ids(eng, query, T, live_refs=False) == {"a", "b", "c"}
    assert set(before.ids()) == {"a", "b"}  # an earlier answer is a copy
    eng.advance(T + 5 * DAY + 1)  # b's view (T - 2 d) has left the 7 days
    now = T + 5 * DAY + 1
    assert ids(eng, query, now) == ids(eng, query, now, live_refs=False) == {"a", "c"}
    # a moment before the clock is inlined: the data as it is, at that moment
    assert ids(eng, query, T) == {"a", "b", "c"}


def test_nested_references_and_not(eng: Engine) -> None:
    eng.create_segment("omsk_viewers", 'in segment "viewers" and city = "Omsk"')
    eng.create_segment("quiet", 'not in segment "omsk_viewers"')
    eng.advance(T)
    for query in ('in segment "quiet"', 'in segment "quiet" or orders_count >= 1'):
        got = ids(eng, query, T)
        assert got == ids(eng, query, T, live_refs=False)
    assert ids(eng, 'in segment "quiet"', T) == {"b", "c"}


def test_static_segments_and_unset_clock(eng: Engine) -> None:
    eng.create_segment("frozen", "view() in last 7 days", static=True, now=T)
    # no clock yet: dynamic references are inlined
    assert ids(eng, 'in segment "viewers"', T) == {"a", "b"}
    assert "event" in steps(eng, 'in segment "viewers"', T)
    eng.advance(T)
    assert ids(eng, 'in segment "frozen" and in segment "viewers"', T) == {"a", "b"}


def test_limits_do_not_depend_on_the_clock(eng: Engine) -> None:
    """The referenced plan is still compiled: a query too large inline is too large at
    the clock too."""
    big = " or ".join(f"orders_count >= {k}" for k in range(MAX_CONDITIONS - 1))
    eng.create_segment("big", big)
    eng.advance(T)
    query = 'in segment "big" and in segment "viewers" and in segment "viewers"'
    for now in (T, T + 1):
        with pytest.raises(TooComplex):
            eng.segment(query, now=now, cache=False)
    assert ids(eng, 'in segment "big"', T) == ids(eng, 'in segment "big"', T + 1)
