"""segd and DuckDB SQL must agree on every segment: random ASTs over generated data.

The oracle (tests/differential/oracle.py) translates the same AST to one SQL query over
the same three tables; it shares no code with the engine. Hypothesis draws ASTs of every
condition kind (attributes of every type, events with catalog and property filters,
periods, counts, sums, then-no, aggregates, segment references), nested to depth 4.
"""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings

from segd import Engine
from segd.datagen import generate
from tests.differential.oracle import SqlOracle
from tests.property.strategies import asts

SAVED = {
    "men": {"attr": "gender", "op": "=", "value": "m"},
    "buyers": {"event": "order", "period": {"last": "90d"}},
}


@pytest.fixture(scope="module")
def world():
    data = generate(400, seed=11)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    # Half the events arrive first, then the older half late: the merge path must hold.
    n = data.events.num_rows
    eng.load_events(data.events.slice(n // 2))
    eng.append_events(data.events.slice(0, n // 2))
    for name, ast in SAVED.items():
        eng.create_segment(name, ast)
    oracle = SqlOracle(data.contacts, data.items, data.events)
    return data, eng, oracle


def _vocab(table, column, k=6):
    vals = [v for v in pc.unique(table[column]).to_pylist() if v is not None]
    return sorted(vals)[:k] + ["no-such-value"]


def _strategy(data):
    contacts, items, events = data.contacts, data.items, data.events
    categories = sorted({c for c in items["category"].to_pylist() if c})
    tops = sorted({c.split("/")[0] for c in categories})
    mids = sorted({"/".join(c.split("/")[:2]) for c in categories})
    tags = sorted({t for lst in contacts["tags"].to_pylist() if lst for t in lst})
    return asts(
        attrs={
            "gender": "category",
            "city": "category",
            "rating": "int",
            "email_subscribed": "bool",
            "registered_at": "timestamp",
            "tags": "tags",
            "age": "int",
        },
        values={
            "gender": ["m", "f", "x"],
            "city": _vocab(contacts, "city"),
            "rating": [1, 3, 5, 7, 10],
            "age": [18, 25, 35, 50, 70],
            "tags": tags[:5] + ["nope"],
            "category": tops[:3] + mids[:3] + categories[:3],
            "brand": _vocab(items, "brand"),
            "colour": _vocab(items, "colour"),
            "phrase": _vocab(events, "phrase"),
            "advertiser": _vocab(events, "advertiser"),
            "campaign": _vocab(events, "campaign"),
            "channel": ["email", "sms"],
            "item": _vocab(items, "item_id"),
            "price": [100.0, 999.99, 5000.0],
            "amount": [500.0, 2000.0, 10000.0],
        },
        event_types=[
            "view",
            "add_to_cart",
            "order",
            "search",
            "email_open",
            "ad_click",
        ],
        filter_fields={
            "category": "category",
            "brand": "category",
            "colour": "category",
            "phrase": "category",
            "advertiser": "category",
            "campaign": "category",
            "channel": "category",
            "item": "category",
            "price": "float",
            "in_stock": "bool",
            "amount": "float",
        },
        sum_fields=["amount"],
        include_rfm=False,
        include_segments=True,
        segment_names=sorted(SAVED),
        max_depth=4,
    )


def test_fixture_is_not_trivial(world):
    data, eng, oracle = world
    for dsl in (
        'gender = "m"',
        "order() in last 90 days",
        "not email_open() in last 14 days",
    ):
        n = eng.segment(dsl, now=data.now).count()
        assert 0 < n < eng.store.n_contacts, dsl


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=__import__("hypothesis").strategies.data())
def test_random_segments_match_duckdb(world, data):
    dataset, eng, oracle = world
    ast = data.draw(_strategy(dataset))
    got = set(eng.segment(ast, now=dataset.now).ids())
    want = oracle.members(ast, dataset.now, SAVED)
    assert got == want, (
        f"segd {len(got)} vs DuckDB {len(want)} for {ast}\n"
        f"only segd: {sorted(got - want)[:5]} only DuckDB: {sorted(want - got)[:5]}"
    )
