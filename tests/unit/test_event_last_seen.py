"""Restricted "at least one order / email open in a window" by the contacts' last-seen
rollups (``EventNode._by_last_seen``) gives the members of the contact-major count,
with `now` at the end of the data (every candidate decided by the rollup), in the past
(candidates with later events go to the kernel), after late events, merges and a window
from the beginning of time (the rollup cannot decide: 0 means "none")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from segd import Engine
from segd.datagen import generate
from segd.segments import event_node, plan

QUERIES = [
    'city = "Moscow" and not order() in last 30 days',
    'city = "Kazan" and order() in last 60 days',
    'city = "Samara" and not email_open() in last 14 days',
    'city = "Ufa" and order() from 2020-01-01',
    'city = "Omsk" and not order()',
    'gender = "f" and not order() in last 400 days',
]


@pytest.fixture(scope="module")
def engine():
    data = generate(2_000, seed=5)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    cut = data.events.num_rows - 1_500
    eng.load_events(data.events.slice(0, cut))
    for q in QUERIES:  # builds the contact index; the rest becomes its unindexed tail
        eng.segment(q, data.now, cache=False)
    eng.append_events(data.events.slice(cut))
    ids = data.contacts.column("customer_id").to_pylist()
    for a, b in zip(ids[10:40:2], ids[11:41:2], strict=True):
        eng.merge(a, b)
    return eng, data.now


@pytest.mark.parametrize("days_back", [0, 20, 90])
@pytest.mark.parametrize("query", QUERIES)
def test_last_seen_matches_the_count(engine, query, days_back, monkeypatch) -> None:
    eng, now = engine
    at = now - timedelta(days=days_back)
    # every AND operand as a bitmap, and the plain event condition counted per
    # candidate (the path the rollup shortcut replaces)
    monkeypatch.setattr(plan, "CANDIDATE_FIRST_SHARE", 0.0)
    monkeypatch.setattr(event_node, "CONTACT_SEEK_COST", 0.0)
    real = event_node.EventNode._by_last_seen
    calls: list[bool] = []

    def spy(self, *args):
        out = real(self, *args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(event_node.EventNode, "_by_last_seen", lambda *a: None)
    want = eng.segment(query, at, cache=False).ids()
    counted: list[int] = []
    count = event_node.contactindex.count_of_contacts

    def count_spy(cids, *args):
        counted.append(len(cids))
        return count(cids, *args)

    monkeypatch.setattr(event_node.EventNode, "_by_last_seen", spy)
    monkeypatch.setattr(event_node.contactindex, "count_of_contacts", count_spy)
    got = eng.segment(query, at, cache=False).ids()
    assert sorted(got) == sorted(want)
    assert calls, "the restricted count did not run"
    if not query.endswith("order()"):
        assert all(calls), "the rollup did not decide"
        # in the past, the candidates with a later event are counted by the kernel
        # (`from` has no end: there is no later event)
        assert bool(counted) == (days_back > 0 and "in last" in query)
    else:  # all time: a last-seen of 0 means "none", the rollup cannot decide
        assert not any(calls)
