"""``Engine.warm`` builds each event log's contact-major index before the first query
(a server calls it before it reports ready), and changes no answer."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z
TYPES = ("view", "order", "add_to_cart", "email_open")
QUERIES = [
    "view() in last 7 days",
    "order() count >= 2 in last 30 days",
    "add_to_cart() then no order() within 1d",
    "view() in last 3 days and not email_open() in last 14 days",
    "order() in last 30 days or add_to_cart() count >= 2 in last 7 days",
]

event = st.tuples(
    st.integers(0, 30), st.sampled_from(TYPES), st.integers(0, 20 * DAY)
).map(
    lambda t: {
        "customer_id": f"c{t[0]}",
        "type": t[1],
        "ts": T - t[2],
        "item_id": f"i{t[0] % 4}",
        **({"amount": 1.0 + t[0]} if t[1] == "order" else {}),
    }
)


def _engine(events: list[dict]) -> Engine:
    e = Engine()
    e.append_events(events)
    return e


def test_warm_builds_every_log_index_once() -> None:
    e = _engine(
        [
            {"customer_id": "a", "type": "view", "ts": T - 5, "item_id": "x"},
            {"customer_id": "b", "type": "order", "ts": T - DAY, "amount": 3.0},
        ]
    )
    logs = e.store.logs
    assert all(log._ci is None for log in logs.values())
    seconds = e.warm()
    assert set(seconds) == {"view", "order"}
    assert all(s >= 0 for s in seconds.values())
    built = {t: log._ci for t, log in logs.items()}
    for t, log in logs.items():
        assert built[t] is not None
        assert log._ci_limit == log.n
    e.warm()  # current indexes are kept, not rebuilt
    assert all(log._ci is built[t] for t, log in logs.items())


def test_warm_on_an_empty_engine() -> None:
    assert Engine().warm() == {}


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=60), st.lists(event, max_size=20))
def test_warm_changes_no_answer(first: list[dict], later: list[dict]) -> None:
    warmed, cold = _engine(first), _engine(first)
    warmed.warm()
    for e in (warmed, cold):
        if later:
            e.append_events(later)  # an unindexed tail after the warm-up
    for q in QUERIES:
        a = warmed.segment(q, now=T, cache=False).ids()
        b = cold.segment(q, now=T, cache=False).ids()
        assert np.array_equal(np.sort(np.asarray(a)), np.sort(np.asarray(b))), q
