"""ORs of ANDs with event counts (``segd.segments.or_groups``): the one-pass count of
all the groups, and the per-group finish when the pass does not pay, give the members
of the plain evaluation (every AND on its own), on demo data with a late tail of events
outside the contact index and an identity merge, for grouped and ungrouped shapes."""

from __future__ import annotations

import pytest

from segd import Engine
from segd.datagen import generate
from segd.native import groupscan
from segd.segments import or_groups
from segd.segments.dsl import parse

STRESS = " or ".join(
    f'(city = "{city}" and view(category = "{top}") count >= {k} in last 30 days '
    f"and orders_count >= {m})"
    for city, top, k, m in (
        ("Moscow", "Electronics", 3, 2),
        ("Saint Petersburg", "Fashion", 3, 2),
        ("Novosibirsk", "Home", 2, 1),
        ("Kazan", "Pets", 2, 1),
        ("Samara", "Kids", 1, 1),
        ("Ufa", "Electronics", 1, 3),
    )
)
QUERIES = [
    STRESS,
    # overlapping groups: the same contacts in several ANDs, bounds that admit zero
    '(city = "Moscow" and view(category = "Electronics") count >= 2 in last 30 days) '
    'or (city = "Moscow" and view(category = "Fashion") count 0..1 in last 30 days) '
    'or (gender = "f" and view() count >= 3 in last 30 days)',
    # different windows and logs: separate buckets; one AND with two filters stays out
    '(city = "Kazan" and view(category = "Pets") count >= 2 in last 30 days) '
    'or (city = "Kazan" and view(category = "Home") count >= 1 in last 90 days) '
    'or (city = "Ufa" and search(phrase = "iphone") in last 60 days) '
    'or (city = "Samara" and search(phrase = "laptop") count >= 1 in last 60 days) '
    'or (age >= 30 and view(category = "Auto", brand = "Nike") in last 30 days)',
    # an OR under an AND: the groups run over the AND's candidates
    'gender = "m" and ((city = "Moscow" and view(category = "Kids") count >= 1 '
    'in last 60 days) or (city = "Samara" and view(category = "Home") count >= 2 '
    "in last 60 days) or orders_count >= 4)",
    # a NOT operand and a "then no": not grouped, the rest still is
    '(city = "Moscow" and not email_open() in last 30 days '
    'and view(category = "Home") in last 30 days) '
    'or (city = "Kazan" and view(category = "Home") count >= 2 in last 30 days) '
    'or (city = "Ufa" and view(category = "Pets") count >= 1 in last 30 days) '
    'or (city = "Samara" and add_to_cart() in last 30 days then no order within 1d)',
]


@pytest.fixture(scope="module")
def engine():
    data = generate(3_000, seed=5)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    cut = data.events.num_rows - 3_000
    eng.load_events(data.events.slice(0, cut))
    for q in QUERIES:  # builds the contact indexes; the rest is their unindexed tail
        eng.segment(q, data.now, cache=False)
    eng.append_events(data.events.slice(cut))
    ids = data.contacts["customer_id"].to_pylist()
    eng.merge(ids[10], ids[11])
    return eng, data.now


def _members(eng, query, now) -> list[str]:
    return sorted(eng.segment(query, now, cache=False).ids())


@pytest.mark.parametrize("query", QUERIES)
def test_grouped_or_matches_each_and_alone(engine, query, monkeypatch) -> None:
    eng, now = engine
    monkeypatch.setattr(or_groups, "ENABLED", False)
    want = _members(eng, query, now)
    monkeypatch.setattr(or_groups, "ENABLED", True)
    calls = []
    real = groupscan.count_groups

    def spy(*args):
        calls.append(len(args[6]))
        return real(*args)

    monkeypatch.setattr(or_groups.groupscan, "count_groups", spy)
    monkeypatch.setattr(or_groups, "CANDIDATE_ROWS", 10**9)  # always one pass
    assert _members(eng, query, now) == want
    if query is STRESS:
        assert calls and want  # the pass ran, and found someone
    calls.clear()
    monkeypatch.setattr(or_groups, "CANDIDATE_ROWS", 0)  # never: finish each AND
    assert _members(eng, query, now) == want
    assert not calls


def test_buckets_group_only_the_shapes_the_pass_decides(engine) -> None:
    eng, now = engine
    plan = eng._compiler(now.timestamp()).compile(parse(QUERIES[2]))
    got = or_groups.buckets(plan.children())
    # the searches of 60 days (2 ANDs); the 30-day and 90-day views are alone in
    # their windows and the two-filter view is out
    assert [(b.etype, b.dim, len(b.groups)) for b in got] == [("search", "phrase", 2)]
    assert list(got[0].count_min) == [1, 1] and got[0].always == 0
    plan = eng._compiler(now.timestamp()).compile(parse(QUERIES[1]))
    (view,) = or_groups.buckets(plan.children())
    assert view.dim == "item" and len(view.groups) == 2  # `view()` has no column
    assert list(view.count_min) == [2, 0] and list(view.count_max) == [2**32 - 1, 1]
    plan = eng._compiler(now.timestamp()).compile(parse(QUERIES[4]))
    got = or_groups.buckets(plan.children())
    assert [len(b.groups) for b in got] == [2]  # the NOT and "then no" ANDs stay out
