"""``evaluate_pairs`` against its definition: for random segments over random data, the
answer for each (contact, moment) pair is membership in ``Engine.segment(query, now=moment)``.

Both the fast path and the reference (one restricted run per distinct moment) are checked
against that definition, so the reference is an oracle that is itself tested.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.errors import InvalidQuery
from segd.segments.pairs import evaluate_pairs, evaluate_pairs_reference
from tests.property.test_live_state_machine import (
    BASE,
    BRANDS,
    CATEGORIES,
    CONTACTS,
    DAY,
    ITEMS,
    TYPES,
    births,
    event_row,
    offsets,
    queries,
)

event_rows = st.lists(event_row, max_size=40)
profiles = st.lists(
    st.tuples(st.sampled_from(["Kazan", "Moscow", None]), st.integers(0, 6), births),
    min_size=len(CONTACTS),
    max_size=len(CONTACTS),
)


def _engine(rows, people, base_query) -> Engine:
    e = Engine(result_cache_size=0)
    e.upsert_items(
        [
            {"item_id": i, "category": c, "brand": b, "price": 10.0}
            for i, c, b in zip(ITEMS, CATEGORIES, BRANDS * 2, strict=False)
        ]
    )
    e.upsert_contacts(
        [
            {"customer_id": c, "city": city, "score": score, "birth_date": birth}
            for c, (city, score, birth) in zip(CONTACTS, people, strict=True)
        ]
    )
    e.append_events(
        [
            {"customer_id": "c0", "type": t, "ts": BASE - 500 * DAY, "item_id": "i1"}
            for t in TYPES
        ]
    )
    batch = []
    for cid, etype, off, item, amount, order in rows:
        row = {
            "customer_id": cid,
            "type": etype,
            "ts": BASE + off,
            "item_id": item,
            "amount": amount if etype == "order" else None,
        }
        if etype == "order":
            row["order_id"] = f"o{order}"
        batch.append(row)
    if batch:
        e.append_events(batch)
    try:
        e.create_segment("base", base_query, static=True)
    except InvalidQuery:
        e.create_segment("base", {"attr": "score", "op": ">=", "value": 2}, static=True)
    return e


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_rows,
    people=profiles,
    base_query=queries,
    query=queries,
    pairs=st.lists(
        st.tuples(st.integers(0, len(CONTACTS) - 1), offsets), min_size=1, max_size=30
    ),
)
def test_pairs_equal_fresh_evaluations(rows, people, base_query, query, pairs) -> None:
    e = _engine(rows, people, base_query)
    try:
        e.segment(query, now=BASE)
    except InvalidQuery:
        return
    store = e.store
    import pyarrow as pa

    cids = np.asarray(
        e.store.contacts.lookup(pa.array([CONTACTS[i] for i, _ in pairs])), np.uint32
    )
    nows = np.array([float(BASE + off) for _, off in pairs])
    expected = np.array(
        [
            CONTACTS[i] in set(e.segment(query, now=float(BASE + off)).ids())
            for i, off in pairs
        ]
    )
    plan = e._compiler(float(BASE)).compile(query)
    assert (
        evaluate_pairs_reference(plan, store, cids, nows).tolist() == expected.tolist()
    )
    plan = e._compiler(float(BASE)).compile(query)
    assert evaluate_pairs(plan, store, cids, nows).tolist() == expected.tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_rows,
    people=profiles,
    base_query=queries,
    queries_=st.lists(queries, min_size=1, max_size=3),
    offset=offsets,
)
def test_one_moment_with_a_shared_memo(
    rows, people, base_query, queries_, offset
) -> None:
    """A live write's shape: every contact at one moment, several segments sharing one
    memo (each condition decided once for all of them)."""
    e = _engine(rows, people, base_query)
    now = float(BASE + offset)
    import pyarrow as pa

    cids = np.asarray(e.store.contacts.lookup(pa.array(CONTACTS)), np.uint32)
    nows = np.full(len(cids), now)
    memo: dict = {}
    for query in queries_:
        try:
            members = set(e.segment(query, now=now).ids())
        except InvalidQuery:
            continue
        plan = e._compiler(now).compile(query)
        got = evaluate_pairs(plan, e.store, cids, nows, memo=memo)
        assert got.tolist() == [c in members for c in CONTACTS]
