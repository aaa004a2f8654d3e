"""The RFM kernels (native/rfm.pyx) against plain numpy oracles of their definitions.

- ``rollup`` + ``take_buyers`` + ``buyer_values``: per contact the last order time,
  distinct (contact, order id) pairs before r1 and in the window, window revenue (NULL
  amounts add nothing), rounded to 6 decimals; through one kept ``Workspace`` over several
  calls (generations), which must be all zero again after each;
- ``aggregate_buyers`` + ``rollup`` of the mixed contacts + ``patch_mixed``: the same
  records from the all-time per-contact aggregates, for any window and as_of;
- ``select_positions``: ``np.sort(values)[positions]``;
- ``score_buyers``: scores, codes, named segments and histograms by the definitions, with
  and without the lookup tables (they must agree with the comparisons they replace);
- ``transitions``: the contacts whose code or mapped segment differs, over all contacts.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import rfm
from segd.native import rfm as kernels

NO_CODE = 0xFFFFFFFF
DAY = 86400

# (contact, seconds into the log, amount or None, order id or None)
order_rows = st.lists(
    st.tuples(
        st.integers(0, 11),
        st.integers(0, 40 * DAY),
        st.one_of(st.none(), st.sampled_from([0.0, 1.5, 10.0, 0.1, 99.99, -5.0, 0.2])),
        st.one_of(st.none(), st.integers(0, 9)),
    ),
    max_size=60,
)


def _log(rows):
    rows = sorted(rows, key=lambda r: r[1])
    cids = np.asarray([r[0] for r in rows], dtype=np.uint32)
    ts = np.asarray([r[1] for r in rows], dtype=np.uint32)
    amount = np.asarray(
        [np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64
    )
    codes = np.asarray(
        [NO_CODE if r[3] is None else r[3] for r in rows], dtype=np.uint32
    )
    return cids, ts, amount, codes


def _oracle(cids, ts, amount, codes, r0, r1, n, has_amount, has_codes):
    """Per contact (last, orders_all, orders_win, revenue) by the definition."""
    last = np.zeros(n, np.int64)
    seen = np.zeros(n, bool)
    revenue = np.zeros(n)
    pairs_all: set = set()
    pairs_win: set = set()
    loose_all = np.zeros(n, np.int64)
    loose_win = np.zeros(n, np.int64)
    for i in range(r1):
        c = int(cids[i])
        seen[c] = True
        last[c] = max(last[c], int(ts[i]))
        inwin = i >= r0
        if has_codes and codes[i] != NO_CODE:
            pairs_all.add((c, int(codes[i])))
            if inwin:
                pairs_win.add((c, int(codes[i])))
        else:
            loose_all[c] += 1
            loose_win[c] += inwin
        if inwin and has_amount and not np.isnan(amount[i]):
            revenue[c] += amount[i]
    orders_all = loose_all.copy()
    orders_win = loose_win.copy()
    for c, _ in pairs_all:
        orders_all[c] += 1
    for c, _ in pairs_win:
        orders_win[c] += 1
    return seen, last, orders_all, orders_win, revenue


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(order_rows, st.integers(0, 60)), min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
)
def test_rollup_take_values_match_the_definition(calls, has_amount, has_codes) -> None:
    n, n_codes = 12, 10
    ws = rfm.Workspace()
    for rows, cut in calls:
        cids, ts, amount, codes = _log(rows)
        r1 = len(cids)
        r0 = min(cut, r1)
        ws.ready(n, n_codes)
        nb = kernels.rollup(
            cids,
            ts,
            amount if has_amount else None,
            codes if has_codes else None,
            r0,
            r1,
            n,
            n_codes,
            ws.acc,
            ws.owner,
            ws.state,
            ws.generation,
            ws.bits,
        )
        buyers, dense = kernels.take_buyers(ws.acc, n, ws.bits, nb)
        assert not ws.acc.any(), "accumulators not all zero after take_buyers"
        assert not ws.bits.any(), "buyer bitset not all zero after take_buyers"
        seen, last, orders_all, orders_win, revenue = _oracle(
            cids, ts, amount, codes, r0, r1, n, has_amount, has_codes
        )
        assert buyers.tolist() == np.flatnonzero(seen).tolist()
        assert dense["last"].tolist() == last[buyers].tolist()
        assert dense["orders_all"].tolist() == orders_all[buyers].tolist()
        assert dense["orders_win"].tolist() == orders_win[buyers].tolist()
        assert np.allclose(dense["revenue_win"], revenue[buyers], rtol=0, atol=1e-9)
        # the values of the quantile cuts: scored = last order in [start, as_of)
        as_of = float(ts.max(initial=0)) + 0.5
        start = as_of - 20 * DAY
        days = np.empty(nb, np.uint32)
        freq = np.empty(nb, np.uint32)
        mon = np.empty(nb)
        k = kernels.buyer_values(dense, as_of, start, days, freq, mon)
        scored = (dense["last"] >= start) & (dense["last"] < as_of)
        assert k == int(scored.sum())
        want_days = np.floor((as_of - dense["last"][scored]) / DAY).astype(np.uint32)
        assert days[:k].tolist() == want_days.tolist()
        assert freq[:k].tolist() == orders_win[buyers][scored].tolist()
        assert mon[:k].tolist() == np.round(revenue[buyers][scored], 6).tolist()


def _aggregates(cids, ts, amount, codes, n, has_amount, has_codes):
    """What segd.aggregates keeps per contact over every row (all time): distinct
    orders, revenue, first and last order time (0: none)."""
    _, last, orders, _, revenue = _oracle(
        cids, ts, amount, codes, 0, len(cids), n, has_amount, has_codes
    )
    first = np.zeros(n, np.int64)
    for c, t in zip(cids.tolist(), ts.tolist(), strict=True):
        first[c] = t if first[c] == 0 else min(first[c], t)
    return (
        orders.astype(np.uint32),
        first.astype(np.uint32),
        last.astype(np.uint32),
        revenue.astype(np.float64),
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            order_rows.map(lambda rows: [r for r in rows if r[1] > 0]),
            st.integers(1, 41 * DAY),  # as_of (seconds into the log)
            st.integers(1, 40),  # window days
        ),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
    st.booleans(),
)
def test_aggregate_buyers_and_patch_match_the_definition(calls, has_amount, has_codes):
    """aggregate_buyers + rollup of the mixed contacts + patch_mixed = the rollup of
    every row before as_of, for windows that cover all, some or none of a contact's
    orders and as_of before, inside or after the log; through one kept Workspace."""
    n, n_codes = 12, 10
    ws = rfm.Workspace()
    for rows, as_of_s, window_days in calls:
        cids, ts, amount, codes = _log(rows)
        amount_in = amount if has_amount else None
        codes_in = codes if has_codes else None
        count, first, last, revenue = _aggregates(
            cids, ts, amount, codes, n, has_amount, has_codes
        )
        as_of = as_of_s + 0.25
        lo_s, hi_s, start = rfm.window_bounds(as_of, window_days)
        r0 = int(np.searchsorted(ts, lo_s))
        r1 = int(np.searchsorted(ts, hi_s))
        ws.ready(n, n_codes)
        ws.ready_buyers(n)
        nb, n_mixed, n_after, k = kernels.aggregate_buyers(
            count, first, last, revenue, n, lo_s, hi_s, as_of, ws.buyers, ws.dense,
            ws.mixed_pos, ws.mixed, ws.days, ws.freq, ws.mon,
        )  # fmt: skip
        buyers, dense = ws.buyers[:nb].copy(), ws.dense[:nb]
        if n_mixed:
            n_rolled = kernels.rollup(
                cids, ts, amount_in, codes_in, r0, r1, n, n_codes, ws.acc, ws.owner,
                ws.state, ws.generation, ws.bits, ws.mixed, 0 if n_after else r0,
            )  # fmt: skip
            rolled, rolled_dense = kernels.take_buyers(ws.acc, n, ws.bits, n_rolled)
            k = kernels.patch_mixed(
                dense, buyers, ws.mixed_pos[:n_mixed], count, last, rolled,
                rolled_dense, ws.mixed, as_of, start, k, ws.days, ws.freq, ws.mon,
            )  # fmt: skip
        assert not ws.mixed.any(), "mixed bitset not all zero after patch_mixed"
        assert not ws.acc.any() and not ws.bits.any()
        seen, last_o, orders_all, orders_win, rev = _oracle(
            cids, ts, amount, codes, r0, r1, n, has_amount, has_codes
        )
        assert buyers.tolist() == np.flatnonzero(seen).tolist()
        assert dense["last"].tolist() == last_o[buyers].tolist()
        assert dense["orders_all"].tolist() == orders_all[buyers].tolist()
        assert dense["orders_win"].tolist() == orders_win[buyers].tolist()
        assert np.allclose(
            dense["revenue_win"], np.round(rev[buyers], 6), rtol=0, atol=1e-9
        )
        scored = (dense["last"] >= start) & (dense["last"] < as_of)
        assert k == int(scored.sum())
        want_days = np.floor((as_of - dense["last"][scored]) / DAY).astype(np.uint32)
        assert sorted(ws.days[:k].tolist()) == sorted(want_days.tolist())
        assert sorted(ws.freq[:k].tolist()) == sorted(orders_win[buyers][scored])
        assert np.allclose(
            np.sort(ws.mon[:k]), np.sort(np.round(rev[buyers][scored], 6)), atol=1e-9
        )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, 1e-7, 1e300, -1e300]),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.integers(-1000, 1000).map(float),
        ),
        min_size=1,
        max_size=400,
    ),
    st.data(),
)
def test_select_positions_is_sort_then_index(values, data) -> None:
    arr = np.asarray(values, dtype=np.float64)
    pos = data.draw(
        st.lists(st.integers(0, len(arr) - 1), min_size=1, max_size=9), label="pos"
    )
    got = kernels.select_positions(arr, pos)
    assert got.tolist() == np.sort(arr)[pos].tolist()


def _rules_oracle(sets, orders, days, set_of):
    out = []
    for k, d, s in zip(orders, days, set_of, strict=True):
        sv = 255
        for lo, hi, dlo, dhi, seg in sets[s]:
            if (
                lo <= k
                and (hi is None or k <= hi)
                and dlo <= d
                and (dhi is None or d <= dhi)
            ):
                sv = seg
                break
        out.append(sv)
    return out


rule_lists = st.lists(
    st.tuples(
        st.integers(1, 5),
        st.one_of(st.none(), st.integers(0, 4)),
        st.integers(0, 60),
        st.one_of(st.none(), st.integers(0, 60)),
        st.integers(0, 5),
    ).map(
        lambda t: (
            t[0],
            None if t[1] is None else t[0] + t[1],
            t[2],
            None if t[3] is None else t[2] + t[3],
            t[4],
        )
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 90 * DAY),  # seconds before as_of of the last order
            st.integers(1, 9),  # orders before as_of
            st.integers(0, 9),  # orders in the window
            st.sampled_from([0.0, 1.0, 2.5, 10.0, 100.0]),
            st.integers(0, 2),  # group code (2: none)
        ),
        max_size=40,
    ),
    st.lists(rule_lists, min_size=1, max_size=2),
    st.sampled_from(["quantile", "thresholds"]),
    st.integers(2, 6),
)
def test_score_buyers_matches_the_definition(buyers_in, sets, method, scale) -> None:
    n = len(buyers_in) + 3
    as_of = 100 * DAY + 0.5
    window_days = 30
    start = as_of - window_days * DAY
    cids = np.arange(1, len(buyers_in) + 1, dtype=np.uint32)
    dense = np.zeros(len(buyers_in), dtype=kernels.acc_dtype())
    dense["last"] = [int(as_of - b[0]) for b in buyers_in]
    dense["orders_all"] = [b[1] for b in buyers_in]
    dense["orders_win"] = [b[2] for b in buyers_in]
    dense["revenue_win"] = [b[3] for b in buyers_in]
    dense["seen"] = 1
    days = np.floor((as_of - dense["last"]) / DAY).astype(np.int64)
    scored = dense["last"] >= start
    if method == "quantile":
        r_cuts = rfm._quantile_cuts_int(days[scored], scale, larger=True)
        f_cuts = rfm._quantile_cuts_int(
            dense["orders_win"][scored].astype(np.int64), scale, larger=False
        )
        m_cuts = rfm._quantile_cuts(dense["revenue_win"][scored], scale, larger=False)
        r_mode, fm_mode = 1, 0
    else:
        r_cuts = np.sort(
            np.asarray([3, 9, 15, 22, 27, 29, 30, 31, 40][: scale - 1], float)
        )
        f_cuts = np.sort(np.asarray([1, 2, 3, 5, 6, 7, 8, 9, 10][: scale - 1], float))
        m_cuts = np.sort(
            np.asarray([1, 2.5, 5, 10, 50, 90, 99, 100, 101][: scale - 1], float)
        )
        r_mode, fm_mode = 3, 2
    group_codes = np.asarray(
        [NO_CODE] + [b[4] if b[4] < 2 else NO_CODE for b in buyers_in] + [0, 0],
        np.uint32,
    )
    group_of_code = np.asarray([0, len(sets) - 1], dtype=np.uint8)
    rule_sets = tuple(
        tuple(
            rfm.Rule(f"s{seg}", (lo, hi), (dlo, dhi)) for lo, hi, dlo, dhi, seg in rules
        )
        for rules in sets
    )
    names = [f"s{i}" for i in range(6)]
    width = max(len(s) for s in sets)
    table = np.zeros((len(sets), width, 4), dtype=np.int64)
    seg_ids = np.full((len(sets), width), 255, dtype=np.uint8)
    counts = np.asarray([len(s) for s in sets], dtype=np.int64)
    for s, rules in enumerate(sets):
        for j, (lo, hi, dlo, dhi, seg) in enumerate(rules):
            table[s, j] = (
                lo,
                rfm.INF_DAYS if hi is None else hi,
                dlo,
                rfm.INF_DAYS if dhi is None else dhi,
            )
            seg_ids[s, j] = seg
    set_of = [int(group_of_code[g]) if g != NO_CODE else 0 for g in group_codes[cids]]
    want_seg = _rules_oracle(sets, dense["orders_all"].tolist(), days.tolist(), set_of)

    def score(v, cuts, mode):
        if mode == 0:
            return 1 + int((cuts < v).sum())
        if mode == 1:
            return 1 + int((cuts > v).sum())
        if mode == 2:
            return 1 + int((cuts <= v).sum())
        return scale - int((cuts <= v).sum())

    want_r = [
        score(d, r_cuts, r_mode) if s else 0 for d, s in zip(days, scored, strict=True)
    ]
    want_f = [
        score(v, f_cuts, fm_mode) if s else 0
        for v, s in zip(dense["orders_win"], scored, strict=True)
    ]
    want_m = [
        score(v, m_cuts, fm_mode) if s else 0
        for v, s in zip(dense["revenue_win"], scored, strict=True)
    ]

    luts = [
        (np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros((0, 1, 1), np.uint8)),
        (
            rfm._score_lut(r_cuts, r_mode, scale, window_days + 1),
            rfm._score_lut(f_cuts, fm_mode, scale, 5),  # shorter than some values
            rfm._segment_lut(list(rule_sets), names),
        ),
    ]
    for r_lut, f_lut, seg_lut in luts:
        r, f, m, seg = (np.zeros(n, np.uint8) for _ in range(4))
        seg.fill(255)
        code = np.zeros(n, np.uint16)
        code_hist = np.zeros(4096, np.int64)
        seg_hist = np.zeros(256, np.int64)
        values = (
            np.full(n, -1, np.int32),
            np.zeros(n, np.uint32),
            np.zeros(n, np.float64),
            np.zeros(n, np.uint32),
        )
        kernels.score_buyers(
            dense, cids, as_of, start, r_cuts, f_cuts, m_cuts, r_mode, fm_mode, scale,
            r_lut, f_lut, seg_lut, table, seg_ids, counts, group_of_code, group_codes,
            True, r, f, m, seg, code, code_hist, seg_hist, values,
        )  # fmt: skip
        assert r[cids].tolist() == want_r
        assert f[cids].tolist() == want_f
        assert m[cids].tolist() == want_m
        assert seg[cids].tolist() == want_seg
        assert r[0] == r[-1] == 0 and seg[0] == seg[-1] == 255
        assert np.array_equal(code, rfm.pack_code(r, f, m))
        assert np.array_equal(code_hist, np.bincount(code, minlength=4096))
        assert np.array_equal(seg_hist, np.bincount(seg, minlength=256))
        assert values[0][cids].tolist() == np.where(scored, days, -1).tolist()
        assert (
            values[1][cids].tolist()
            == np.where(scored, dense["orders_win"], 0).tolist()
        )
        assert values[3][cids].tolist() == dense["orders_all"].tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 30),
    st.integers(0, 30),
    st.data(),
)
def test_transitions_compare_every_contact(n_old, n_new, data) -> None:
    codes = st.sampled_from([0, 0x111, 0x234, 0x555])
    segs = st.sampled_from([255, 255, 0, 1, 2])
    old_code = np.asarray(
        data.draw(st.lists(codes, min_size=n_old, max_size=n_old)), np.uint16
    )
    old_seg = np.asarray(
        data.draw(st.lists(segs, min_size=n_old, max_size=n_old)), np.uint8
    )
    new_code = np.asarray(
        data.draw(st.lists(codes, min_size=n_new, max_size=n_new)), np.uint16
    )
    new_seg = np.asarray(
        data.draw(st.lists(segs, min_size=n_new, max_size=n_new)), np.uint8
    )
    old_lut = np.full(256, 255, np.uint8)
    old_lut[:3] = data.draw(st.permutations([0, 1, 2]))
    new_lut = np.full(256, 255, np.uint8)
    new_lut[:3] = data.draw(st.permutations([0, 1, 2]))
    old_cands = np.flatnonzero((old_seg != 255) | (old_code != 0)).astype(np.uint32)
    new_cands = np.flatnonzero((new_seg != 255) | (new_code != 0)).astype(np.uint32)
    got = kernels.transitions(
        old_cands, new_cands, old_code, old_seg, old_lut, new_code, new_seg, new_lut
    )
    # the oracle: apply_computed's definition over every contact of the new computation
    k = min(n_old, n_new)
    o_code = np.zeros(n_new, np.uint16)
    o_seg = np.full(n_new, 255, np.uint8)
    o_code[:k] = old_code[:k]
    o_seg[:k] = old_lut[old_seg[:k]]
    n_seg = new_lut[new_seg]
    changed = np.flatnonzero((o_code != new_code) | (o_seg != n_seg))
    assert got[0].tolist() == changed.tolist()
    assert got[1].tolist() == o_code[changed].tolist()
    assert got[2].tolist() == new_code[changed].tolist()
    assert got[3].tolist() == o_seg[changed].tolist()
    assert got[4].tolist() == n_seg[changed].tolist()
