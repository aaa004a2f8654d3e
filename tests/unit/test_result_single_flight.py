"""Concurrent callers asking the same (query, now) share one evaluation (single flight):
the tail latency of a busy second boundary, when every client misses the result cache at
once. A failed leader must not hand its error (or nothing) to the others, and a
different `now` or query is a different flight."""

from __future__ import annotations

import threading
import time

from segd import Engine

NOW = 1_735_689_600.0


def engine_counting_evaluations(delay: float) -> tuple[Engine, list[tuple]]:
    eng = Engine()
    eng.append_events(
        [
            {"customer_id": f"c{i}", "ts": int(NOW) - 60 * i, "type": "view"}
            for i in range(50)
        ]
    )
    calls: list[tuple] = []
    real = eng._evaluate_warned

    def slow(ast, now_s, deadline, profile):
        calls.append((repr(ast), now_s))
        time.sleep(delay)
        return real(ast, now_s, deadline, profile)

    eng._evaluate_warned = slow  # type: ignore[method-assign]
    return eng, calls


def run_together(fn, n: int) -> list:
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def one(k: int) -> None:
        barrier.wait()
        out[k] = fn(k)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_same_query_and_now_is_evaluated_once():
    eng, calls = engine_counting_evaluations(0.2)
    q = "view() in last 1 hours"
    counts = run_together(lambda k: eng.segment(q, NOW).count(), 8)
    assert len(calls) == 1
    assert len(set(counts)) == 1
    assert counts[0] == eng.segment(q, NOW, cache=False).count()


def test_different_now_or_query_are_separate_flights():
    eng, calls = engine_counting_evaluations(0.1)
    queries = ["view() in last 1 hours", "view() in last 2 hours"]
    run_together(lambda k: eng.segment(queries[k % 2], NOW + (k // 2) % 2), 8)
    assert len(calls) == 4  # 2 queries x 2 moments


def test_a_failed_leader_lets_each_waiter_evaluate_on_its_own():
    eng = Engine()
    eng.append_events([{"customer_id": "a", "ts": int(NOW) - 5, "type": "view"}])
    real = eng._evaluate_warned
    state = {"calls": 0}
    lock = threading.Lock()

    def flaky(ast, now_s, deadline, profile):
        with lock:
            state["calls"] += 1
            first = state["calls"] == 1
        time.sleep(0.1)
        if first:
            raise RuntimeError("leader failed")
        return real(ast, now_s, deadline, profile)

    eng._evaluate_warned = flaky  # type: ignore[method-assign]

    def count(k: int):
        try:
            return eng.segment("view()", NOW).count()
        except RuntimeError as exc:
            return str(exc)

    out = run_together(count, 4)
    assert sorted(out, key=str) == sorted([1, 1, 1, "leader failed"], key=str)
    assert not eng._inflight


def test_segment_references_are_prepared_once_and_stay_checked():
    import pytest

    from segd.errors import InvalidQuery
    from segd.segments.query import prepare

    first = prepare({"segment": "vip"})
    assert prepare({"segment": "vip"}) is first
    assert first.ast == {"segment": "vip"} and first.references == {"vip"}
    for bad in ({"segment": ""}, {"segment": 3}, {"segment": "vip", "x": 1}):
        with pytest.raises(InvalidQuery):
            prepare(bad)


def test_a_changed_saved_segment_is_counted_anew_through_its_reference():
    eng = Engine()
    eng.append_events(
        [
            {
                "customer_id": f"c{i}",
                "ts": int(NOW) - 86_400 * 3 * i - 1,
                "type": "view",
            }
            for i in range(10)
        ]
    )
    wide, narrow = "view() in last 20 days", "view() in last 1 days"
    eng.create_segment("recent", wide)
    assert eng.count({"segment": "recent"}, NOW) == eng.count(wide, NOW, cache=False)
    eng.update_segment("recent", narrow)
    got = eng.count({"segment": "recent"}, NOW)
    assert got == eng.count(narrow, NOW, cache=False) < eng.count(wide, NOW)


def wait_refreshes(eng: Engine) -> None:
    for _ in range(500):
        if not eng._refreshing:
            return
        time.sleep(0.01)
    raise AssertionError("refresh ahead did not finish")


def test_a_query_late_in_its_second_is_refreshed_ahead_for_the_next():
    eng, calls = engine_counting_evaluations(0.0)
    q = "view() in last 1 hours"
    prepared = eng.prepare(q)
    second = float(int(time.time()) - 1)  # a second that is over: "late" in it
    eng._refresh_ahead(prepared, second)
    wait_refreshes(eng)
    assert calls == [(repr(prepared.ast), second + 1)]
    ahead = eng.segment(q, second + 1)  # served from what the refresh cached
    assert len(calls) == 1
    assert ahead.ids() == eng.segment(q, second + 1, cache=False).ids()
    # once per query and second
    eng._refresh_ahead(prepared, second)
    wait_refreshes(eng)
    assert len(calls) == 2  # only the cache=False evaluation above


def test_early_in_a_second_nothing_is_refreshed_and_writes_drop_refreshed_results():
    eng, calls = engine_counting_evaluations(0.0)
    prepared = eng.prepare("view()")
    eng._refresh_ahead(prepared, time.time() + 10)  # "now" still far from over
    wait_refreshes(eng)
    assert calls == []
    second = float(int(time.time()) - 1)
    eng._refresh_ahead(prepared, second)
    wait_refreshes(eng)
    before = eng.segment("view()", second + 1).count()
    eng.append_events([{"customer_id": "new", "ts": int(second) - 5, "type": "view"}])
    assert eng.segment("view()", second + 1).count() == before + 1


def test_server_clock_calls_refresh_ahead_only_without_explicit_now():
    eng, calls = engine_counting_evaluations(0.0)
    seen = []
    eng._refresh_ahead = lambda prepared, now_s: seen.append(now_s)  # type: ignore[method-assign]
    eng.segment("view()", NOW)
    assert seen == []
    eng.segment("view()")
    assert len(seen) == 1 and seen[0] == int(seen[0])
