"""Replay applies runs of ``events`` records as one batch (segd.mutations.events_of_records,
docs/storage.md "Recovery"): that must leave exactly the state that applying the records one
by one (the live path, ``Engine._apply``) leaves — contact and item numbering, every log's
rows in order, dimensions, amounts, event_id deduplication, rollups.

Batches differ in the ways real traffic does: with or without amount, item_id, event_id and
dimensions, types in different orders, dictionary-encoded or large-string columns, late
events."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from segd import mutations as mut
from segd.core import Engine
from segd.errors import InvalidQuery
from segd.ingest import read_table, validate_events

BASE_TS = 1_735_689_600
TYPES = ("view", "order", "cart")


@st.composite
def event_table(draw) -> pa.Table:
    n = draw(st.integers(1, 30))
    cols: dict[str, pa.Array] = {
        "customer_id": pa.array(
            [f"c{draw(st.integers(0, 40))}" for _ in range(n)], pa.string()
        ),
        "ts": pa.array(
            [BASE_TS + draw(st.integers(0, 500)) for _ in range(n)], pa.int64()
        ).cast(pa.timestamp("s", tz="UTC")),
        "type": pa.array([draw(st.sampled_from(TYPES)) for _ in range(n)]),
    }
    if draw(st.booleans()):
        cols["amount"] = pa.array(
            [draw(st.one_of(st.none(), st.floats(0, 100))) for _ in range(n)],
            pa.float64(),
        )
    if draw(st.booleans()):
        cols["item_id"] = pa.array(
            [draw(st.one_of(st.none(), st.sampled_from("abcde"))) for _ in range(n)]
        )
    if draw(st.booleans()):
        cols["event_id"] = pa.array(
            [draw(st.one_of(st.none(), st.sampled_from("pqrstu"))) for _ in range(n)]
        )
    for dim in draw(st.sets(st.sampled_from(["channel", "campaign"]))):
        cols[dim] = pa.array(
            [draw(st.one_of(st.none(), st.sampled_from("xyz"))) for _ in range(n)]
        )
    how = draw(st.sampled_from(["plain", "dictionary", "large"]))
    if how == "dictionary":
        cols["customer_id"] = cols["customer_id"].dictionary_encode()
    elif how == "large":
        cols["customer_id"] = cols["customer_id"].cast(pa.large_string())
    return pa.table(cols)


def _records(tables: list[pa.Table]) -> list[dict]:
    """The unpacked WAL payloads of these batches, as the live path logs them."""
    return [
        mut.unpack(
            mut.encode(
                mut.EventsAppended(validate_events(read_table(t, "events")), None, None)
            )
        )
        for t in tables
    ]


def _state(eng: Engine) -> dict:
    store = eng.store
    logs = {}
    for name, log in sorted(store.logs.items()):
        amount = log.amount
        logs[name] = (
            log.cid.tolist(),
            log.ts.tolist(),
            {d: log.dim(d).tolist() for d in sorted(log.dims())},
            None if amount is None else np.nan_to_num(amount, nan=-1.0).tolist(),
        )
    return {
        "contacts": store.contacts.ids.to_arrow().to_pylist(),
        "items": store.catalog.ids.to_arrow().to_pylist(),
        "event_ids": len(store.event_ids),
        "logs": logs,
        # (memory figures differ with the arrays' growth slack)
        "stats": {
            k: v
            for k, v in eng.stats().items()
            if k in ("contacts", "events", "items", "event_types")
        },
        "counts": [
            _count(eng, q)
            for q in ("view()", "order() count >= 2", 'cart(channel = "x")', "order()")
        ],
    }


def _count(eng: Engine, query: str) -> int | str:
    try:
        return eng.count(query)
    except InvalidQuery as exc:  # an event type or dimension no batch had
        return type(exc).__name__


@given(st.lists(event_table(), min_size=1, max_size=8), st.booleans())
def test_a_group_applies_as_the_records_one_by_one(tables, warm):
    recs = _records(tables)
    one_by_one, grouped = Engine(), Engine()
    if warm:  # a store that already holds events: later batches may be late ones
        for eng in (one_by_one, grouped):
            eng.append_events(tables[-1])
    for rec in recs:
        one_by_one._apply(mut.decode_record(rec))
    batches = mut.events_of_records(recs)
    assert sum(b.rows for b in batches) == sum(t.num_rows for t in tables)
    grouped._apply_event_chunks(((0, b) for b in batches), shrink=False)
    assert _state(grouped) == _state(one_by_one)


def test_runs_with_the_same_schema_are_read_as_one_stream():
    plain = pa.table({"customer_id": ["a", "b"], "ts": [BASE_TS, BASE_TS + 1]})
    with_amount = plain.append_column("amount", pa.array([1.0, None]))
    tables = [
        t.append_column("type", pa.array(types))
        for t, types in [
            (plain, ["view", "order"]),
            (plain, ["order", "view"]),  # the same names, coded the other way round
            (with_amount, ["order", "order"]),
            (plain, ["view", "view"]),
        ]
    ]
    recs = _records(tables)
    runs = mut._read_runs([r["t"] for r in recs])
    assert [(t is not None, count) for t, count in runs] == [
        (True, 2),
        (True, 1),
        (True, 1),
    ]
    [batch] = mut.events_of_records(recs)
    names = [batch.type_names[c] for c in batch.type_codes]
    assert names == ["view", "order", "order", "view", "order", "order", "view", "view"]
    assert np.isnan(batch.amount).tolist() == [True] * 4 + [False, True] + [True] * 2


def test_a_record_with_dictionary_columns_is_a_batch_of_its_own():
    plain = pa.table(
        {"customer_id": ["b", "a"], "ts": [BASE_TS, BASE_TS], "type": ["view"] * 2}
    )
    # live, a dictionary column numbers its values in dictionary order (a before b)
    coded = plain.set_column(0, "customer_id", pa.array(["b", "a"]).dictionary_encode())
    recs = _records([plain, plain, coded, plain])
    runs = mut._read_runs([r["t"] for r in recs])
    assert [(t is not None, count) for t, count in runs] == [
        (True, 2),
        (False, 1),
        (True, 1),
    ]
    assert [b.rows for b in mut.events_of_records(recs)] == [4, 2, 2]
