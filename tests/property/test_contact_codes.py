"""The contact-major code copies (``EventLog.contact_codes``, issue 15) stay exact.

Random engines go through the writes that touch a log's rows — appends after the end,
late events merged in, identity merges, a rebuild of the index, a snapshot and reopen —
and after each the copy must equal ``item[rows[k]]`` at every position a reader may
visit (slot positions whose row lies below the index's limit), and segments over view
filters must answer the same with the copies read and without them.
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
ITEMS = [f"i{i}" for i in range(5)]
QUERIES = [
    'view(brand = "b1") count >= 2 in last 30 days',
    'view(category = "k0") in last 10 days and not view(brand = "b0") in last 5 days',
    'city = "Kazan" and view(brand = "b1") count 1..3 in last 60 days',
    'view(brand = "b0") in last 40 days and (view(category = "k1") count >= 2 in last 40 days or city = "Kazan")',
]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("events"),
            st.lists(
                st.tuples(
                    st.sampled_from(CONTACTS),
                    st.integers(-60, 0),  # day offset; negative = late
                    st.sampled_from(ITEMS + [None]),
                    st.sampled_from(["view", "order"]),
                ),
                min_size=1,
                max_size=12,
            ),
        ),
        st.tuples(
            st.just("merge"), st.sampled_from(CONTACTS), st.sampled_from(CONTACTS)
        ),
        st.tuples(st.just("query")),
    ),
    min_size=1,
    max_size=12,
)


def _check_copy(e: Engine) -> None:
    log = e.store.logs.get("view")
    if log is None or log.n == 0:
        return
    slots, rows, limit = log.contact_index(e.store.n_contacts)
    copy = log.contact_codes("item")
    assert copy is not None
    assert len(copy) >= len(rows)
    item = log.dim("item")
    for c in range(slots.n):
        a, b = slots.span(c)
        mine = rows[a:b]
        ok = mine < limit
        assert copy[a:b][ok].tolist() == item[mine[ok]].tolist()


def _answers(e: Engine, now) -> list[list[str]]:
    out = []
    for q in QUERIES:
        out.append(sorted(e.segment(q, now=now, cache=False).ids()))
    return out


def _both_ways(e: Engine, now) -> None:
    try:
        events.READ_CONTACT_CODES = True
        fast = _answers(e, now)
        events.READ_CONTACT_CODES = False
        plain = _answers(e, now)
    finally:
        events.READ_CONTACT_CODES = True
    assert fast == plain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops, seed_rows=st.integers(20, 80))
def test_copies_exact_under_writes(tmp_path_factory, script, seed_rows) -> None:
    path = tmp_path_factory.mktemp("codes")
    e = Engine.open(path, fsync="off", result_cache_size=0)
    try:
        e.upsert_items(
            [
                {
                    "item_id": it,
                    "category": f"k{i % 2}",
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
                    "type": "view",
                    "ts": BASE - int(rng.integers(0, 60 * DAY)),
                    "item_id": str(rng.choice(ITEMS)),
                }
                for _ in range(seed_rows)
            ]
        )
        now = BASE + DAY
        end = BASE
        _check_copy(e)
        for op in script:
            if op[0] == "events":
                batch = []
                for cust, day, item, etype in op[1]:
                    end += 60
                    ts = end + day * DAY
                    row = {"customer_id": cust, "type": etype, "ts": ts}
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
            _check_copy(e)
            _both_ways(e, now)
        log = e.store.logs["view"]
        before = _answers(e, now)
        e.snapshot()
        e.close()
        e = Engine.open(path, fsync="off", result_cache_size=0)
        _check_copy(e)
        assert _answers(e, now) == before
        _both_ways(e, now)
        assert log.contact_codes("item") is not None or log.n == 0
    finally:
        e.close()


def test_rebuild_and_bytes() -> None:
    """A rebuild (tail past an eighth of the log) re-copies; the copy costs 4 B per
    indexed view in ``index_nbytes``; types without a configured copy keep none."""
    e = Engine(result_cache_size=0)
    e.upsert_items([{"item_id": "i0", "category": "k0", "brand": "b0", "price": 1.0}])
    e.upsert_contacts([{"customer_id": c} for c in CONTACTS])
    rows = [
        {"customer_id": CONTACTS[i % 8], "type": t, "ts": BASE + i, "item_id": "i0"}
        for i in range(200)
        for t in ("view", "add_to_cart")
    ]
    e.append_events(rows)
    e.count('view(brand = "b0") in last 10 days', now=BASE + 300)
    log = e.store.logs["view"]
    slots, rows_, limit = log.contact_index(e.store.n_contacts)
    copy = log.contact_codes("item")
    assert copy is not None and len(copy) == len(rows_) == log.n
    assert log.index_nbytes() >= slots.nbytes + rows_.nbytes + copy.nbytes
    assert e.store.logs["add_to_cart"].contact_codes("item") is None
    assert (copy != NO_CODE).all()
