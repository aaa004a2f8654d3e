"""An AND's first event leaf run within its bitmap operands (``EventNode.run_within``,
``AndNode._first_within``): the same members as with the switch off, and as the
operands' own answers intersected one by one; it does run where it should."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyroaring import BitMap

import segd.segments.event_node as event_node
from segd import Engine
from segd.bench.queries import suite
from segd.datagen import generate

OUTDOOR = '"Outdoor/Tents", "Outdoor/Sleeping bags", "Outdoor/Fishing rods"'
CITIES = '"Moscow", "Saint Petersburg", "Novosibirsk"'
# (AND operands as DSL; the first is the event leaf the others restrict)
CONJUNCTIONS = [
    [f"order(category in ({OUTDOOR})) in last 90 days", f"city in ({CITIES})",
     'gender = "m"'],
    [f"order(category in ({OUTDOOR})) in last 365 days", 'gender = "f"'],
    [f"order(category in ({OUTDOOR})) in last 365 days", 'city in ("Moscow")',
     "age >= 30"],
    [f"order(category in ({OUTDOOR})) in last 365 days", 'city in ("Atlantis")'],
    [f"order(category in ({OUTDOOR})) in last 365 days", 'gender = "m"',
     "not email_open() in last 14 days"],
    ['order(category = "Fashion") in last 365 days', f"city in ({CITIES})",
     "email_subscribed = true"],
]  # fmt: skip


@pytest.fixture(scope="module")
def engine():
    data = generate(4_000, seed=8)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    ids = data.contacts["customer_id"].to_pylist()
    for a, b in ((ids[3], ids[4]), (ids[20], ids[21]), (ids[40], ids[41])):
        eng.merge(a, b)
    return eng, data.now


def _members(eng: Engine, dsl: str, now) -> BitMap:
    return BitMap(eng.segment(dsl, now, cache=False).cids())


@pytest.fixture
def spy(monkeypatch):
    """How many times run_within answered (not None)."""
    answered = []
    real = event_node.EventNode.run_within

    def counting(self, ctx, bitmaps):
        got = real(self, ctx, bitmaps)
        if got is not None:
            answered.append(len(got))
        return got

    monkeypatch.setattr(event_node.EventNode, "run_within", counting)
    monkeypatch.setattr(event_node, "WITHIN_MIN_SHARE", 10_000_000)  # small data
    return answered


@pytest.mark.parametrize("parts", CONJUNCTIONS)
def test_same_members_as_the_operands_intersected(engine, spy, monkeypatch, parts):
    eng, now = engine
    dsl = " and ".join(parts)
    got = _members(eng, dsl, now)
    # an unknown city leads the AND (it estimates 0 members): nothing to restrict
    assert spy or "Atlantis" in dsl, "run_within did not answer"
    one_by_one = BitMap.intersection(*(_members(eng, p, now) for p in parts))
    assert got == one_by_one
    monkeypatch.setattr(event_node, "RUN_WITHIN", False)
    assert _members(eng, dsl, now) == got


def test_suite_queries_agree_with_the_switch_off(engine, spy, monkeypatch):
    eng, now = engine
    queries = [q for q in suite(now) if not q.segments and not q.rfm_as_of_now]
    on = {q.name: _members(eng, q.dsl, now) for q in queries}
    assert spy  # the reference and men_outdoor take the path
    monkeypatch.setattr(event_node, "RUN_WITHIN", False)
    off = {q.name: _members(eng, q.dsl, now) for q in queries}
    assert on == off
    assert on["reference"] or on["men_outdoor"]


def test_merged_contacts_never_match(engine, spy):
    eng, now = engine
    dsl = " and ".join(CONJUNCTIONS[1])
    got = _members(eng, dsl, now)
    merged = eng.store.contacts.merged
    assert merged and not (got & merged)


def test_not_used_for_few_rows_or_while_profiling(engine, monkeypatch):
    eng, now = engine
    answered = []
    real = event_node.EventNode.run_within
    monkeypatch.setattr(
        event_node.EventNode,
        "run_within",
        lambda self, ctx, b: answered.append(real(self, ctx, b)) or answered[-1],
    )
    dsl = " and ".join(CONJUNCTIONS[1])
    monkeypatch.setattr(event_node, "WITHIN_MIN_SHARE", 1)  # rows < contacts: too few
    eng.segment(dsl, now, cache=False).count()
    assert answered and all(a is None for a in answered)
    answered.clear()
    monkeypatch.setattr(event_node, "WITHIN_MIN_SHARE", 10_000_000)
    eng.profile(dsl, now)  # explain lists every operand: the plain path
    assert all(a is None for a in answered)
    past = now - timedelta(days=3000)  # no rows in the window: not applicable
    answered.clear()
    assert eng.segment(dsl, past, cache=False).count() == 0
