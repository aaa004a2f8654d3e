"""The merge's order recount kernel (aggregates.recount_orders) vs a numpy oracle."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from segd.native import NO_CODE, aggregates, contactindex


@given(
    cids=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    codes=st.lists(st.one_of(st.none(), st.integers(0, 9)), min_size=60, max_size=60),
    indexed=st.integers(0, 60),
    survivor=st.integers(0, 4),
    merged=st.integers(0, 4),
    owner_len=st.integers(0, 10),
)
def test_recount_orders_matches_numpy(
    cids, codes, indexed, survivor, merged, owner_len
):
    if survivor == merged:
        return
    n = len(cids)
    limit = min(indexed, n)
    cid = np.array(cids, dtype=np.uint32)
    col = np.array([NO_CODE if c is None else c for c in codes[:n]], dtype=np.uint32)
    slots, rows = contactindex.build(cid[:limit].copy(), 5)
    rows = np.concatenate([rows, np.zeros(2 * n + 2, np.uint32)])
    origin = np.full(n, NO_CODE, np.uint32)
    rng = np.random.default_rng(n)
    owner = rng.integers(0, 5, owner_len).astype(np.uint32)
    want_owner = owner.copy()
    contactindex.move_contact(
        cid, origin, slots, rows, limit, limit, n, merged, survivor
    )
    mine = col[cid == survivor]
    known = mine[mine != NO_CODE]
    ids = np.unique(known)
    want = len(mine) - len(known) + len(ids)
    inside = ids[ids < owner_len]
    want_owner[inside[want_owner[inside] == merged]] = survivor
    got = aggregates.recount_orders(
        slots, rows, limit, cid, n, col, owner, survivor, merged
    )
    assert got == want
    assert np.array_equal(owner, want_owner)
