"""Property tests of explain: random and / or / not trees over a small shop.

The oracle is the engine's own segment evaluation, an independent path (AND with
candidates, NOT as set differences, memoised repeats): explain evaluates each node once
over the whole base, so for every node its count must equal the members of that node's
DSL text evaluated on its own, its verdict must be the contact's membership, and the
root's count must be the segment's. Profiles (example counts) come from conftest.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd import Engine

NOW = int(datetime(2025, 6, 15, tzinfo=UTC).timestamp())
DAY = 86_400
N = 40


@pytest.fixture(scope="module")
def eng() -> Engine:
    e = Engine()
    e.load_items(
        [
            {"item_id": f"i{k}", "category": ("Pets/Cats", "Outdoor/Tents")[k % 2],
             "brand": ("Acme", "Zed", "Nike")[k % 3], "price": 10.0 * k}
            for k in range(6)
        ]
    )  # fmt: skip
    e.load_contacts(
        [
            {"customer_id": f"c{k:02d}", "gender": (None, "m", "f")[k % 3],
             "rating": None if k % 7 == 0 else k % 10, "city": ("Kazan", "Omsk")[k % 2]}
            for k in range(N)
        ]
    )  # fmt: skip
    events = []
    for k in range(N):
        for j in range(k % 5):
            events.append(
                {"customer_id": f"c{k:02d}", "ts": NOW - (k + 3 * j) * DAY,
                 "type": ("view", "order")[(k + j) % 2], "item_id": f"i{(k + j) % 6}",
                 "amount": float(k + j), "order_id": f"o{k}-{j}"}
            )  # fmt: skip
    e.append_events(events)
    return e


LEAVES = [
    'gender = "m"',
    "rating >= 5",
    "rating is null",
    'city = "Kazan"',
    "view() in last 30 days",
    'order(category = "Pets") count >= 1',
    "orders_count >= 1",
    'view(brand in ("Zed", "Nike")) count 2..3',
]


def trees() -> st.SearchStrategy[str]:
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            children.map(lambda c: f"not ({c})"),
            st.lists(children, min_size=2, max_size=3).map(
                lambda cs: " and ".join(f"({c})" for c in cs)
            ),
            st.lists(children, min_size=2, max_size=3).map(
                lambda cs: " or ".join(f"({c})" for c in cs)
            ),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=6)


@given(query=trees(), who=st.integers(0, N - 1))
def test_every_node_counts_its_own_members_and_verdicts_agree(eng, query, who):
    cid = f"c{who:02d}"
    out = eng.explain(query, cid, NOW)
    members = set(eng.segment(query, NOW, cache=False).ids())
    assert out.count == out.root.count == len(members)
    assert out.member == (cid in members)
    for node in out.root.walk():
        own = set(eng.segment(node.label, NOW, cache=False).ids())
        assert node.count == len(own), node.label
        assert node.matched == (cid in own), node.label
        if node.kind in ("and", "or", "not"):
            assert node.children and node.evidence is None
            assert node.operator == node.kind
        else:
            assert node.evidence is not None and node.children == ()
    for node in out.root.walk():
        if node.kind == "not":
            assert node.count == out.contacts - node.children[0].count


@given(query=trees())
def test_profile_counts_the_same_members(eng, query):
    prof = eng.profile(query, NOW)
    assert prof.count == eng.count(query, NOW, cache=False)
    assert prof.steps and prof.steps[0].count == prof.count
