"""Two kernels of issue 15's median queries (`med2`) against plain numpy oracles:

- ``columns.window_split`` (an "at least one order in [lo, hi)" decided by each
  candidate's latest order time): the candidates with ``lo <= last[c] < hi`` in their
  given order, and the positions of those with ``last[c] >= hi``;
- ``eventscan.collect_keys`` (the sorted ``cid << 32 | ts`` keys of a "then no"
  condition's events) for every way rows arrive: a window scan (time order),
  ascending gathered rows, any order, contact-major. A stable radix sort by contact
  for time-ordered keys was tried here and dropped (slower than numpy's sort at 1M
  contacts); the test stays as the oracle for any later change of that sort.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import columns, eventscan

U32 = 2**32 - 1


@st.composite
def split_case(draw):
    n = draw(st.integers(1, 200))
    edges = [0, 1, 99, 100, 101, 199, 200, 201, U32 - 1, U32]
    last = np.array(
        draw(
            st.lists(
                st.one_of(st.sampled_from(edges), st.integers(0, U32)),
                min_size=n,
                max_size=n,
            )
        ),
        dtype=np.uint32,
    )
    cids = np.array(
        draw(st.lists(st.integers(0, n - 1), max_size=300)), dtype=np.uint32
    )
    lo = draw(st.one_of(st.sampled_from([0, 1, 100, 101, U32]), st.integers(0, U32)))
    hi = draw(
        st.one_of(st.sampled_from([100, 200, U32, U32 + 1]), st.integers(0, 2**33))
    )
    return last, cids, lo, hi


@settings(max_examples=300, deadline=None)
@given(split_case())
def test_window_split_equals_numpy(case) -> None:
    last, cids, lo, hi = case
    inside, later = columns.window_split(last, cids, lo, hi)
    seen = last[cids].astype(np.int64)
    assert inside.dtype == np.uint32 and later.dtype == np.intp
    assert inside.tolist() == cids[(seen >= lo) & (seen < hi)].tolist()
    assert later.tolist() == np.flatnonzero(seen >= hi).tolist()


def test_window_split_refuses_a_cid_outside_the_column() -> None:
    last = np.array([5, 6], dtype=np.uint32)
    with pytest.raises(ValueError, match="candidate 2"):
        columns.window_split(last, np.array([0, 2], dtype=np.uint32), 0, 10)
    inside, later = columns.window_split(last, np.zeros(0, dtype=np.uint32), 0, 10)
    assert inside.tolist() == [] and later.tolist() == []


@st.composite
def keys_case(draw):
    n_rows = draw(st.integers(0, 300))
    # one radix pass, two, or three (contacts past 2^24)
    top = draw(st.sampled_from([3, 50, 5_000, 1 << 24, U32]))
    cid = np.array(
        draw(st.lists(st.integers(0, top - 1), min_size=n_rows, max_size=n_rows)),
        dtype=np.uint32,
    )
    ts = np.sort(
        np.array(
            draw(
                st.lists(
                    st.one_of(st.integers(0, 50), st.integers(0, U32)),
                    min_size=n_rows,
                    max_size=n_rows,
                )
            ),
            dtype=np.uint32,
        )
    )
    r0 = draw(st.integers(0, n_rows))
    r1 = draw(st.integers(r0, n_rows))
    arrival = draw(st.sampled_from(["window", "ascending", "any", "contact-major"]))
    rows = np.arange(r0, r1, dtype=np.uint32)
    if arrival == "ascending":
        rows = (
            np.unique(np.array(draw(st.lists(st.sampled_from(rows))), np.uint32))
            if len(rows)
            else rows
        )
    elif arrival == "any":
        rows = np.array(
            draw(st.lists(st.sampled_from(rows), max_size=80)) if len(rows) else [],
            dtype=np.uint32,
        )
    elif arrival == "contact-major":
        rows = rows[np.lexsort((rows, cid[rows]))] if len(rows) else rows
    mask = np.array(
        draw(st.lists(st.integers(0, 1), min_size=r1 - r0, max_size=r1 - r0)),
        dtype=np.uint8,
    )
    return cid, ts, r0, r1, arrival, rows, mask


@settings(max_examples=300, deadline=None)
@given(keys_case())
def test_collect_keys_equals_numpy_sort(case) -> None:
    cid, ts, r0, r1, arrival, rows, mask = case
    scan = eventscan.EventScanParams(
        cid,
        ts,
        r0,
        r1,
        source_rows=None if arrival == "window" else rows,
        row_mask=mask,
    )
    got = eventscan.collect_keys(scan)
    kept = rows[mask[rows.astype(np.int64) - r0] != 0] if len(rows) else rows
    want = np.sort((cid[kept].astype(np.uint64) << np.uint64(32)) | ts[kept])
    assert got.dtype == np.uint64
    assert got.tolist() == want.tolist()


def test_collect_keys_in_time_order_sorts_by_contact_stably() -> None:
    # rows in time order, contacts interleaved: the radix path must keep each
    # contact's times in order (a stable sort) and place contacts past 2^24 last
    cid = np.array([7, 1 << 30, 3, 7, 3, 1 << 30, 0], dtype=np.uint32)
    ts = np.array([10, 11, 12, 12, 13, 20, 21], dtype=np.uint32)
    got = eventscan.collect_keys(eventscan.EventScanParams(cid, ts, 0, 7))
    want = np.sort((cid.astype(np.uint64) << np.uint64(32)) | ts)
    assert got.tolist() == want.tolist()
