"""The query pipeline of issue 8/9: read once, bounded, all-or-nothing saved segments, and
the three semantic readings (item_id, visits, distinct orders) in the engine itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.errors import DeadlineExceeded, InvalidInput, TooComplex
from segd.results import SegmentResult
from segd.segments.limits import MAX_DEPTH, Budget
from segd.segments.query import ParseCache, Prepared, prepare

NOW = datetime(2025, 6, 30, tzinfo=UTC)


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.upsert_contacts(
        pa.Table.from_pylist(
            [
                {"customer_id": f"c{i}", "city": "Kazan" if i % 2 else "Omsk"}
                for i in range(6)
            ]
        )
    )
    rows = [
        # c0: two lines of one order with item i1, one line of another order
        ("c0", "2025-06-01T00:00:00Z", "order", "i1", "o1"),
        ("c0", "2025-06-01T00:00:00Z", "order", "i1", "o1"),
        ("c0", "2025-06-02T00:00:00Z", "order", "i2", "o2"),
        # c1: two orders with item i1, and two lines without an order id
        ("c1", "2025-06-01T00:00:00Z", "order", "i1", "o3"),
        ("c1", "2025-06-03T00:00:00Z", "order", "i1", "o4"),
        ("c1", "2025-06-04T00:00:00Z", "order", "i3", None),
        ("c1", "2025-06-05T00:00:00Z", "order", "i3", None),
        # c2: visited a month ago, then only an email and an ad view yesterday
        ("c2", "2025-05-30T00:00:00Z", "view", "i1", None),
        ("c2", "2025-06-29T00:00:00Z", "email_open", None, None),
        ("c2", "2025-06-29T00:00:00Z", "ad_view", None, None),
        # c3: a page view yesterday
        ("c3", "2025-06-29T00:00:00Z", "page_view", None, None),
    ]
    e.append_events(
        pa.Table.from_pylist(
            [
                {
                    "customer_id": c,
                    "ts": _ts(t),
                    "type": k,
                    "item_id": item,
                    "order_id": order,
                    "amount": 10.0 if k == "order" else None,
                }
                for c, t, k, item, order in rows
            ]
        )
    )
    return e


def members(e: Engine, query) -> set[str]:
    return set(e.segment(query, NOW))


# -- semantics ------------------------------------------------------------------------


def test_item_id_is_an_alias_of_item(eng: Engine) -> None:
    ast = prepare('view(item_id = "i1")').ast
    assert ast == {
        "event": "view",
        "where": [{"field": "item", "op": "=", "value": "i1"}],
    }
    assert members(eng, 'order(item_id = "i1")') == members(eng, 'order(item = "i1")')
    assert members(eng, 'order(item_id = "i1")') == {"c0", "c1"}


def test_order_count_counts_distinct_orders(eng: Engine) -> None:
    # c0 has two lines of o1 with i1: one order. c1 has o3 and o4 with i1: two orders.
    assert members(eng, 'order(item = "i1") count >= 2') == {"c1"}
    assert members(eng, 'order(item = "i1") count = 1') == {"c0"}
    # lines without an order id are an order each: c1 has 4 orders, c0 2
    assert members(eng, "order() count >= 3") == {"c1"}
    assert members(eng, "order() count = 2") == {"c0"}
    assert members(eng, "order() count <= 2") == {"c0", "c2", "c3", "c4", "c5"}
    # the same as the aggregate
    for k in range(5):
        assert members(eng, f"order() count = {k}") == members(
            eng, f"orders_count = {k}"
        )
    # also restricted to candidates (the AND path) and with a sum
    assert members(eng, 'city = "Kazan" and order(item = "i1") count >= 2') == {"c1"}
    assert members(eng, "order() count >= 2 sum(amount) >= 40") == {"c1"}


def test_a_visit_is_on_site_activity_only(eng: Engine) -> None:
    assert members(eng, "days_since_last_visit = 1") == {"c3"}
    assert members(eng, "days_since_last_visit = 31") == {"c2"}  # not yesterday's email
    assert members(eng, "days_since_last_visit <= 1 in last 7 days") == {"c3"}
    everything = Engine(visit_events=["view", "page_view", "email_open", "ad_view"])
    everything.upsert_contacts([{"customer_id": "c2"}])
    everything.append_events(
        [{"customer_id": "c2", "ts": _ts("2025-06-29T00:00:00Z"), "type": "email_open"}]
    )
    assert members(everything, "days_since_last_visit = 1") == {"c2"}
    with pytest.raises(TypeError):
        Engine(visit_events="view")


# -- read once, bounded -------------------------------------------------------------------


def test_prepared_queries_are_trusted_and_shared(eng: Engine) -> None:
    p = eng.prepare('city = "Kazan"')
    assert isinstance(p, Prepared) and p.text == 'city = "Kazan"'
    assert eng.prepare('city = "Kazan"') is p  # the parse cache
    assert eng.prepare(p) is p
    assert (p.depth, p.conditions) == (1, 1)
    assert eng.segment(p, NOW).count() == 3
    with pytest.raises(InvalidInput):
        eng.prepare(42)  # type: ignore[arg-type]


def test_parse_cache_is_bounded_by_bytes() -> None:
    cache = ParseCache(max_bytes=40_000)
    texts = [f'city = "{"x" * 2000}{i}"' for i in range(100)]
    for t in texts:
        cache.get(t)
    assert 0 < cache.nbytes <= 40_000
    assert len(cache) < 20
    assert cache.get(texts[-1]) is cache.get(texts[-1])  # the newest stays
    huge = ParseCache(max_bytes=100)
    assert huge.get('city = "Kazan"').text == 'city = "Kazan"'
    assert len(huge) == 0  # larger than the whole cache: not kept


def test_parsing_honours_the_deadline_and_cancellation() -> None:
    text = " or ".join(f"a = {i}" for i in range(900))
    with pytest.raises(DeadlineExceeded):
        prepare(text, Budget(deadline=time.monotonic() - 1))
    with pytest.raises(DeadlineExceeded, match="cancelled"):
        prepare({"or": [{"attr": "a", "op": "=", "value": i} for i in range(900)]},
                Budget(cancelled=lambda: True))  # fmt: skip
    assert prepare(text, Budget(deadline=time.monotonic() + 60)).conditions == 900


def test_typed_condition_conversion_honours_the_budget() -> None:
    from segd.server.convert import condition_to_ast
    from segd.v1 import common_pb2 as common

    cond = common.Condition()
    cond.or_node.SetInParent()
    for i in range(900):
        leaf = cond.or_node.conditions.add()
        leaf.attr.attr, leaf.attr.op = "a", common.OPERATOR_EQ
        leaf.attr.value.int_value = i
    with pytest.raises(DeadlineExceeded):
        condition_to_ast(cond, budget=Budget(cancelled=lambda: True))
    assert len(condition_to_ast(cond)["or"]) == 900
    deep = common.Condition()
    deep.attr.attr, deep.attr.op = "a", common.OPERATOR_IS_NULL
    for _ in range(MAX_DEPTH):
        outer = common.Condition()
        outer.not_node.condition.CopyFrom(deep)
        deep = outer
    with pytest.raises(TooComplex):
        condition_to_ast(deep)


# -- saved segments: all or nothing -------------------------------------------------------


def test_failed_saves_change_nothing(eng: Engine) -> None:
    eng.create_segment("base", 'city = "Kazan"')
    before = [(s.name, s.version, s.dsl) for s in eng.list_segments()]
    bad = [
        ("create", "typo", "city = 5"),
        ("create", "deep", "not " * 40 + 'city = "Kazan"'),
        ("create", "vip\n", 'city = "Kazan"'),
        ("create", "ghost", 'in segment "nope"'),
        ("update", "base", "city = 5"),
        ("update", "base", 'in segment "base"'),
    ]
    for op, name, query in bad:
        with pytest.raises((InvalidInput, TooComplex)):
            if op == "create":
                eng.create_segment(name, query)
            else:
                eng.update_segment(name, query)
    assert [(s.name, s.version, s.dsl) for s in eng.list_segments()] == before


def test_respond_runs_before_the_segment_is_stored(eng: Engine) -> None:
    seen = []

    def respond(seg, count):
        seen.append((seg.name, count, len(eng.segments)))
        raise RuntimeError("the response could not be sent")

    with pytest.raises(RuntimeError):
        eng.create_segment("s", 'city = "Kazan"', count=True, respond=respond)
    assert seen == [("s", 3, 0)] and len(eng.segments) == 0
    eng.create_segment("s", 'city = "Kazan"', respond=lambda s, n: seen.append(n))
    assert seen[-1] is None  # a dynamic segment is not evaluated unless asked
    eng.create_segment(
        "f", 'city = "Kazan"', static=True, respond=lambda s, n: seen.append(n)
    )
    assert seen[-1] == 3


# -- Members: O(page) ------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.sets(st.integers(0, 200_000), max_size=300),
    st.integers(0, 320),
    st.integers(0, 100),
)
def test_result_pages_are_rank_slices(members_set, offset, limit) -> None:
    from pyroaring import BitMap

    result = SegmentResult(BitMap(members_set), lambda c: [str(x) for x in c], 0.0)
    expected = [str(x) for x in sorted(members_set)][offset : offset + limit]
    assert result.ids(offset=offset, limit=limit) == expected


@pytest.mark.parametrize(
    ("query", "ref"),
    [
        ({"segment": "vip"}, "vip"),
        ('in segment "vip"', "vip"),
        ('in segment "vip" and age >= 30', None),
        ('not in segment "vip"', None),
        ("age >= 30", None),
    ],
)
def test_segment_ref_is_a_plain_reference_only(query, ref) -> None:
    assert prepare(query).segment_ref == ref
