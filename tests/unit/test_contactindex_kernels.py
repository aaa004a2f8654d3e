"""native.contactindex against plain numpy: the rows (and counts) of candidate contacts
inside a window, with an unindexed tail, patched slots (``ends``) and contacts with more
rows than the first buffer holds (rows_of_contacts grows it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import NO_CODE, contactindex


def _oracle_rows(cid, cands, r0, r1, limit):
    rows = np.arange(len(cid))
    inside = (rows >= r0) & (rows < min(r1, limit)) & np.isin(cid, cands)
    indexed = []
    for c in cands:  # per candidate, in time order
        indexed.extend(rows[inside & (cid == c)].tolist())
    tail = list(range(max(r0, limit), r1))
    return indexed + tail


@pytest.mark.parametrize("n_cand", [0, 1, 7, 40, 300])
@pytest.mark.parametrize("heavy", [False, True])
def test_rows_and_counts_of_contacts_vs_numpy(n_cand: int, heavy: bool) -> None:
    rng = np.random.default_rng(n_cand + heavy)
    n_contacts, n_log = 500, 20_000
    # heavy: one contact owns most rows, past the 8 rows per candidate first reserved
    weights = np.ones(n_contacts)
    if heavy:
        weights[3] = 5_000
    cid = rng.choice(n_contacts, n_log, p=weights / weights.sum()).astype(np.uint32)
    limit = 18_000
    slots, rows = contactindex.build(np.ascontiguousarray(cid[:limit]), n_contacts)
    cands = np.sort(rng.choice(n_contacts, n_cand, replace=False)).astype(np.uint32)
    if heavy and n_cand:
        cands[0] = 3
        cands = np.unique(cands)
    for r0, r1 in ((0, n_log), (2_000, 15_000), (17_500, 19_000), (5, 5)):
        got = contactindex.rows_of_contacts(cands, slots, rows, limit, r0, r1)
        assert got.tolist() == _oracle_rows(cid, cands, r0, r1, limit)
        counts = contactindex.count_of_contacts(cands, slots, rows, limit, cid, r0, r1)
        window = cid[r0:r1]
        assert counts.tolist() == [int((window == c).sum()) for c in cands]
        # the same slots kept explicitly (as merges leave them)
        starts, ends = slots.starts_ends()
        patched = contactindex.Slots.from_offsets(
            np.append(starts, np.uint32(len(rows))), ends + 0
        )
        again = contactindex.rows_of_contacts(cands, patched, rows, limit, r0, r1)
        assert again.tolist() == got.tolist()


@pytest.mark.parametrize("tail", [False, True])
def test_count_filtered_of_contacts_vs_numpy(tail: bool) -> None:
    rng = np.random.default_rng(7 + tail)
    n_contacts, n_log = 300, 12_000
    cid = rng.integers(0, n_contacts, n_log).astype(np.uint32)
    item = rng.integers(0, 50, n_log).astype(np.uint32)
    item[rng.random(n_log) < 0.1] = 0xFFFFFFFF  # NULL codes never match
    brand = rng.integers(0, 6, n_log).astype(np.uint32)
    item_mask = (rng.random(40) < 0.4).astype(np.uint8)  # codes 40..49 past the mask
    brand_mask = np.array([1, 1, 0, 1, 0, 1], dtype=np.uint8)
    limit = 10_000 if tail else n_log
    slots, rows = contactindex.build(np.ascontiguousarray(cid[:limit]), n_contacts)
    cands = np.sort(rng.choice(n_contacts, 120, replace=False)).astype(np.uint32)
    inside_item = (item < 40) & (item_mask[np.minimum(item, 39)] == 1)
    inside_brand = brand_mask[brand] == 1
    item_by_contact = contactindex.codes_by_contact(item, rows, len(rows))
    for filters, ok in (
        ([(item, item_mask)], inside_item),
        ([(item, item_mask), (brand, brand_mask)], inside_item & inside_brand),
        ([(brand, np.zeros(0, np.uint8))], np.zeros(n_log, bool)),
        # the item filter read from its contact-major copy (by index position)
        ([(item, item_mask, item_by_contact)], inside_item),
        (
            [(brand, brand_mask), (item, item_mask, item_by_contact)],
            inside_item & inside_brand,
        ),
    ):
        for r0, r1 in ((0, n_log), (1_000, 11_000), (9_000, 9_000)):
            got = contactindex.count_filtered_of_contacts(
                cands, slots, rows, limit, cid, r0, r1, filters
            )
            sel = ok.copy()
            sel[:r0] = False
            sel[r1:] = False
            want = np.bincount(cid[sel], minlength=n_contacts)[cands]
            assert got.tolist() == want.tolist()


def test_count_filtered_of_contacts_checks() -> None:
    cid = np.zeros(10, np.uint32)
    slots, rows = contactindex.build(cid, 1)
    cands = np.zeros(1, np.uint32)
    short = [(np.zeros(5, np.uint32), np.ones(1, np.uint8))]
    with pytest.raises(ValueError, match="shorter than the window end 10"):
        contactindex.count_filtered_of_contacts(
            cands, slots, rows, 10, cid, 0, 10, short
        )
    many = [(cid, np.ones(1, np.uint8))] * 17
    with pytest.raises(ValueError, match="at most 16"):
        contactindex.count_filtered_of_contacts(
            cands, slots, rows, 10, cid, 0, 10, many
        )


@settings(max_examples=200, deadline=None)
@given(
    cids=st.lists(st.integers(0, 7), max_size=60),
    codes=st.data(),
    used_share=st.floats(0, 1),
)
def test_codes_by_contact_vs_numpy(cids, codes, used_share) -> None:
    """The contact-major copy is ``col[rows]`` over the used positions, NULL after
    (and where a row lies past a shorter column)."""
    cid = np.array(cids, np.uint32)
    slots, rows = contactindex.build(cid, 8)
    n_col = codes.draw(st.integers(0, len(cid)))
    col = np.array(
        codes.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n_col, max_size=n_col)),
        np.uint32,
    )
    used = int(len(rows) * used_share)
    got = contactindex.codes_by_contact(col, rows, used)
    want = np.full(len(rows), NO_CODE, np.uint32)
    inside = rows[:used] < n_col
    want[:used][inside] = col[rows[:used][inside]]
    assert got.tolist() == want.tolist()
    with pytest.raises(ValueError, match="outside"):
        contactindex.codes_by_contact(col, rows, len(rows) + 1)


def test_copy_shorter_than_the_index_is_refused() -> None:
    cid = np.zeros(10, np.uint32)
    slots, rows = contactindex.build(cid, 1)
    cands = np.zeros(1, np.uint32)
    flt = [(cid, np.ones(1, np.uint8), np.zeros(3, np.uint32))]
    with pytest.raises(ValueError, match="contact-major copy"):
        contactindex.count_filtered_of_contacts(cands, slots, rows, 10, cid, 0, 10, flt)
