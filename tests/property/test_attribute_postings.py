"""The order log's per-category postings (``events.ATTRIBUTE_POSTINGS``, issue 15) stay
exact.

Random engines go through every write that touches the order log's rows or the items'
categories — appends after the end, late events merged in, identity merges, catalog
upserts that move items (with and without rows) between categories or add new ones,
a snapshot and reopen, a reopen that replays the WAL (no snapshot: as after a crash) —
and after each, for every category value, the postings inside random windows must equal
the rows a numpy oracle finds through the items' current categories, and segments over
order category filters must answer the same with the postings read and without them.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd import Engine, events
from segd.identity import MergeError
from segd.native import NO_CODE

DAY = 86_400
BASE = 1_760_000_000
CONTACTS = [f"c{i}" for i in range(8)]
ITEMS = [f"i{i}" for i in range(7)]
CATEGORIES = ["k0", "k1", "k0/x", "k2"]
QUERIES = [
    'order(category = "k0") in last 30 days',
    'order(category in ("k1", "k2")) count >= 2 in last 60 days',
    'city = "Kazan" and order(category = "k0/x") in last 40 days',
    'not order(category != "k1") in last 20 days',
    'add_to_cart() in last 30 days then no order(category = "k0") within 7 days',
    'order(category = "k2") in last 50 days or order(brand = "b1") in last 10 days',
]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("events"),
            st.lists(
                st.tuples(
                    st.sampled_from(CONTACTS),
                    st.integers(-60, 0),  # day offset; negative = late
                    st.sampled_from(ITEMS + ["new0", "new1", None]),
                    st.sampled_from(["order", "order", "add_to_cart"]),
                ),
                min_size=1,
                max_size=12,
            ),
        ),
        st.tuples(
            st.just("merge"), st.sampled_from(CONTACTS), st.sampled_from(CONTACTS)
        ),
        st.tuples(
            st.just("item"),
            st.sampled_from(ITEMS + ["new0", "new1", "new2"]),
            st.sampled_from(CATEGORIES + [None]),
        ),
        st.tuples(st.just("query")),
    ),
    min_size=1,
    max_size=12,
)


def _check_rows(e: Engine, rng: np.random.Generator) -> None:
    log = e.store.logs.get("order")
    if log is None or log.n == 0:
        return
    catalog = e.store.catalog
    cat = catalog.columns["category"].codes[: len(catalog)]
    item = log.dim("item")
    inside = item < len(cat)
    codes = np.full(len(item), NO_CODE, dtype=np.uint32)
    codes[inside] = cat[item[inside]]
    for name in CATEGORIES:
        values = catalog.value_codes("category", "=", name, "t")
        assert values is not None
        for r0, r1 in [(0, log.n), tuple(sorted(rng.integers(0, log.n + 1, 2)))]:
            got = log.attribute_rows(catalog, "category", values, int(r0), int(r1))
            assert got is not None
            want = np.flatnonzero(np.isin(codes[r0:r1], values)) + r0
            assert sorted(got.tolist()) == want.tolist()
            cids = log.attribute_cids(catalog, "category", values, int(r0), int(r1))
            assert cids is not None
            assert cids.tolist() == log.cid[got].tolist()


def _answers(e: Engine, now) -> list[list[str]]:
    return [sorted(e.segment(q, now=now, cache=False).ids()) for q in QUERIES]


def _both_ways(e: Engine, now) -> None:
    from segd.segments import event_node

    try:
        events.READ_ATTRIBUTE_POSTINGS = True
        fast = _answers(e, now)
        ratio = event_node.SORT_RATIO
        event_node.SORT_RATIO = 0  # the contact-list path for every first leaf
        try:
            assert _answers(e, now) == fast
        finally:
            event_node.SORT_RATIO = ratio
        events.READ_ATTRIBUTE_POSTINGS = False
        plain = _answers(e, now)
    finally:
        events.READ_ATTRIBUTE_POSTINGS = True
    assert fast == plain


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops, seed_rows=st.integers(20, 80), crash=st.booleans())
def test_category_postings_exact_under_writes(
    tmp_path_factory, script, seed_rows, crash
) -> None:
    path = tmp_path_factory.mktemp("attr")
    e = Engine.open(path, fsync="off", result_cache_size=0)
    try:
        e.upsert_items(
            [
                {
                    "item_id": it,
                    "category": CATEGORIES[i % len(CATEGORIES)],
                    "brand": f"b{i % 3}",
                    "price": 1.0,
                }
                for i, it in enumerate(ITEMS)
            ]
        )
        e.upsert_contacts(
            [
                {"customer_id": c, "city": "Kazan" if i % 2 else "Omsk"}
                for i, c in enumerate(CONTACTS)
            ]
        )
        rng = np.random.default_rng(seed_rows)
        e.append_events(
            [
                {
                    "customer_id": str(rng.choice(CONTACTS)),
                    "type": "order",
                    "ts": BASE - int(rng.integers(0, 60 * DAY)),
                    "item_id": str(rng.choice(ITEMS)),
                    "amount": 1.0,
                }
                for _ in range(seed_rows)
            ]
        )
        now = BASE + DAY
        end = BASE
        _check_rows(e, rng)
        for op in script:
            if op[0] == "events":
                batch = []
                for cust, day, item, etype in op[1]:
                    end += 60
                    row = {"customer_id": cust, "type": etype, "ts": end + day * DAY}
                    if item is not None:
                        row["item_id"] = item
                    if etype == "order":
                        row["amount"] = 5.0
                    batch.append(row)
                e.append_events(batch)
            elif op[0] == "merge":
                if op[1] != op[2]:
                    try:
                        e.merge(op[1], op[2])
                    except MergeError:  # a contact merged already: refused, no change
                        pass
            elif op[0] == "item":
                e.upsert_items([{"item_id": op[1], "category": op[2]}])
            _check_rows(e, rng)
            _both_ways(e, now)
        before = _answers(e, now)
        if not crash:
            e.snapshot()
        e.close()
        e = Engine.open(path, fsync="off", result_cache_size=0)
        _check_rows(e, rng)
        assert _answers(e, now) == before
        _both_ways(e, now)
    finally:
        e.close()
