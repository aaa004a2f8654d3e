"""A saved segment asked on the server's clock just after a second starts, before the
server's clock loop has stepped the engine clock to that second, waits for the step and
is answered from the live members (``Engine._await_clock_step``) instead of a full
evaluation, which held the GIL for milliseconds once a second. Exact either way: every
answer equals a fresh evaluation at the same second."""

from __future__ import annotations

import math
import threading
import time

import pytest

from segd import Engine
from segd import core as core_module
from segd.server.live_clock import TICK_AFTER_S, next_tick_in

DAY = 86_400
QUERY = "view() in last 1 days"


def _start_of_a_second() -> float:
    """A whole second T with the wall clock early in it (a test has ~0.6 s within T)."""
    while True:
        now = time.time()
        if now - math.floor(now) < 0.3:
            return float(math.floor(now))
        time.sleep(1.0 - (now - math.floor(now)) + 0.01)


def _engine(t: float) -> tuple[Engine, list[float | None]]:
    """Views that leave `in last 1 days` between T - 1 and T (and one that stays); the
    engine clock at T - 1, just stepped. Each evaluation notes the clock it ran at."""
    eng = Engine()
    eng.append_events(
        [
            {"customer_id": "leaves", "type": "view", "ts": int(t) - 1 - DAY},
            {"customer_id": "stays", "type": "view", "ts": int(t) - 100},
        ]
    )
    eng.create_segment("recent", QUERY)
    eng.advance(t - 2)
    eng.advance(t - 1)
    clocks: list[float | None] = []
    real = eng._evaluate_warned

    def noting(ast, now_s, deadline, profile):
        clocks.append(eng.clock)
        return real(ast, now_s, deadline, profile)

    eng._evaluate_warned = noting  # type: ignore[method-assign]
    # late in T (a busy machine) a refresh of T + 1 would add an evaluation: not here
    eng._refresh_ahead = lambda prepared, now_s: None  # type: ignore[method-assign]
    return eng, clocks


def test_a_saved_segment_waits_for_the_step_and_is_the_live_members(monkeypatch):
    monkeypatch.setattr(core_module, "CLOCK_STEP_WAIT_S", 0.5)  # a busy CI machine
    t = _start_of_a_second()
    eng, clocks = _engine(t)
    assert eng.members("recent").count() == 2  # at T - 1
    stepper = threading.Timer(0.1, eng.advance, args=(t,))
    stepper.start()
    started = time.monotonic()
    got = eng.segment({"segment": "recent"})
    waited = time.monotonic() - started
    stepper.join()
    assert got.now_s == t
    assert 0.09 <= waited < core_module.CLOCK_STEP_WAIT_S
    assert clocks == [t]  # evaluated once, after the step: from the live members
    assert got.ids() == ["stays"]
    assert got.ids() == eng.segment(QUERY, t, cache=False).ids()


def test_no_wait_for_a_clock_nobody_drives():
    t = _start_of_a_second()
    eng, clocks = _engine(t)
    eng.live.stepped_at = time.monotonic() - 10 * core_module.CLOCK_DRIVEN_S
    started = time.monotonic()
    got = eng.segment({"segment": "recent"})
    assert time.monotonic() - started < 0.2  # the wait would be 0.25 s
    assert clocks == [t - 1]  # evaluated in full at T, the clock still at T - 1
    assert got.ids() == ["stays"] == eng.segment(QUERY, t, cache=False).ids()


def test_no_wait_for_text_queries_or_an_explicit_now():
    t = _start_of_a_second()
    eng, clocks = _engine(t)
    started = time.monotonic()
    assert eng.segment(QUERY).ids() == ["stays"]
    assert eng.segment({"segment": "recent"}, t).ids() == ["stays"]
    assert time.monotonic() - started < 0.2  # the wait would be 0.25 s
    assert clocks == [t - 1, t - 1]


def test_a_step_that_never_comes_costs_the_bounded_wait_then_evaluates():
    t = _start_of_a_second()
    eng, clocks = _engine(t)
    started = time.monotonic()
    got = eng.segment({"segment": "recent"})
    waited = time.monotonic() - started
    assert core_module.CLOCK_STEP_WAIT_S <= waited < 0.7
    assert clocks == [t - 1]
    assert got.ids() == ["stays"]


def test_the_call_deadline_bounds_the_wait():
    t = _start_of_a_second()
    eng, _ = _engine(t)
    started = time.monotonic()
    got = eng.segment({"segment": "recent"}, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - started < 0.2  # half of it waited, then evaluated
    assert got.ids() == ["stays"]


def test_refresh_ahead_skips_live_refs_on_a_driven_clock_only():
    eng = Engine()
    eng.append_events([{"customer_id": "a", "type": "view", "ts": 1_000}])
    eng.create_segment("recent", QUERY)
    second = float(math.floor(time.time()) - 1)  # a second that is over: late in it
    eng.advance(second)
    started: list = []
    eng._refresh_one = lambda key, ast: started.append(key)  # type: ignore[method-assign]
    eng._refresh_ahead(eng.prepare({"segment": "recent"}), second)
    assert started == []  # the next second is the live members after the step
    eng._refresh_ahead(eng.prepare(QUERY), second)
    eng.live.stepped_at = time.monotonic() - 10 * core_module.CLOCK_DRIVEN_S
    eng._refresh_ahead(eng.prepare({"segment": "recent"}), second)
    for _ in range(200):
        if len(started) == 2:
            break
        time.sleep(0.01)
    assert [key[1] for key in started] == [second + 1, second + 1]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (100.0, TICK_AFTER_S),
        (100.0 + TICK_AFTER_S / 2, TICK_AFTER_S / 2),
        (100.0 + TICK_AFTER_S, 1.0),
        (100.5, 0.5 + TICK_AFTER_S),
        (100.999, 0.001 + TICK_AFTER_S),
    ],
)
def test_clock_steps_come_just_after_whole_seconds(now, expected):
    assert next_tick_in(now) == pytest.approx(expected, abs=1e-9)
