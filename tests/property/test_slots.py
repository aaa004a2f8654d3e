"""The contact index's slot table (contactindex.Slots) against plain offsets.

The table keeps narrow blocks as per-contact counts and the rest (a contact with 255+
rows, slots a merge moved) explicitly; every way in — a build, a plain or a patched
offsets array, merges — must give back exactly the slots a plain CSR holds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import NO_CODE, contactindex

# per-contact row counts: mostly small, some past the narrow limit (254)
counts_st = st.lists(
    st.one_of(st.integers(0, 6), st.integers(250, 600)), min_size=0, max_size=140
)


def _offsets(counts: list[int]) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.uint32)
    np.cumsum(np.array(counts, dtype=np.uint32), out=out[1:])
    return out


@settings(max_examples=300, deadline=None)
@given(counts=counts_st)
def test_plain_offsets_round_trip(counts: list[int]) -> None:
    offsets = _offsets(counts)
    slots = contactindex.Slots.from_offsets(offsets)
    assert slots.n == len(counts)
    starts, ends = slots.starts_ends()
    assert starts.tolist() == offsets[:-1].tolist()
    assert ends.tolist() == offsets[1:].tolist()
    for c in range(len(counts)):
        assert slots.span(c) == (offsets[c], offsets[c + 1])
    # a block is kept explicitly exactly when one of its contacts has 255+ rows
    heavy = {c // 32 for c, k in enumerate(counts) if k > 254}
    assert slots.n_wide == len(heavy)


@settings(max_examples=300, deadline=None)
@given(counts=counts_st, data=st.data())
def test_patched_slots_round_trip(counts: list[int], data) -> None:
    """Slots in any order with gaps between them (as merges leave them)."""
    n = len(counts)
    order = data.draw(st.permutations(range(n)))
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    starts = np.zeros(n, np.uint32)
    ends = np.zeros(n, np.uint32)
    at = 0
    for c, gap in zip(order, gaps, strict=True):
        at += gap
        starts[c], ends[c] = at, at + counts[c]
        at += counts[c]
    offsets = np.append(starts, np.uint32(at))
    slots = contactindex.Slots.from_offsets(offsets, ends)
    got_starts, got_ends = slots.starts_ends()
    assert got_starts.tolist() == starts.tolist()
    assert got_ends.tolist() == ends.tolist()


def test_bad_slots_are_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        contactindex.Slots.from_offsets(np.array([0, 5, 3], np.uint32))
    with pytest.raises(ValueError, match="ends has 1 slots for 2"):
        contactindex.Slots.from_offsets(
            np.array([0, 1, 2], np.uint32), np.array([1], np.uint32)
        )
    with pytest.raises(ValueError, match="at least one entry"):
        contactindex.Slots.from_offsets(np.zeros(0, np.uint32))
    slots = contactindex.Slots.from_offsets(np.array([0, 2], np.uint32))
    with pytest.raises(IndexError, match="outside"):
        slots.span(1)
    with pytest.raises(IndexError, match="outside"):
        slots.span(-1)


def test_small_logs_cost_little_per_contact() -> None:
    """The point of the table: a log with fewer rows than contacts costs ~1.25 B per
    contact for its slots (a uint32 offsets array: 4)."""
    rng = np.random.default_rng(3)
    n_contacts = 100_000
    cid = rng.integers(0, n_contacts, 40_000).astype(np.uint32)
    slots, rows = contactindex.build(cid, n_contacts)
    assert slots.nbytes < 1.3 * n_contacts
    offsets, plain_rows = contactindex.group_by_contact(cid, n_contacts)
    assert np.array_equal(rows, plain_rows)
    starts, ends = slots.starts_ends()
    assert np.array_equal(starts, offsets[:-1]) and np.array_equal(ends, offsets[1:])


@settings(max_examples=150, deadline=None)
@given(
    cids=st.lists(st.integers(0, 69), min_size=1, max_size=400),
    heavy=st.booleans(),
    indexed_share=st.floats(0, 1),
    merges=st.lists(st.tuples(st.integers(0, 69), st.integers(0, 69)), max_size=12),
)
def test_merges_keep_every_contacts_rows(cids, heavy, indexed_share, merges) -> None:
    """After any sequence of merges, each contact's slot (its rows below the limit)
    plus its tail rows are exactly the rows whose cid names it (a numpy oracle)."""
    cid = np.array(cids, np.uint32)
    if heavy:  # contact 40 past the narrow limit: its block starts explicit
        cid = np.concatenate([cid, np.full(300, 40, np.uint32)])
    n, n_contacts = len(cid), 70
    limit = int(n * indexed_share)
    slots, rows = contactindex.build(np.ascontiguousarray(cid[:limit]), n_contacts)
    used = len(rows)
    origin = np.full(n, NO_CODE, np.uint32)
    for merged, survivor in merges:
        if merged == survivor:
            continue
        before = cid.copy()
        while True:
            moved, got = contactindex.move_contact(
                cid, origin, slots, rows, used, limit, n, merged, survivor
            )
            if moved >= 0:
                break
            rows = np.concatenate([rows, np.zeros(got - len(rows), np.uint32)])
        used = got
        assert moved == int((before == merged).sum())
        assert not (cid == merged).any()
        for c in range(n_contacts):
            a, b = slots.span(c)
            mine = rows[a:b]
            mine = mine[mine < limit].tolist()
            tail = (np.flatnonzero(cid[limit:] == c) + limit).tolist()
            assert mine == sorted(mine)
            assert mine + tail == np.flatnonzero(cid == c).tolist()
