"""The static pass of live segments (segd.livestatic): which operands it holds, its bits
against a plain per-contact oracle after upserts, new contacts and merges, and live
members that stay exact when writes and time steps are pruned by it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.livestatic import StaticPass, is_static, split
from segd.segments.dsl import parse
from segd.segments.pairs import evaluate_conjunction, evaluate_pairs_reference

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z
QUERY = (
    'city = "Kazan" and score >= 3 and not tags contains "vip" and '
    "view() count >= 2 in last 7 days and age >= 18"
)
PEOPLE = [
    ("a", "Kazan", 3, ["x"], "1990-01-05"),
    ("b", "Kazan", 1, [], "1990-01-05"),
    ("c", "Moscow", 5, [], "2000-06-01"),
    ("d", "Kazan", 4, ["vip"], "1980-02-29"),
    ("e", None, 4, [], None),
    ("f", "Kazan", 5, [], "2008-01-03"),  # 17 at T, 18 on 2025-01-03
]


def _engine() -> Engine:
    e = Engine(result_cache_size=0)
    e.upsert_contacts(
        [
            {"customer_id": c, "city": city, "score": s, "tags": t, "birth_date": b}
            for c, city, s, t, b in PEOPLE
        ],
        schema={"birth_date": "timestamp", "tags": "tags"},
    )
    e.append_events(
        [
            {"customer_id": c, "type": "view", "ts": T - k * 3600}
            for c in "abcdef"
            for k in (1, 2)
        ]
    )
    return e


def _plan(e: Engine, query: str | dict):
    if isinstance(query, str):
        query = parse(query)
    return e._compiler(float(T)).compile(query)


def _oracle(e: Engine) -> set[str]:
    return set(e.segment(QUERY, now=e.clock, cache=False).ids())


def test_split_keeps_attribute_operands_only() -> None:
    e = _engine()
    plan = _plan(e, QUERY)
    static, rest = split(plan)
    assert sorted(type(p).__name__ for p in static) == [
        "CategoryAttr",
        "NotNode",
        "NumericAttr",
    ]
    assert sorted(type(p).__name__ for p in rest) == ["AgeAttr", "EventNode"]
    assert all(is_static(p) for p in static)
    assert split(_plan(e, "view() in last 7 days")) is None
    assert split(_plan(e, 'city = "a" or score >= 1')) is None


def test_conjunction_is_the_and_of_its_parts() -> None:
    e = _engine()
    plan = _plan(e, QUERY)
    static, rest = split(plan)
    cids = np.arange(e.store.n_contacts, dtype=np.uint32).repeat(3)
    nows = np.tile([float(T - DAY), float(T), float(T + 3 * DAY)], len(PEOPLE))
    want = evaluate_pairs_reference(plan, e.store, cids, nows)
    got = evaluate_conjunction(static, e.store, cids, nows) & evaluate_conjunction(
        rest, e.store, cids, nows
    )
    assert got.tolist() == want.tolist()
    assert evaluate_conjunction([], e.store, cids, nows).all()
    with pytest.raises(ValueError):
        evaluate_conjunction(static, e.store, np.array([99], np.uint32), [0.0])


def test_bits_follow_upserts_new_contacts_and_redefinitions() -> None:
    e = _engine()
    sp = StaticPass()
    name = "s"
    e.create_segment(name, QUERY)

    def bits() -> list[bool]:
        static = split(e._compiler(float(T)).compile({"segment": name}))[0]
        cids = np.arange(e.store.n_contacts, dtype=np.uint32)
        return sp.passes(name, static, e.store, cids).tolist()

    def want() -> list[bool]:
        static = split(e._compiler(float(T)).compile({"segment": name}))[0]
        cids = np.arange(e.store.n_contacts, dtype=np.uint32)
        return evaluate_conjunction(static, e.store, cids, np.zeros(len(cids))).tolist()

    assert bits() == want() == [True, False, False, False, False, True]
    e.upsert_contacts([{"customer_id": "b", "score": 9}])
    e.upsert_contacts([{"customer_id": "a", "city": "Omsk"}])
    stale = bits()
    assert stale != want()  # nobody told the pass: rows are repaired on touches only
    sp.touched(np.asarray(e.store.contacts.lookup(pa.array(["a", "b"])), np.uint32))
    assert bits() == want() == [False, True, False, False, False, True]
    e.upsert_contacts([{"customer_id": "g", "city": "Kazan", "score": 7}])
    assert bits() == want()  # new contacts are computed when asked
    assert bits()[-1] is True
    e.update_segment(name, 'city = "Moscow" and view() in last 7 days')
    assert bits() == want() == [False, False, True, False, False, False, False]
    # many segments: slots beyond one 64-bit word
    for k in range(70):
        static = split(_plan(e, f"score >= {k % 8} and view() in last 1 days"))[0]
        got = sp.passes(f"x{k}", static, e.store, np.arange(7, dtype=np.uint32))
        assert (
            got.tolist()
            == evaluate_conjunction(
                static, e.store, np.arange(7, dtype=np.uint32), np.zeros(7)
            ).tolist()
        )
    sp.forget("x3")
    assert bits() == want()


def test_live_members_stay_exact_with_the_pass() -> None:
    e = _engine()
    e.create_segment("s", QUERY)
    e.advance(T)
    assert set(e.members("s").ids()) == _oracle(e) == {"a"}
    # attributes change: a contact enters through the pass, another leaves
    e.upsert_contacts(
        [{"customer_id": "b", "score": 5}, {"customer_id": "a", "tags": ["vip"]}]
    )
    assert set(e.members("s").ids()) == _oracle(e) == {"b"}
    # events of contacts that fail the pass change nothing, of those that pass do
    e.append_events(
        [
            {"customer_id": "c", "type": "view", "ts": T},
            {"customer_id": "h", "type": "view", "ts": T},  # new contact, no attributes
        ]
    )
    assert set(e.members("s").ids()) == _oracle(e)
    e.upsert_contacts(
        [
            {
                "customer_id": "h",
                "city": "Kazan",
                "score": 3,
                "birth_date": "1990-01-01",
            }
        ]
    )
    e.append_events(
        [{"customer_id": "h", "type": "view", "ts": T - k} for k in (10, 20)]
    )
    assert set(e.members("s").ids()) == _oracle(e) == {"b", "h"}
    # time: f turns 18 on 2025-01-03 but its views left the window by then
    e.append_events(
        [{"customer_id": "f", "type": "view", "ts": T + 2 * DAY + k} for k in (1, 2)]
    )
    for step in (3600, DAY, DAY + 5, 3 * DAY, 30 * DAY):
        e.advance(e.clock + step)
        assert set(e.members("s").ids()) == _oracle(e)
    # a merge into a contact that fails the pass
    e.append_events(
        [
            {"customer_id": c, "type": "view", "ts": int(e.clock) - 60 * k}
            for c in "bh"
            for k in (1, 2)
        ]
    )
    assert set(e.members("s").ids()) == _oracle(e) == {"b", "h"}
    e.merge("c", "h")
    assert set(e.members("s").ids()) == _oracle(e) == {"b"}
    got = [(r["customer_id"], r["change"]) for r in e.segment_changes("s").to_pylist()]
    assert ("h", "exited") in got


@settings(max_examples=200, deadline=None)
@given(
    halves=st.lists(
        st.integers(0, 2 * 60 * 86_400), max_size=60
    ),  # keys beyond 2**24 too
    exits=st.lists(st.booleans(), min_size=60, max_size=60),
    base=st.sampled_from([0.0, 1.7e9]),
)
def test_time_order_is_a_stable_sort_by_moment_then_exit(halves, exits, base) -> None:
    from segd.live import _time_order

    pts = base + np.array(halves, np.float64) / 2
    ex = np.array(exits[: len(pts)], bool)
    want = np.argsort(4.0 * pts + ex, kind="stable")
    assert _time_order(pts, ex).tolist() == want.tolist()
