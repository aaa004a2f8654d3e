"""native.contactindex against plain numpy: the rows (and counts) of candidate contacts
inside a window, with an unindexed tail, patched slots (``ends``) and contacts with more
rows than the first buffer holds (rows_of_contacts grows it)."""

from __future__ import annotations

import numpy as np
import pytest

from segd.native import contactindex


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
    offsets, rows = contactindex.build(np.ascontiguousarray(cid[:limit]), n_contacts)
    cands = np.sort(rng.choice(n_contacts, n_cand, replace=False)).astype(np.uint32)
    if heavy and n_cand:
        cands[0] = 3
        cands = np.unique(cands)
    for r0, r1 in ((0, n_log), (2_000, 15_000), (17_500, 19_000), (5, 5)):
        got = contactindex.rows_of_contacts(cands, offsets, rows, limit, r0, r1)
        assert got.tolist() == _oracle_rows(cid, cands, r0, r1, limit)
        counts = contactindex.count_of_contacts(
            cands, offsets, rows, limit, cid, r0, r1
        )
        window = cid[r0:r1]
        assert counts.tolist() == [int((window == c).sum()) for c in cands]
        ends = offsets[1:].copy()  # a patched index with unchanged slots
        again = contactindex.rows_of_contacts(cands, offsets, rows, limit, r0, r1, ends)
        assert again.tolist() == got.tolist()
