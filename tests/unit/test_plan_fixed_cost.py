"""The per-query fixed cost (issue 15, `plan`): what planning memoises stays exact.

Planning reuses work between queries: structural keys computed bottom-up, dictionary
masks and the category tree per dictionary size, the contact sample per contact count.
Each test changes the data between two identical queries and checks the fresh answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from segd import Engine
from segd.native.idmap import IdMap
from segd.predicates import dictionary_mask
from segd.segments.ast import canonical_key, subtree_keys, walk
from segd.segments.hints import category_tree
from tests.property.strategies import asts

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


@settings(max_examples=150, deadline=None)
@given(asts(max_depth=5))
def test_subtree_keys_equal_canonical_keys(ast: dict) -> None:
    keys = subtree_keys(ast)
    for node in walk(ast):
        assert keys[id(node)] == canonical_key(node)


def test_dictionary_mask_follows_a_growing_dictionary() -> None:
    d = IdMap()
    d.get_or_add(["Moscow"])
    first = dictionary_mask(d, "in", ["Moscow", "Perm"], "$.value")
    assert first.tolist() == [1]
    assert not first.flags.writeable  # shared between queries: read-only
    assert dictionary_mask(d, "in", ["Moscow", "Perm"], "$.value") is first
    d.get_or_add(["Perm"])
    again = dictionary_mask(d, "in", ["Moscow", "Perm"], "$.value")
    assert again.tolist() == [1, 1]
    other = IdMap()  # another dictionary never shares an entry
    other.get_or_add(["Perm"])
    assert dictionary_mask(other, "in", ["Moscow", "Perm"], "$.value").tolist() == [1]
    assert dictionary_mask(d, "not_in", ["Moscow", "Perm"], "$.value").tolist() == [
        0,
        0,
    ]


def test_category_tree_follows_a_growing_dictionary() -> None:
    d = IdMap()
    d.get_or_add(["Outdoor/Tents"])
    assert category_tree(d) == {"Outdoor", "Outdoor/Tents"}
    d.get_or_add(["Garden/Tools"])
    assert "Garden" in category_tree(d)


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.load_contacts(
        [
            dict(customer_id="a", city="Moscow", gender="m"),
            dict(customer_id="b", city="Kazan", gender="f"),
        ]
    )
    e.load_items([dict(item_id="i1", category="Outdoor/Tents", brand="Zed")])
    e.load_events(
        [
            dict(customer_id="a", ts=NOW.timestamp() - 3600, type="view", item_id="i1"),
            dict(customer_id="a", ts=NOW.timestamp() - 7200, type="order", item_id="i1",
                 amount=10.0, order_id="o1"),
        ]
    )  # fmt: skip
    return e


def _ids(e: Engine, q: str) -> set[str]:
    return set(e.segment(q, NOW, cache=False).ids())


def test_new_attribute_value_between_identical_queries(eng: Engine) -> None:
    q = 'city in ("Perm", "Moscow")'
    assert _ids(eng, q) == {"a"}
    eng.upsert_contact("b", city="Perm")
    assert _ids(eng, q) == {"a", "b"}
    eng.load_contacts([dict(customer_id="c", city="Perm", gender="m")])
    assert _ids(eng, q) == {"a", "b", "c"}


def test_new_category_between_identical_queries(eng: Engine) -> None:
    q = 'view(category = "Garden") in last 30 days'
    first = eng.segment(q, NOW, cache=False)
    assert first.count() == 0
    assert [w.value for w in first.warnings] == ["Garden"]  # unknown category
    eng.load_items([dict(item_id="i2", category="Garden/Tools", brand="Zed")])
    eng.append_events(
        [dict(customer_id="b", ts=NOW.timestamp() - 60, type="view", item_id="i2")]
    )
    again = eng.segment(q, NOW, cache=False)
    assert set(again.ids()) == {"b"}
    assert again.warnings == ()


def test_new_search_phrase_between_identical_queries(eng: Engine) -> None:
    q = 'search(phrase in ("tent", "kids tent")) in last 30 days'
    assert _ids(eng, q) == set()
    eng.append_events(
        [dict(customer_id="b", ts=NOW.timestamp() - 60, type="search", phrase="tent")]
    )
    assert _ids(eng, q) == {"b"}
    eng.append_events(
        [dict(customer_id="a", ts=NOW.timestamp() - 60, type="search",
              phrase="kids tent")]
    )  # fmt: skip
    assert _ids(eng, q) == {"a", "b"}


def test_new_contacts_between_identical_aggregate_queries(eng: Engine) -> None:
    q = "orders_count >= 1 and revenue >= 5"
    assert _ids(eng, q) == {"a"}
    eng.load_contacts([dict(customer_id=f"n{i}", city="Omsk") for i in range(50)])
    eng.append_events(
        [dict(customer_id="n7", ts=NOW.timestamp() - 60, type="order", item_id="i1",
              amount=9.0, order_id="o9")]
    )  # fmt: skip
    assert _ids(eng, q) == {"a", "n7"}
