"""Unit tests of the ``def`` APIs of native.postings, native.eventscan, native.columns and
native.aggregates, each against a one-line numpy oracle, over dtypes and writable /
read-only inputs (pandas GH#21688: kernels must take np.frombuffer arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from segd.native import aggregates as agg
from segd.native import columns as colk
from segd.native import eventscan
from segd.native.postings import Postings

NO_CODE = 0xFFFFFFFF
U64 = 2**64 - 1


def u32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.uint32)


def ro(a: np.ndarray) -> np.ndarray:
    """Same contents, read-only (as np.frombuffer over gRPC bytes gives)."""
    out = np.frombuffer(a.tobytes(), dtype=a.dtype)
    assert not out.flags.writeable
    return out


def maybe_ro(a: np.ndarray, writable: bool) -> np.ndarray:
    return np.ascontiguousarray(a) if writable else ro(np.ascontiguousarray(a))


def words(n: int) -> np.ndarray:
    return np.zeros((n + 63) // 64, dtype=np.uint64)


def bits(w: np.ndarray, n: int) -> list[int]:
    return [i for i in range(n) if (int(w[i >> 6]) >> (i & 63)) & 1]


# ==================================================================================
# postings
# ==================================================================================
def build(codes, writable: bool = True) -> Postings:
    p = Postings()
    rows = np.arange(len(codes), dtype=np.uint32)
    p.append_rows(maybe_ro(rows, writable), maybe_ro(u32(codes), writable))
    return p


def oracle_rows(codes, code: int) -> list[int]:
    return np.flatnonzero(u32(codes) == code).tolist()


@pytest.mark.parametrize("writable", [True, False])
def test_append_rows_skips_null_codes(writable: bool) -> None:
    codes = [2, NO_CODE, 0, 2, NO_CODE, 5, 0]
    p = build(codes, writable)
    assert p.postings == 5
    for c in (0, 2, 5):
        assert p.rows_of(c).tolist() == oracle_rows(codes, c)
    assert p.rows_of(1).tolist() == []
    assert p.rows_of(10_000).tolist() == []
    assert p.sizes()[:6].tolist() == [2, 0, 2, 0, 0, 1]


def test_append_rows_all_null_and_empty() -> None:
    p = Postings()
    p.append_rows(u32([]), u32([]))
    p.append_rows(u32([0, 1]), u32([NO_CODE, NO_CODE]))
    assert p.postings == 0 and len(p) == 0
    with pytest.raises(ValueError, match="length mismatch"):
        p.append_rows(u32([0, 1]), u32([1]))


def test_append_rows_in_several_batches_keeps_order() -> None:
    p = Postings()
    p.append_rows(u32([0, 1, 2]), u32([1, 1, 0]))
    p.append_rows(u32([5, 9]), u32([1, 0]))
    assert p.rows_of(1).tolist() == [0, 1, 5]
    assert p.rows_of(0).tolist() == [2, 9]


@pytest.mark.parametrize("writable", [True, False])
def test_count_in_window_and_gather_vs_numpy(writable: bool) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, 200).astype(np.uint32)
    codes[rng.random(200) < 0.2] = NO_CODE
    p = build(codes)
    rows = np.arange(200)
    for want in ([0], [1, 3], [5, 2, 0], [7], [], [4, 100]):
        q = maybe_ro(u32(want), writable)
        for r0, r1 in ((0, 200), (0, 0), (13, 14), (50, 120), (199, 200)):
            hit = np.isin(codes, want) & (rows >= r0) & (rows < r1)
            assert p.count_in_window(q, r0, r1) == int(hit.sum())
            got = p.gather(q, r0, r1)
            assert got.dtype == np.uint32
            assert sorted(got.tolist()) == np.flatnonzero(hit).tolist()


def test_count_in_window_inverted_window_is_empty() -> None:
    p = build([0, 0, 0, 0])
    assert p.count_in_window(u32([0]), 3, 1) == 0


def test_gather_is_sorted_within_each_code() -> None:
    p = build([1, 0, 1, 0, 1])
    assert p.gather(u32([1, 0]), 0, 5).tolist() == [0, 2, 4, 1, 3]


def test_remap_and_insert_keeps_lists_sorted() -> None:
    # log rows 0..4 with codes; a late batch of 2 rows lands so that old rows 3, 4 move
    # to 4, 6 and the new rows take 3 and 5.
    p = build([0, 1, 0, 1, 0])
    p.remap_and_insert(3, u32([4, 6]), u32([3, 5]), u32([1, NO_CODE]))
    assert p.rows_of(0).tolist() == [0, 2, 6]
    assert p.rows_of(1).tolist() == [1, 3, 4]
    assert p.postings == 6
    p.remap_and_insert(0, u32([]), u32([7]), u32([9]))  # nothing moved, a new code
    assert p.rows_of(9).tolist() == [7]
    with pytest.raises(ValueError, match="length mismatch"):
        p.remap_and_insert(0, u32([]), u32([1, 2]), u32([0]))


def test_remap_and_insert_read_only_inputs() -> None:
    p = build([0, 0])
    p.remap_and_insert(0, ro(u32([1, 2])), ro(u32([0])), ro(u32([0])))
    assert p.rows_of(0).tolist() == [0, 1, 2]


def test_shrink_to_fit_keeps_content_and_frees_slack() -> None:
    p = Postings()
    for i in range(40):  # streaming appends grow by half: slack accumulates
        p.append_rows(u32([i]), u32([i % 2]))
    before = p.nbytes()
    p.shrink_to_fit()
    assert p.nbytes() <= before
    assert p.nbytes() < before
    # A bulk append reserves exactly: a shrunk index costs the same as a bulk-built one.
    assert p.nbytes() == build([i % 2 for i in range(40)]).nbytes()
    assert p.rows_of(0).tolist() == list(range(0, 40, 2))
    assert p.rows_of(1).tolist() == list(range(1, 40, 2))
    assert p.count_in_window(u32([0, 1]), 10, 20) == 10
    p.append_rows(u32([40]), u32([1]))  # still appendable after a shrink
    assert p.rows_of(1).tolist()[-1] == 40


# ==================================================================================
# eventscan
# ==================================================================================
class Log:
    """A tiny event log: cids, ts, one code column, amounts."""

    def __init__(self, writable: bool = True) -> None:
        self.cid = maybe_ro(u32([0, 1, 0, 2, 1, 0, 3, 1]), writable)
        self.ts = maybe_ro(u32([10, 10, 20, 25, 30, 40, 50, 60]), writable)
        self.code = maybe_ro(u32([0, 1, 1, NO_CODE, 0, 0, 2, 1]), writable)
        self.amount = maybe_ro(
            np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, np.nan, 8.0]), writable
        )
        self.n_contacts = 5


def run_count(
    log: Log,
    *,
    r0=0,
    r1=None,
    source=None,
    filters=(),
    row_mask=None,
    use_sum=False,
    cand=None,
    then_keys=None,
    within=0,
    cmin=1,
    cmax=U64,
    smin=-np.inf,
    smax=np.inf,
    distinct=None,
):
    n = log.n_contacts
    r1 = len(log.cid) if r1 is None else r1
    scan = eventscan.EventScanParams(
        log.cid,
        log.ts,
        r0,
        r1,
        source_rows=source,
        code_filters=list(filters),
        row_mask=row_mask,
        amount=log.amount if use_sum else None,
        candidates=cand,
        then_keys=then_keys,
        within_s=within,
        distinct_codes=distinct,
    )
    rule = eventscan.CountRange(cmin, cmax, sum_range=(smin, smax) if use_sum else None)
    scratch = eventscan.ScanScratch()
    scratch.ensure(n, use_sum)
    got = eventscan.count_matches(scan, rule, scratch, n)
    # The scratch arrays are left all-zero (the next query relies on it).
    assert not scratch.counts.any() and not scratch.sums.any()
    return got.matched, got.contacts, bits(got.yes, n), bits(got.no, n)


def oracle(log: Log, sel: np.ndarray, cmin=1, cmax=U64, smin=None, smax=None):
    """(yes, no) contact lists from a boolean row selection (numpy)."""
    cnt = np.bincount(log.cid[sel], minlength=log.n_contacts)
    sums = np.bincount(
        log.cid[sel], weights=np.nan_to_num(log.amount[sel]), minlength=log.n_contacts
    )
    ok = (cnt >= cmin) & (cnt <= cmax)
    if smin is not None:
        ok &= (sums >= smin) & (sums <= smax)
    touched = cnt > 0
    return np.flatnonzero(touched & ok).tolist(), np.flatnonzero(touched & ~ok).tolist()


@pytest.mark.parametrize("writable", [True, False])
def test_count_matches_whole_window(writable: bool) -> None:
    log = Log(writable)
    sel = np.ones(8, bool)
    assert run_count(log)[2:] == oracle(log, sel)
    assert run_count(log)[:2] == (8, 4)
    assert run_count(log, cmin=3, cmax=3)[2:] == oracle(log, sel, 3, 3)
    assert run_count(log, cmin=0, cmax=0)[2:] == ([], [0, 1, 2, 3])


@pytest.mark.parametrize("writable", [True, False])
def test_count_matches_window_and_source_rows(writable: bool) -> None:
    log = Log(writable)
    rows = np.arange(8)
    sel = (rows >= 2) & (rows < 6)
    assert run_count(log, r0=2, r1=6)[2:] == oracle(log, sel)
    src = maybe_ro(u32([5, 2, 4]), writable)  # unsorted, like a multi-code gather
    sel = np.isin(rows, [2, 4, 5])
    assert run_count(log, r0=2, r1=6, source=src)[2:] == oracle(log, sel)
    assert run_count(log, r0=3, r1=3)[:2] == (0, 0)


@pytest.mark.parametrize("writable", [True, False])
def test_code_filters_null_codes_and_short_masks(writable: bool) -> None:
    log = Log(writable)
    mask = maybe_ro(np.array([1, 0], np.uint8), writable)  # code 2 is past the mask
    sel = log.code == 0
    assert run_count(log, filters=[(log.code, mask)])[2:] == oracle(log, sel)
    all_on = maybe_ro(np.ones(3, np.uint8), writable)
    sel = log.code != NO_CODE  # NULL codes never match, even an all-ones mask
    assert run_count(log, filters=[(log.code, all_on)])[2:] == oracle(log, sel)
    empty = np.zeros(0, np.uint8)
    assert run_count(log, filters=[(log.code, empty)])[:2] == (0, 0)
    only_1 = maybe_ro(np.array([0, 1], np.uint8), writable)
    two = [(log.code, all_on), (log.code, only_1)]  # both must hold
    assert run_count(log, filters=two)[2:] == oracle(log, log.code == 1)


def test_row_mask_is_relative_to_r0() -> None:
    log = Log()
    rmask = np.array([1, 0, 1, 1], np.uint8)  # rows 2, 4, 5 of window [2, 6)
    got = run_count(log, r0=2, r1=6, row_mask=ro(rmask))
    assert got[2:] == oracle(log, np.isin(np.arange(8), [2, 4, 5]))
    with pytest.raises(ValueError, match="row_mask"):
        run_count(log, r0=2, r1=6, row_mask=np.ones(3, np.uint8))


def test_candidates_bitset() -> None:
    log = Log()
    cand = words(5)
    cand[0] = (1 << 1) | (1 << 3)
    sel = np.isin(log.cid, [1, 3])
    assert run_count(log, cand=ro(cand))[2:] == oracle(log, sel)
    assert run_count(log, cand=np.zeros(0, np.uint64))[:2] == (0, 0)  # empty set


@pytest.mark.parametrize("writable", [True, False])
def test_sums_skip_nan_and_ranges(writable: bool) -> None:
    log = Log(writable)
    sel = np.ones(8, bool)
    for smin, smax in ((0.0, 7.0), (7.0, 7.0), (-np.inf, 0.0), (15.0, np.inf)):
        got = run_count(log, use_sum=True, smin=smin, smax=smax)
        assert got[2:] == oracle(log, sel, smin=smin, smax=smax), (smin, smax)
    # contact 3 has only a NaN amount: its sum is 0
    assert 3 in run_count(log, use_sum=True, smin=0.0, smax=0.0)[2]


def test_then_keys_boundaries() -> None:
    """An A event at t is dropped iff a B key lies in [t, t + within)."""
    log = Log()
    within = 10
    for b_t in (9, 10, 19, 20):  # B of contact 0 relative to A at ts 10 (row 0)
        keys = np.array([(0 << 32) | b_t], np.uint64)
        got = run_count(log, r0=0, r1=1, then_keys=ro(keys), within=within)
        dropped = 10 <= b_t < 10 + within
        assert got[2] == ([] if dropped else [0]), b_t
    # another contact's B never counts; within 0 never drops
    keys = np.array([(1 << 32) | 10], np.uint64)
    assert run_count(log, r0=0, r1=1, then_keys=keys, within=10)[2] == [0]
    keys = np.array([(0 << 32) | 10], np.uint64)
    assert run_count(log, r0=0, r1=1, then_keys=keys, within=0)[2] == [0]


def test_then_keys_near_uint32_end() -> None:
    keys = np.array([(0 << 32) | (2**32 - 1)], np.uint64)
    scan = eventscan.EventScanParams(
        u32([0]), u32([2**32 - 2]), 0, 1, then_keys=keys, within_s=10**9
    )
    scratch = eventscan.ScanScratch()
    scratch.ensure(1)
    got = eventscan.count_matches(scan, eventscan.CountRange(), scratch, 1)
    assert bits(got.yes, 1) == [] and bits(got.no, 1) == []


def oracle_distinct(log: Log, sel: np.ndarray, cmin=1, cmax=U64, smin=None, smax=None):
    """(yes, no) with a contact's count = its distinct codes + its rows without a code."""
    yes, no = [], []
    for c in range(log.n_contacts):
        rows = np.flatnonzero(sel & (log.cid == c))
        if not len(rows):
            continue
        codes = log.code[rows]
        k = int((codes == NO_CODE).sum()) + len(set(codes[codes != NO_CODE].tolist()))
        ok = cmin <= k <= cmax
        if smin is not None:
            s = float(np.nan_to_num(log.amount[rows]).sum())
            ok = ok and smin <= s <= smax
        (yes if ok else no).append(c)
    return yes, no


@pytest.mark.parametrize("writable", [True, False])
def test_distinct_codes_count_one_per_code_per_contact(writable: bool) -> None:
    """Two lines of one order are one order; a line without an order id is its own."""
    log = Log(writable)
    rows = np.arange(8)
    for r0, r1, cmin, cmax in (
        (0, 8, 2, 2),
        (0, 8, 1, 1),
        (0, 8, 3, U64),
        (2, 8, 2, 2),
    ):
        sel = (rows >= r0) & (rows < r1)
        got = run_count(log, r0=r0, r1=r1, cmin=cmin, cmax=cmax, distinct=log.code)
        assert got[2:] == oracle_distinct(log, sel, cmin, cmax), (r0, r1, cmin, cmax)
        assert got[0] == int(sel.sum())  # matched still counts rows
    # contact 0 has rows with codes 0, 1, 0: 3 events but 2 distinct orders
    assert 0 in run_count(log, cmin=3, cmax=3)[2]
    assert 0 in run_count(log, cmin=2, cmax=2, distinct=log.code)[2]
    # sums still add every matching line; source rows in any order
    src = maybe_ro(u32([7, 0, 5, 1, 2, 4]), writable)
    sel = np.isin(rows, [0, 1, 2, 4, 5, 7])
    for smin, smax in ((0.0, 7.0), (7.0, 15.0)):
        got = run_count(
            log,
            source=src,
            use_sum=True,
            smin=smin,
            smax=smax,
            cmin=2,
            cmax=2,
            distinct=log.code,
        )
        assert got[2:] == oracle_distinct(log, sel, 2, 2, smin, smax)
    # all rows without a code: the plain count
    nulls = maybe_ro(np.full(8, NO_CODE, np.uint32), writable)
    assert run_count(log, distinct=nulls, cmin=3, cmax=3)[2:] == oracle(
        log, np.ones(8, bool), 3, 3
    )


def test_distinct_codes_random_against_oracle() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(1, 200))
        log = Log()
        log.n_contacts = 6
        log.cid = u32(rng.integers(0, 6, n))
        log.ts = u32(np.sort(rng.integers(0, 100, n)))
        codes = rng.integers(0, 5, n).astype(np.uint32)
        codes[rng.random(n) < 0.3] = NO_CODE
        log.code = codes
        log.amount = rng.random(n)
        r0, r1 = sorted(rng.integers(0, n + 1, 2).tolist())
        cmin = int(rng.integers(0, 4))
        cmax = cmin + int(rng.integers(0, 3))
        sel = (np.arange(n) >= r0) & (np.arange(n) < r1)
        got = run_count(log, r0=r0, r1=r1, cmin=cmin, cmax=cmax, distinct=log.code)
        assert got[2:] == oracle_distinct(log, sel, cmin, cmax)


def test_distinct_codes_checks_and_clean_scratch_on_error() -> None:
    log = Log()
    with pytest.raises(ValueError, match="distinct_codes column of 4 rows"):
        eventscan.EventScanParams(log.cid, log.ts, 0, 8, distinct_codes=log.code[:4])
    eventscan.EventScanParams(log.cid, log.ts, 0, 4, distinct_codes=log.code[:4])
    # Contact 3 (row 6) is past n_contacts: contacts 0 and 1 have only coded rows before
    # it, still waiting to be counted; their sums are zeroed as well.
    scan = eventscan.EventScanParams(
        log.cid, log.ts, 0, 8, amount=log.amount, distinct_codes=log.code
    )
    scratch = eventscan.ScanScratch()
    scratch.ensure(3, True)
    rule = eventscan.CountRange(sum_range=(0.0, 100.0))
    with pytest.raises(ValueError, match="names contact 3"):
        eventscan.count_matches(scan, rule, scratch, 3)
    assert not scratch.counts.any() and not scratch.sums.any()


def test_count_matches_argument_checks() -> None:
    log = Log()
    with pytest.raises(ValueError, match="window"):
        run_count(log, r0=3, r1=2)
    with pytest.raises(ValueError, match="window"):
        run_count(log, r0=0, r1=9)
    log.n_contacts = 3  # contact 3 is named by the log
    with pytest.raises(ValueError, match="only 3"):
        run_count(log)


@pytest.mark.parametrize("n_contacts", [3_000, 70_000, 17_000_000])
@pytest.mark.parametrize("with_filter", [False, True])
def test_count_matches_few_rows_many_contacts_vs_numpy(n_contacts, with_filter) -> None:
    """Few visited rows next to many contacts take the sort path (radix sort of the
    matching rows' contacts: one pass below 4,096 contacts, three from 2**24); more rows
    take the per-contact counters. Both must agree with numpy, cids near the top included."""
    rng = np.random.default_rng(n_contacts)
    n_log = 4_000
    pool = rng.integers(0, n_contacts, 200)  # repeats: counts above 1
    pool[:3] = [0, n_contacts - 1, n_contacts - 2]
    cid = u32(rng.choice(pool, n_log))
    ts = u32(np.arange(n_log))
    code = u32(rng.integers(0, 4, n_log))
    mask = np.array([1, 0, 1, 1], dtype=np.uint8)
    r0, r1 = 100, 3_900
    for n_src in (0, 1, 50, 600, 3_000):  # 3,000 rows > 3,000 / 4 contacts: counters
        src = u32(rng.choice(np.arange(r0, r1), n_src, replace=False))
        sel = np.zeros(n_log, bool)
        sel[src] = True
        if with_filter:
            sel &= mask[code] == 1
        cnt = np.bincount(cid[sel], minlength=n_contacts)
        for cmin, cmax in ((1, U64), (2, 3), (0, 0)):
            scan = eventscan.EventScanParams(
                cid,
                ts,
                r0,
                r1,
                source_rows=src,
                code_filters=[(code, mask)] if with_filter else [],
            )
            scratch = eventscan.ScanScratch()
            scratch.ensure(n_contacts)
            got = eventscan.count_matches(
                scan, eventscan.CountRange(cmin, cmax), scratch, n_contacts
            )
            ok = (cnt >= cmin) & (cnt <= min(cmax, 2**62))
            yes = np.unpackbits(got.yes.view(np.uint8), bitorder="little")
            no = np.unpackbits(got.no.view(np.uint8), bitorder="little")
            assert (
                np.flatnonzero(yes).tolist() == np.flatnonzero((cnt > 0) & ok).tolist()
            )
            assert (
                np.flatnonzero(no).tolist() == np.flatnonzero((cnt > 0) & ~ok).tolist()
            )
            assert (got.matched, got.contacts) == (int(sel.sum()), int((cnt > 0).sum()))
            assert not scratch.counts.any()


def test_count_matches_sort_path_names_out_of_range_contact() -> None:
    cid = u32([5, 9_000, 7])
    scan = eventscan.EventScanParams(cid, u32([1, 2, 3]), 0, 3)
    scratch = eventscan.ScanScratch()
    scratch.ensure(100)
    with pytest.raises(ValueError, match="names contact 9000 but there are only 100"):
        eventscan.count_matches(scan, eventscan.CountRange(), scratch, 100)


def test_count_matches_out_of_range_contact_is_named() -> None:
    log = Log()
    log.n_contacts = 3
    with pytest.raises(ValueError, match="names contact 3"):
        run_count(log)


def test_collect_rows_and_keys() -> None:
    log = Log()
    scan = eventscan.EventScanParams(log.cid, log.ts, 0, 8, only_contact=1)
    assert (
        eventscan.collect_rows(scan).tolist() == np.flatnonzero(log.cid == 1).tolist()
    )
    scan = eventscan.EventScanParams(log.cid, log.ts, 0, 8, source_rows=u32([6, 1, 4]))
    assert eventscan.collect_rows(scan).tolist() == [1, 4, 6]
    keys = eventscan.collect_keys(
        eventscan.EventScanParams(ro(log.cid), ro(log.ts), 2, 8)
    )
    want = sorted(
        (int(c) << 32) | int(t) for c, t in zip(log.cid[2:], log.ts[2:], strict=True)
    )
    assert keys.tolist() == want
    empty = eventscan.EventScanParams(log.cid, log.ts, 3, 3)
    assert eventscan.collect_rows(empty).dtype == np.uint32
    assert eventscan.collect_keys(empty).dtype == np.uint64


def test_event_scan_params_validate_once() -> None:
    """Every bad shape or bound is refused when the parameters are built."""
    log = Log()
    P = eventscan.EventScanParams
    with pytest.raises(ValueError, match="length mismatch"):
        P(log.cid, log.ts[:7], 0, 7)
    with pytest.raises(ValueError, match="source row 7 outside"):
        P(log.cid, log.ts, 0, 6, source_rows=u32([1, 7]))
    with pytest.raises(ValueError, match="code filter 0"):
        P(log.cid, log.ts, 0, 8, code_filters=[(log.code[:4], np.ones(3, np.uint8))])
    with pytest.raises(ValueError, match="at most 16"):
        P(log.cid, log.ts, 0, 8, code_filters=[(log.code, np.ones(3, np.uint8))] * 17)
    with pytest.raises(ValueError, match="amount column"):
        P(log.cid, log.ts, 0, 8, amount=log.amount[:3])
    with pytest.raises(ValueError, match="not sorted at position 1"):
        P(log.cid, log.ts, 0, 8, then_keys=np.array([5, 4], np.uint64))
    with pytest.raises(ValueError, match="only_contact"):
        P(log.cid, log.ts, 0, 8, only_contact=-1)
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        P(log.cid.astype(np.int64), log.ts, 0, 8)
    with pytest.raises(TypeError):
        P(log.cid, log.ts, 0, 8, None)  # optional parts are keyword-only
    scan = P(log.cid, log.ts, 2, 6)
    assert scan.window == (2, 6) and scan.n_rows == 4


def test_count_range_and_scratch_checks() -> None:
    log = Log()
    rule = eventscan.CountRange(2, 3, sum_range=(0.0, 1.0))
    assert (rule.count_min, rule.count_max, rule.sum_range) == (2, 3, (0.0, 1.0))
    assert eventscan.CountRange().sum_range is None
    with pytest.raises(ValueError, match="NaN"):
        eventscan.CountRange(sum_range=(np.nan, 1.0))
    scan = eventscan.EventScanParams(log.cid, log.ts, 0, 8, amount=log.amount)
    scratch = eventscan.ScanScratch()
    with pytest.raises(ValueError, match="scratch holds 0"):
        eventscan.count_matches(scan, eventscan.CountRange(), scratch, 5)
    scratch.ensure(5)
    assert scratch.capacity == 5 and len(scratch.sums) == 0
    with pytest.raises(ValueError, match="with_sums"):
        eventscan.count_matches(scan, rule, scratch, 5)
    with pytest.raises(ValueError, match="names contact 0 but there are only 0"):
        eventscan.count_matches(scan, eventscan.CountRange(), scratch, 0)
    empty = eventscan.EventScanParams(log.cid, log.ts, 0, 0)
    got = eventscan.count_matches(empty, eventscan.CountRange(), scratch, 0)
    assert (got.matched, got.contacts, len(got.yes)) == (0, 0, 0)


# ==================================================================================
# columns
# ==================================================================================
DTYPES = [np.int8, np.int64, np.uint32, np.float64]


def iv(*pairs) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([a for a, _ in pairs], float),
        np.array([b for _, b in pairs], float),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize("with_valid", [True, False])
@pytest.mark.parametrize("with_cand", [True, False])
def test_interval_scan_vs_numpy(dtype, writable, with_valid, with_cand) -> None:
    vals = np.array([0, 1, 5, 7, 100, 3, 5, 127], dtype=dtype)
    valid = np.array([1, 1, 0, 1, 1, 1, 1, 0], np.uint8)
    cand = u32([1, 2, 4, 6, 7])
    lo, hi = iv((1, 3), (5, 5), (100, np.inf))
    out = words(len(vals))
    colk.interval_scan(
        maybe_ro(vals, writable),
        maybe_ro(lo, writable),
        maybe_ro(hi, writable),
        out,
        valid=maybe_ro(valid, writable) if with_valid else None,
        candidates=maybe_ro(cand, writable) if with_cand else None,
    )
    f = vals.astype(float)
    hit = ((f >= 1) & (f <= 3)) | (f == 5) | (f >= 100)
    if with_valid:
        hit &= valid.astype(bool)
    if with_cand:
        hit &= np.isin(np.arange(len(vals)), cand)
    assert bits(out, len(vals)) == np.flatnonzero(hit).tolist()


def test_interval_scan_nan_empty_and_checks() -> None:
    vals = np.array([np.nan, 1.0, -np.inf])
    out = words(3)
    colk.interval_scan(vals, *iv((-np.inf, np.inf)), out)
    assert bits(out, 3) == [1, 2]  # NaN matches nothing
    out = words(3)
    colk.interval_scan(vals, np.zeros(0), np.zeros(0), out)
    assert not out.any()
    colk.interval_scan(np.zeros(0), *iv((0, 1)), words(0))
    colk.interval_scan(vals, *iv((0, 1)), out, candidates=u32([]))
    assert not out.any()
    with pytest.raises(ValueError, match="lo/hi"):
        colk.interval_scan(vals, np.zeros(1), np.zeros(2), words(3))
    with pytest.raises(ValueError, match="output bitset"):
        colk.interval_scan(np.zeros(65), *iv((0, 1)), words(64))
    with pytest.raises(ValueError, match="validity"):
        colk.interval_scan(vals, *iv((0, 1)), words(3), valid=np.ones(2, np.uint8))
    with pytest.raises(ValueError, match="candidate 3"):
        colk.interval_scan(vals, *iv((0, 1)), words(3), candidates=u32([3]))
    with pytest.raises(TypeError):
        colk.interval_scan(vals, *iv((0, 1)), words(3), None)  # keyword-only


def test_interval_scan_uint32_max_and_int64_extremes() -> None:
    vals = np.array([0, 2**32 - 1], np.uint32)
    out = words(2)
    colk.interval_scan(vals, *iv((2**32 - 1, 2**32 - 1)), out)
    assert bits(out, 2) == [1]
    vals = np.array([-(2**62), 2**62], np.int64)
    out = words(2)
    colk.interval_scan(vals, *iv((-np.inf, 0)), out)
    assert bits(out, 2) == [0]


@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize("with_cand", [True, False])
def test_ratio_interval_scan_zero_denominators(writable, with_cand) -> None:
    num = np.array([10.0, 0.0, 30.0, 5.0, 0.0])
    den = u32([2, 0, 3, 0, 4])
    cand = u32([0, 1, 2, 4])
    lo, hi = iv((0, 5))
    out = words(5)
    colk.ratio_interval_scan(
        maybe_ro(num, writable),
        maybe_ro(den, writable),
        lo,
        hi,
        out,
        candidates=maybe_ro(cand, writable) if with_cand else None,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    hit = (den > 0) & (r >= 0) & (r <= 5)
    if with_cand:
        hit &= np.isin(np.arange(5), cand)
    assert bits(out, 5) == np.flatnonzero(hit).tolist()
    assert bits(out, 5) == [0, 4]
    with pytest.raises(ValueError, match="den of 2 entries is shorter"):
        colk.ratio_interval_scan(num, den[:2], lo, hi, words(5))


@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize("with_cand", [True, False])
def test_code_mask_scan_no_code(writable, with_cand) -> None:
    codes = u32([0, NO_CODE, 2, 1, 5, 2, NO_CODE])
    mask = np.array([1, 0, 1], np.uint8)  # code 5 is past the mask: no match
    cand = u32([0, 1, 4, 5])
    out = words(7)
    colk.code_mask_scan(
        maybe_ro(codes, writable),
        maybe_ro(mask, writable),
        out,
        candidates=maybe_ro(cand, writable) if with_cand else None,
    )
    safe = np.where(codes < len(mask), codes, 0)
    hit = (codes < len(mask)) & (mask[safe] == 1)
    if with_cand:
        hit &= np.isin(np.arange(7), cand)
    assert bits(out, 7) == np.flatnonzero(hit).tolist()
    out = words(7)
    colk.code_mask_scan(codes, np.zeros(0, np.uint8), out)
    assert not out.any()


def test_scans_or_into_existing_bits() -> None:
    out = words(3)
    out[0] = 1 << 2
    colk.code_mask_scan(u32([0, 1, 1]), np.array([1, 0], np.uint8), out)
    assert bits(out, 3) == [0, 2]


# ==================================================================================
# aggregates
# ==================================================================================
@pytest.mark.parametrize("writable", [True, False])
def test_max_min_into(writable: bool) -> None:
    cids = u32([0, 2, 0, 2, 3])
    ts = u32([5, 9, 7, 1, 2**32 - 1])
    out = u32([6, 0, 0, 3])
    want = out.copy()
    np.maximum.at(want, cids, ts)
    agg.max_into(maybe_ro(cids, writable), maybe_ro(ts, writable), out)
    assert out.tolist() == want.tolist() == [7, 0, 9, 2**32 - 1]
    out = u32([6, 0, 0, 3])
    agg.min_into(maybe_ro(cids, writable), maybe_ro(ts, writable), out)
    # 0 means unset: the first value replaces it
    assert out.tolist() == [5, 0, 1, 3]


@pytest.mark.parametrize("writable", [True, False])
def test_add_into_skips_nan(writable: bool) -> None:
    cids = u32([1, 1, 0, 1])
    vals = np.array([1.5, np.nan, 2.0, -0.5])
    out = np.zeros(3)
    agg.add_into(maybe_ro(cids, writable), maybe_ro(vals, writable), out)
    want = np.bincount(cids, weights=np.nan_to_num(vals), minlength=3)
    assert out.tolist() == want.tolist() == [2.0, 1.0, 0.0]


@pytest.mark.parametrize("writable", [True, False])
def test_count_into(writable: bool) -> None:
    cids = u32([1, 1, 0, 2, 1])
    flags = np.array([1, 0, 1, 0, 1], np.uint8)
    out = u32([0, 10, 0])
    agg.count_into(maybe_ro(cids, writable), maybe_ro(flags, writable), out)
    want = np.bincount(cids[flags == 1], minlength=3) + u32([0, 10, 0])
    assert out.tolist() == want.tolist() == [1, 12, 0]


def test_aggregate_kernel_checks() -> None:
    out = u32([0, 0])
    agg.max_into(u32([]), u32([]), out)
    assert out.tolist() == [0, 0]
    with pytest.raises(ValueError, match="length mismatch"):
        agg.max_into(u32([0]), u32([1, 2]), out)
    with pytest.raises(ValueError, match="contact 2 outside"):
        agg.max_into(u32([2]), u32([1]), out)
    with pytest.raises(ValueError, match="read-only"):
        agg.max_into(u32([0]), u32([1]), ro(out))
