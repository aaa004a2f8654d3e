"""The per-query fixed cost (issue 15, `plan`): what planning memoises stays exact.

Planning reuses work between queries: structural keys computed bottom-up, dictionary
masks and the category tree per dictionary size, the contact sample per contact count.
Each test changes the data between two identical queries and checks the fresh answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segd.segments.conditions as conditions
from segd import Engine, aggindex
from segd.datagen import generate
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


# -- the value index's answers as sorted ids, and restricted runs by the index ----------

AND_QUERIES = [
    "orders_count = 2 and revenue >= 100",
    "revenue >= 300 and orders_count >= 1 and avg_order_value > 40",
    "orders_count >= 1 and days_since_last_order between 20 and 200",
    "rating >= 4 and orders_count >= 1",
    "age between 20 and 35 and revenue >= 50",
    "orders_count = 1 and not revenue >= 200",
    'orders_count >= 2 and order() in last 90 days and city = "Moscow"',
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")), st.integers(0, 9)),
        max_size=200,
    ),
    st.floats(-1e3, 1e3),
    st.floats(0, 2e3),
    st.integers(0, 250),
)
def test_sorted_ids_match_numpy(values, lo, width, most) -> None:
    v = np.array(values, dtype=np.float64)
    indexes = aggindex.ValueIndexes()
    owner = object()
    lo_a, hi_a = np.array([lo, lo + width + 5]), np.array([lo + width, np.inf])
    got = aggindex.sorted_ids(
        indexes, "k", owner, len(v), lambda: (v, None), lo_a, hi_a, most
    )
    with np.errstate(invalid="ignore"):
        want = np.flatnonzero(
            ((v >= lo_a[0]) & (v <= hi_a[0])) | ((v >= lo_a[1]) & (v <= hi_a[1]))
        )
    if len(want) > most:
        assert got is None
    else:
        assert got is not None and got.dtype == np.uint32
        assert got.tolist() == want.tolist()
    count = indexes.count("k", owner, len(v), None, lo_a, hi_a)
    assert count == len(want)


def _scan_oracle(eng: Engine, now) -> list[int]:
    """Every query by the column scans: the value index switched off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conditions.aggindex, "fill", lambda *a, **k: False)
        mp.setattr(conditions.aggindex, "sorted_ids", lambda *a, **k: None)
        mp.setattr(aggindex.ValueIndexes, "count", lambda *a, **k: None)
        return [eng.count(q, now=now, cache=False) for q in AND_QUERIES]


def _by_index(eng: Engine, now, sort_share: int, per_candidate: int) -> list[int]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aggindex, "SORT_SHARE", sort_share)
        mp.setattr(conditions, "INDEX_PER_CANDIDATE", per_candidate)
        return [eng.count(q, now=now, cache=False) for q in AND_QUERIES]


def test_index_paths_match_the_scan_under_writes() -> None:
    data = generate(800, seed=11)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    half = data.events.num_rows // 2
    eng.load_events(data.events.slice(half))
    now = data.now

    def check() -> None:
        want = _scan_oracle(eng, now)
        assert any(want)  # the queries select someone
        for sort_share in (1, 10**9):  # every answer sorted / every one by bitset
            for per_candidate in (0, 4, 10**6):
                assert _by_index(eng, now, sort_share, per_candidate) == want

    check()
    eng.append_events(data.events.slice(0, 200))  # late events: dirty contacts
    check()
    ids = data.contacts.column("customer_id").to_pylist()
    eng.upsert_contacts([{"customer_id": ids[0], "rating": 5}])
    eng.merge(ids[1], ids[2])
    eng.load_contacts([{"customer_id": "brand-new", "rating": 4}])
    check()


def test_kept_value_union_follows_attribute_writes(eng: Engine) -> None:
    """A restricted ``city in (...)`` keeps the union of its values' bitmaps on the node
    (``CategoryAttr._union``); a plan node reused across writes (as live segments do)
    must see contacts moving in and out of those values."""
    from pyroaring import BitMap

    from segd.segments.context import Context
    from segd.segments.dsl import parse

    node = eng._compiler(NOW.timestamp()).compile(parse('city in ("Perm", "Moscow")'))
    store = eng.store

    def members(cand: BitMap) -> set[str]:
        got = node.run(Context(store, NOW.timestamp()), cand)
        assert got <= cand
        cids = np.asarray(got.to_array(), dtype=np.uint32)
        return set(store.contacts.external_ids(cids))

    def everyone() -> BitMap:
        return BitMap(range(store.n_contacts))

    assert members(everyone()) == {"a"}
    eng.upsert_contact("b", city="Perm")
    assert members(everyone()) == {"a", "b"}
    assert "_union" in node.__dict__  # two known values: the kept-union path ran
    eng.upsert_contact("a", city="Kazan")
    assert members(everyone()) == {"b"}
    eng.load_contacts([dict(customer_id="c", city="Moscow", gender="m")])
    assert members(everyone()) == {"b", "c"}
    assert members(BitMap([0, 1])) == {"b"}
