"""``Postings.gather`` (one pass, window bounds galloped from each list's end, list
tails prefetched) against a plain numpy oracle: for any postings (rows spread over the
log, NULL codes, lists of any length), any set of codes (absent, repeated, past the
code table) and any window, it returns exactly the rows of those codes inside the
window, ascending within each code and in the order the codes are given."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native.postings import Postings

NO_CODE = 0xFFFFFFFF


@st.composite
def postings_case(draw):
    n_codes = draw(st.integers(1, 12))
    n_rows = draw(st.integers(0, 400))
    # Rows are spread over a longer log (gaps), like one dimension of a time-ordered log.
    step = draw(st.integers(1, 5))
    rows = np.arange(n_rows, dtype=np.uint32) * np.uint32(step)
    codes = np.array(
        draw(
            st.lists(
                st.one_of(st.integers(0, n_codes - 1), st.just(NO_CODE)),
                min_size=n_rows,
                max_size=n_rows,
            )
        ),
        dtype=np.uint32,
    )
    asked = np.array(
        draw(st.lists(st.integers(0, n_codes + 3), max_size=2 * n_codes)),
        dtype=np.uint32,
    )
    top = max(1, n_rows * step + 2)
    r0 = draw(st.integers(0, top))
    r1 = draw(st.integers(0, top))
    return rows, codes, asked, r0, r1


def oracle(rows, codes, asked, r0, r1) -> list[int]:
    if r1 <= r0:
        return []
    inside = (rows >= r0) & (rows < r1)
    out: list[int] = []
    for c in asked.tolist():
        out += rows[inside & (codes == c)].tolist()
    return out


@settings(max_examples=300, deadline=None)
@given(postings_case())
def test_gather_matches_numpy(case) -> None:
    rows, codes, asked, r0, r1 = case
    p = Postings()
    # two batches: the lists grow (realloc) between them as in streaming ingest
    half = len(rows) // 2
    p.append_rows(rows[:half], codes[:half])
    p.append_rows(rows[half:], codes[half:])
    got = p.gather(asked, r0, r1)
    assert got.dtype == np.uint32
    assert got.tolist() == oracle(rows, codes, asked, r0, r1)
    assert len(got) == p.count_in_window(asked, r0, r1)


def test_gather_long_lists_recent_and_old_windows() -> None:
    """Lists far longer than a galloping step: recent, old, middle and empty windows."""
    rng = np.random.default_rng(7)
    n = 50_000
    rows = np.arange(n, dtype=np.uint32)
    codes = rng.integers(0, 40, n).astype(np.uint32)
    p = Postings()
    p.append_rows(rows, codes)
    asked = np.array([3, 0, 39, 17, 17, 45], dtype=np.uint32)
    for r0, r1 in ((n - 10, n), (0, 10), (1234, 40_000), (0, n), (n, n + 5), (7, 7)):
        assert p.gather(asked, r0, r1).tolist() == oracle(rows, codes, asked, r0, r1)
