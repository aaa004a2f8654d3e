"""``eventscan.matching_contacts`` (collect the matching rows' contacts, radix-sort,
de-duplicate) against a plain numpy oracle: for any log (contacts up to 2^24, so the
sort takes one or two passes), window, gathered source rows (any order, repeated
contacts), code filters, row mask and candidate bitset, it returns exactly
``np.unique(cid[matching rows])``, the contacts ``count_matches`` puts in ``yes`` for
the rule "at least one event"."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import eventscan

NO_CODE = 0xFFFFFFFF


@st.composite
def scan_case(draw):
    n_rows = draw(st.integers(0, 300))
    # Few contacts (many repeats) or sparse ids up to 2^24 (two radix passes).
    top = draw(st.sampled_from([3, 50, 5_000, 1 << 24]))
    cid = np.array(
        draw(st.lists(st.integers(0, top - 1), min_size=n_rows, max_size=n_rows)),
        dtype=np.uint32,
    )
    ts = np.sort(
        np.array(
            draw(st.lists(st.integers(0, 1000), min_size=n_rows, max_size=n_rows)),
            dtype=np.uint32,
        )
    )
    code = np.array(
        draw(
            st.lists(
                st.one_of(st.integers(0, 3), st.just(NO_CODE)),
                min_size=n_rows,
                max_size=n_rows,
            )
        ),
        dtype=np.uint32,
    )
    r0 = draw(st.integers(0, n_rows))
    r1 = draw(st.integers(r0, n_rows))
    source = None
    if draw(st.booleans()):
        picked = draw(st.lists(st.integers(r0, max(r0, r1 - 1)), max_size=60))
        source = np.array([r for r in picked if r < r1], dtype=np.uint32)
    mask = None
    if draw(st.booleans()):
        mask = np.array(
            draw(st.lists(st.integers(0, 1), min_size=4, max_size=4)), np.uint8
        )
    row_mask = None
    if draw(st.booleans()):
        row_mask = np.array(
            draw(st.lists(st.integers(0, 1), min_size=r1 - r0, max_size=r1 - r0)),
            dtype=np.uint8,
        )
    cand = None
    if draw(st.booleans()):
        cand = draw(st.lists(st.integers(0, top - 1), max_size=40))
    return cid, ts, code, r0, r1, source, mask, row_mask, cand, top


@settings(max_examples=200, deadline=None)
@given(scan_case())
def test_matching_contacts_equals_numpy_unique(case) -> None:
    cid, ts, code, r0, r1, source, mask, row_mask, cand, top = case
    words = None
    if cand is not None:
        words = np.zeros((top + 63) // 64, dtype=np.uint64)
        for c in cand:
            words[c >> 6] |= np.uint64(1) << np.uint64(c & 63)
    scan = eventscan.EventScanParams(
        cid,
        ts,
        r0,
        r1,
        source_rows=source,
        code_filters=[] if mask is None else [(code, mask)],
        row_mask=row_mask,
        candidates=words,
    )
    got = eventscan.matching_contacts(scan, top)

    rows = np.arange(r0, r1) if source is None else source.astype(np.int64)
    ok = np.ones(len(rows), dtype=bool)
    if mask is not None:
        c = code[rows]
        ok &= c != NO_CODE
        ok[ok] &= mask[c[ok]] != 0
    if row_mask is not None:
        ok &= row_mask[rows - r0] != 0
    if cand is not None:
        ok &= np.isin(cid[rows], np.array(cand, dtype=np.uint32))
    want = np.unique(cid[rows[ok]])
    assert got.dtype == np.uint32
    assert got.tolist() == want.tolist()
    # The same contacts count_matches puts in yes for "at least one event".
    if top <= 5_000:
        scratch = eventscan.ScanScratch()
        scratch.ensure(top)
        split = eventscan.count_matches(scan, eventscan.CountRange(), scratch, top)
        bits = np.unpackbits(split.yes.view(np.uint8), bitorder="little")[:top]
        assert np.flatnonzero(bits).tolist() == want.tolist()


def test_matching_contacts_refuses_a_contact_past_n() -> None:
    cid = np.array([0, 7, 2], dtype=np.uint32)
    ts = np.array([1, 2, 3], dtype=np.uint32)
    scan = eventscan.EventScanParams(cid, ts, 0, 3)
    with pytest.raises(ValueError, match="contact 7"):
        eventscan.matching_contacts(scan, 5)
    with pytest.raises(ValueError, match="n_contacts"):
        eventscan.matching_contacts(scan, -1)
    assert eventscan.matching_contacts(scan, 8).tolist() == [0, 2, 7]
    empty = eventscan.EventScanParams(cid, ts, 1, 1)
    assert eventscan.matching_contacts(empty, 8).tolist() == []
