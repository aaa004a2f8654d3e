"""segd.native.pairscan against plain Python / numpy oracles.

The event kernel is checked on random logs in the states the engine leaves them in: an
index covering a prefix with an unindexed tail, an index whose slots still hold rows a
late merge renumbered (rows >= limit, to be found in the tail instead), and patched slot
ends (identity merges).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import NO_CODE, contactindex, pairscan

N_CONTACTS = 6


def _log(draw, max_rows: int = 40):
    n = draw(st.integers(0, max_rows))
    cid = np.array(
        draw(st.lists(st.integers(0, N_CONTACTS - 1), min_size=n, max_size=n)),
        np.uint32,
    )
    ts = np.sort(
        np.array(draw(st.lists(st.integers(1, 60), min_size=n, max_size=n)), np.uint32)
    )
    codes = np.array(
        draw(st.lists(st.sampled_from([0, 1, 2, NO_CODE]), min_size=n, max_size=n)),
        np.uint32,
    )
    amount = np.array(
        draw(
            st.lists(st.sampled_from([1.0, 5.0, 20.0, np.nan]), min_size=n, max_size=n)
        ),
        np.float64,
    )
    return cid, ts, codes, amount


def _view(draw, cid, ts):
    """A PairLog in one of the engine's states (see module docstring)."""
    n = len(cid)
    state = draw(st.sampled_from(["prefix", "stale", "patched"]))
    built = draw(st.integers(0, n))  # rows the index was built over
    slots, rows = contactindex.build(np.ascontiguousarray(cid[:built]), N_CONTACTS)
    limit = built
    if state == "stale":  # a late merge renumbered rows from `limit` on
        limit = draw(st.integers(0, built))
    elif state == "patched":
        starts, ends = slots.starts_ends()
        empty = draw(st.integers(0, N_CONTACTS - 1))
        ends[empty] = starts[empty]  # a merged contact's emptied slot ...
        slots = contactindex.Slots.from_offsets(
            np.append(starts, np.uint32(len(rows))), ends
        )
        # ... whose rows are gone from the index: in the oracle they do not exist
        gone = np.flatnonzero(cid[:built] == empty)
        cid = cid.copy()
        cid[gone] = N_CONTACTS  # nobody's
    tail_cids, tail_rows = pairscan.tail_index(cid, limit, n)
    log = pairscan.PairLog(cid, ts, slots, rows, limit, tail_cids, tail_rows)
    return log, cid, rows, limit


def _by_contact(draw, codes, rows, limit):
    """The contact-major copy of `codes` (``contactindex.codes_by_contact``) as the
    engine keeps it: exact below `limit`; positions of rows a late merge renumbered
    (>= limit) hold whatever the old rows had, here random codes (never to be read)."""
    copy = contactindex.codes_by_contact(codes, rows, len(rows))
    stale = np.flatnonzero(rows >= limit)
    if len(stale):
        junk = draw(st.lists(st.sampled_from([0, 1, 2, NO_CODE]), min_size=len(stale),
                             max_size=len(stale)))  # fmt: skip
        copy[stale] = np.array(junk, np.uint32)
    return copy


@st.composite
def cases(draw):
    cid, ts, codes, amount = _log(draw)
    log, cid, rows, limit = _view(draw, cid, ts)
    by_contact = _by_contact(draw, codes, rows, limit) if draw(st.booleans()) else None
    mask = np.array(draw(st.lists(st.integers(0, 1), min_size=3, max_size=3)), np.uint8)
    use_codes = draw(st.booleans())
    groups = draw(
        st.lists(
            st.lists(
                st.sampled_from([(0.0, 2.0), (4.0, 10.0), (15.0, 30.0)]), max_size=2
            ),
            max_size=2,
        )
    )
    intervals = [
        (np.array([a for a, _ in g], float), np.array([b for _, b in g], float))
        for g in groups
    ]
    then = None
    if draw(st.booleans()):
        t_cid, t_ts, t_codes, t_amount = _log(draw, 15)
        t_log, t_cid, _, _ = _view(draw, t_cid, t_ts)
        t_mask = np.array([1, 0, 1], np.uint8)
        then = (t_cid, t_ts, t_codes, t_log, t_mask, draw(st.integers(0, 20)))
    k = draw(st.integers(1, 12))
    pc = np.array(
        draw(st.lists(st.integers(0, N_CONTACTS - 1), min_size=k, max_size=k)),
        np.uint32,
    )
    lo = np.array(draw(st.lists(st.integers(0, 60), min_size=k, max_size=k)), np.int64)
    span = np.array(draw(st.lists(st.integers(0, 60), min_size=k, max_size=k)))
    hi = (lo + span).astype(np.int64)
    count_min = draw(st.integers(0, 3))
    count_max = draw(st.sampled_from([1, 2, 4, 2**64 - 1]))
    sum_range = draw(st.sampled_from([None, (0.0, 10.0), (5.0, 1e9)]))
    distinct = draw(st.booleans())
    return dict(
        cid=cid, ts=ts, codes=codes, amount=amount, log=log, mask=mask,
        by_contact=by_contact,
        use_codes=use_codes, intervals=intervals, then=then, pc=pc, lo=lo, hi=hi,
        count_min=count_min, count_max=count_max, sum_range=sum_range,
        distinct=distinct,
    )  # fmt: skip


def _oracle(case) -> list[int]:
    cid, ts, codes, amount = case["cid"], case["ts"], case["codes"], case["amount"]

    def ok(r: int) -> bool:
        if case["use_codes"]:
            code = int(codes[r])
            if code == NO_CODE or code >= len(case["mask"]) or not case["mask"][code]:
                return False
        for lo, hi in case["intervals"]:
            if not any(a <= amount[r] <= b for a, b in zip(lo, hi, strict=True)):
                return False
        return True

    def followed(c: int, t: int) -> bool:
        if case["then"] is None:
            return False
        t_cid, t_ts, t_codes, _, t_mask, within = case["then"]
        for r in range(len(t_cid)):
            code = int(t_codes[r])
            passes = code != NO_CODE and code < len(t_mask) and t_mask[code]
            if t_cid[r] == c and t <= t_ts[r] < t + within and passes:
                return True
        return False

    out = []
    for c, lo, hi in zip(case["pc"], case["lo"], case["hi"], strict=True):
        rows = [
            r
            for r in range(len(cid))
            if cid[r] == c and lo <= ts[r] < hi and ok(r) and not followed(c, ts[r])
        ]
        if not rows:
            out.append(pairscan.NO_EVENTS)
            continue
        if case["distinct"]:
            coded = {int(codes[r]) for r in rows if codes[r] != NO_CODE}
            count = len(coded) + sum(1 for r in rows if codes[r] == NO_CODE)
        else:
            count = len(rows)
        total = float(np.nansum(amount[rows]))
        good = case["count_min"] <= count <= case["count_max"]
        if case["sum_range"] is not None:
            good &= case["sum_range"][0] <= total <= case["sum_range"][1]
        out.append(pairscan.QUALIFIES if good else pairscan.FAILS)
    return out


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_event_pairs_matches_the_oracle(case) -> None:
    src = pairscan.PairSource(
        case["log"],
        code_filters=(
            [(case["codes"], case["mask"], case["by_contact"])]
            if case["use_codes"]
            else []
        ),
        amount=case["amount"],
        amount_intervals=case["intervals"],
    )
    then, within = None, 0
    if case["then"] is not None:
        _, _, t_codes, t_log, t_mask, within = case["then"]
        then = pairscan.PairSource(t_log, code_filters=[(t_codes, t_mask)])
    got = pairscan.event_pairs(
        src,
        case["pc"],
        case["lo"],
        case["hi"],
        case["count_min"],
        case["count_max"],
        sum_range=case["sum_range"],
        distinct_codes=case["codes"] if case["distinct"] else None,
        then=then,
        within_s=within,
    )
    assert got.tolist() == _oracle(case)


def _empty_log(n: int = 3) -> pairscan.PairLog:
    cid = np.zeros(n, np.uint32)
    ts = np.arange(1, n + 1, dtype=np.uint32)
    slots, rows = contactindex.build(cid, 2)
    t_c, t_r = pairscan.tail_index(cid, n, n)
    return pairscan.PairLog(cid, ts, slots, rows, n, t_c, t_r)


def test_shapes_are_checked() -> None:
    log = _empty_log()
    cid = np.zeros(3, np.uint32)
    ts = np.arange(1, 4, dtype=np.uint32)
    slots, rows = contactindex.build(cid, 2)
    t_c, t_r = pairscan.tail_index(cid, 1, 3)
    with pytest.raises(ValueError, match="tail index"):
        pairscan.PairLog(cid, ts, slots, rows, 2, t_c, t_r)
    with pytest.raises(ValueError, match="ts has"):
        pairscan.PairLog(cid, ts[:2], slots, rows, 1, t_c, t_r)
    with pytest.raises(ValueError, match="shorter"):
        pairscan.PairSource(
            log, code_filters=[(np.zeros(1, np.uint32), np.ones(1, np.uint8))]
        )
    with pytest.raises(ValueError, match="need the amount"):
        pairscan.PairSource(log, amount_intervals=[(np.zeros(1), np.ones(1))])
    src = pairscan.PairSource(log)
    one = np.zeros(1, np.uint32)
    with pytest.raises(ValueError, match="differ in length"):
        pairscan.event_pairs(src, one, np.zeros(2, np.int64), np.zeros(1, np.int64))
    got = pairscan.event_pairs(
        src, np.array([0, 1], np.uint32), np.zeros(2, np.int64), np.full(2, 9, np.int64)
    )
    assert got.tolist() == [pairscan.QUALIFIES, pairscan.NO_EVENTS]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-10, 10), st.just(float("nan"))), min_size=1, max_size=20
    ),
    data=st.data(),
)
def test_gathers_match_numpy(values, data) -> None:
    v = np.array(values)
    n = len(v)
    valid = np.array(
        data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8
    )
    cids = np.array(
        data.draw(st.lists(st.integers(0, n - 1), max_size=30)), dtype=np.uint32
    )
    lo, hi = np.array([-5.0, 2.0]), np.array([-1.0, 4.5])
    want = ((v >= -5) & (v <= -1)) | ((v >= 2) & (v <= 4.5))
    got = pairscan.interval_pairs(v, lo, hi, cids, valid=valid).view(bool)
    assert got.tolist() == (want & valid.astype(bool))[cids].tolist()
    as_int = np.nan_to_num(v).astype(np.int64)
    want = ((as_int >= -5) & (as_int <= -1)) | ((as_int >= 2) & (as_int <= 4.5))
    got = pairscan.interval_pairs(as_int, lo, hi, cids).view(bool)
    assert got.tolist() == want[cids].tolist()
    den = np.array(
        data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.uint32
    )
    num = np.nan_to_num(v)
    ratio = np.full(n, np.nan)
    np.divide(num, den, out=ratio, where=den > 0)
    want = ((ratio >= -5) & (ratio <= -1)) | ((ratio >= 2) & (ratio <= 4.5))
    assert pairscan.ratio_pairs(num, den, lo, hi, cids).view(bool).tolist() == (
        want[cids].tolist()
    )
    codes = np.array(
        data.draw(
            st.lists(st.sampled_from([0, 1, 5, NO_CODE]), min_size=n, max_size=n)
        ),
        np.uint32,
    )
    mask = np.array([1, 0, 1], np.uint8)
    want = [c != NO_CODE and c < 3 and bool(mask[c]) for c in codes[cids].tolist()]
    assert pairscan.code_mask_pairs(codes, mask, cids).view(bool).tolist() == want


def test_gathers_refuse_cids_past_the_column() -> None:
    with pytest.raises(ValueError, match="cid 3 beyond the column of 3"):
        pairscan.interval_pairs(
            np.zeros(3), np.zeros(1), np.ones(1), np.array([3], np.uint32)
        )
    with pytest.raises(ValueError, match="code column"):
        pairscan.code_mask_pairs(
            np.zeros(2, np.uint32), np.ones(1, np.uint8), np.array([2], np.uint32)
        )
