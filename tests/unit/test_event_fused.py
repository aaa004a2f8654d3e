"""The fused candidate count of event conditions (EventFilters.bind(fused=True) +
contactindex.count_filtered_of_contacts) gives the same members as the unfused path
(rows of the candidates, then the event scan), on demo data with a late tail of events
outside the contact index."""

from __future__ import annotations

import pytest

from segd import Engine
from segd.datagen import generate
from segd.segments import event_node, plan

QUERIES = [
    'city = "Moscow" and view(category = "Electronics") count >= 2 in last 30 days',
    'city = "Samara" and view(category = "Pets") count 1..2 in last 90 days',
    'city = "Chelyabinsk" and order(category in ("Outdoor", "Home")) in last 180 days',
    'city = "Kazan" and view(category = "Fashion") count 0..1 in last 60 days',
    'city = "Ufa" and not view(category = "Auto") in last 30 days',
]


@pytest.fixture(scope="module")
def engine():
    data = generate(2_000, seed=11)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    cut = data.events.num_rows - 2_000
    eng.load_events(data.events.slice(0, cut))
    for q in QUERIES:  # builds the contact index; the rest becomes its unindexed tail
        eng.segment(q, data.now, cache=False)
    eng.append_events(data.events.slice(cut))
    return eng, data.now


@pytest.mark.parametrize("query", QUERIES)
def test_fused_matches_unfused(engine, query, monkeypatch) -> None:
    eng, now = engine
    real = event_node.EventFilters.bind
    calls = []

    def unfused(self, log, r0, r1, cand, n, fused=False):
        return real(self, log, r0, r1, cand, n)

    def spy(self, log, r0, r1, cand, n, fused=False):
        out = real(self, log, r0, r1, cand, n, fused)
        calls.append(
            (cand is not None, out is not None and out[0] is event_node.CONTACTS)
        )
        return out

    # Candidates' own rows always look cheapest, and every AND operand is evaluated
    # as a bitmap (no per-candidate pairs).
    monkeypatch.setattr(event_node, "CONTACT_SEEK_COST", 0.0)
    monkeypatch.setattr(event_node, "CONTACT_ROW_COST", 0.0)
    monkeypatch.setattr(event_node, "GATHER_COST", 1e9)
    monkeypatch.setattr(plan, "CANDIDATE_FIRST_SHARE", 0.0)
    monkeypatch.setattr(event_node.EventFilters, "bind", unfused)
    want = eng.segment(query, now, cache=False).ids()
    monkeypatch.setattr(event_node.EventFilters, "bind", spy)
    got = eng.segment(query, now, cache=False).ids()
    assert sorted(got) == sorted(want)
    assert (True, True) in calls, calls  # the fused path ran
