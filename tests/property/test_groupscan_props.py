"""``groupscan.count_groups`` (one pass over a log window counting rows for several
candidate groups, for ORs of ANDs with event counts) against a plain numpy oracle: for
any log (NULL codes, codes beyond the masks, contacts beyond every candidate), window,
per-code group masks, groups without a filter, overlapping groups with repeated
candidates and any count bounds (zero included), exactly the candidates that pass one of
their groups come back, ascending."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import groupscan

NO_CODE = 0xFFFFFFFF


def _oracle(cid, codes, r0, r1, code_groups, always, groups, bounds) -> np.ndarray:
    win_c = cid[r0:r1].astype(np.int64)
    win_k = codes[r0:r1].astype(np.int64)
    inside = win_k < len(code_groups)
    row_groups = np.zeros(len(win_c), dtype=np.uint64)
    row_groups[inside] = code_groups[win_k[inside]]
    row_groups |= np.uint64(always)
    passing: set[int] = set()
    for g, members in enumerate(groups):
        lo, hi = bounds[g]
        hit = ((row_groups >> np.uint64(g)) & np.uint64(1)).astype(bool)
        for c in set(members.tolist()):
            count = int(np.count_nonzero(hit & (win_c == c)))
            if lo <= count <= hi:
                passing.add(c)
    return np.array(sorted(passing), dtype=np.uint32)


@st.composite
def group_case(draw):
    n_contacts = draw(st.integers(1, 300))
    n_codes = draw(st.integers(0, 12))
    n_rows = draw(st.integers(0, 400))
    cid = np.array(
        draw(
            st.lists(st.integers(0, n_contacts - 1), min_size=n_rows, max_size=n_rows)
        ),
        dtype=np.uint32,
    )
    codes = np.array(
        draw(
            st.lists(
                st.one_of(st.integers(0, n_codes + 2), st.just(NO_CODE)),
                min_size=n_rows,
                max_size=n_rows,
            )
        ),
        dtype=np.uint32,
    )
    r0 = draw(st.integers(0, n_rows))
    r1 = draw(st.integers(r0, n_rows))
    n_groups = draw(st.integers(1, 6))
    code_groups = np.array(
        draw(
            st.lists(
                st.integers(0, 2**n_groups - 1), min_size=n_codes, max_size=n_codes
            )
        ),
        dtype=np.uint32,
    )
    always = draw(st.integers(0, 2**n_groups - 1))
    groups = [
        np.array(
            draw(st.lists(st.integers(0, n_contacts + 70), max_size=60)),
            dtype=np.uint32,
        )
        for _ in range(n_groups)
    ]
    bounds = []
    for _ in range(n_groups):
        lo = draw(st.integers(0, 4))
        hi = draw(st.one_of(st.integers(lo, 6), st.just(2**32 - 1)))
        bounds.append((lo, hi))
    return cid, codes, r0, r1, code_groups, always, groups, bounds


def _call(cid, codes, r0, r1, code_groups, always, groups, bounds):
    flat = (np.concatenate(groups) if groups else np.zeros(0, np.uint32)).astype(
        np.uint32
    )
    ends = np.cumsum([len(m) for m in groups]).astype(np.intp)
    lo = np.array([b[0] for b in bounds], dtype=np.uint32)
    hi = np.array([b[1] for b in bounds], dtype=np.uint32)
    return groupscan.count_groups(
        cid, codes, r0, r1, code_groups, always, flat, ends, lo, hi
    )


@settings(max_examples=300, deadline=None)
@given(case=group_case())
def test_count_groups_matches_numpy(case) -> None:
    got = _call(*case)
    want = _oracle(*case)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, want)


def test_thirty_two_overlapping_groups() -> None:
    rng = np.random.default_rng(7)
    cid = rng.integers(0, 500, 20_000).astype(np.uint32)
    codes = rng.integers(0, 80, 20_000).astype(np.uint32)
    code_groups = rng.integers(0, 2**31, 70, dtype=np.uint64).astype(np.uint32)
    code_groups |= np.uint32(2**31)
    groups = [rng.integers(0, 520, 40).astype(np.uint32) for _ in range(32)]
    bounds = [(int(rng.integers(0, 40)), int(rng.integers(40, 90))) for _ in range(32)]
    case = (cid, codes, 100, 19_000, code_groups, 0, groups, bounds)
    np.testing.assert_array_equal(_call(*case), _oracle(*case))


def test_bad_input_is_refused() -> None:
    cid = np.zeros(4, dtype=np.uint32)
    codes = np.zeros(4, dtype=np.uint32)
    one = np.array([1], dtype=np.uint32)
    ends = np.array([1], dtype=np.intp)
    lo = np.array([1], dtype=np.uint32)
    ok = np.zeros(1, dtype=np.uint32)
    with pytest.raises(ValueError, match="window"):
        groupscan.count_groups(cid, codes, 2, 5, ok, 0, one, ends, lo, lo)
    with pytest.raises(ValueError, match="codes has"):
        groupscan.count_groups(cid, codes[:3], 0, 3, ok, 0, one, ends, lo, lo)
    with pytest.raises(ValueError, match="group_ends"):
        groupscan.count_groups(
            cid, codes, 0, 4, ok, 0, one, np.array([2], dtype=np.intp), lo, lo
        )
    with pytest.raises(ValueError, match="beyond"):
        groupscan.count_groups(
            cid, codes, 0, 4, ok | np.uint32(2), 0, one, ends, lo, lo
        )
    with pytest.raises(ValueError, match="always"):
        groupscan.count_groups(cid, codes, 0, 4, ok, 4, one, ends, lo, lo)
    with pytest.raises(ValueError, match="groups"):
        groupscan.count_groups(
            cid, codes, 0, 4, ok, 0, one, ends, lo, np.zeros(2, dtype=np.uint32)
        )
    many = np.ones(33, dtype=np.uint32)
    with pytest.raises(ValueError, match="at most 32"):
        groupscan.count_groups(
            cid, codes, 0, 4, ok, 0, one, np.ones(33, dtype=np.intp), many, many
        )
