"""Unit tests of engine.events.EventLog: time order, late batches, ties, windows, postings.

The oracle of every test is a stable sort of all (ts, arrival) pairs in Python: after any
sequence of appends the log must equal it row for row, and every posting list must be
exactly the rows holding its code, ascending.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.events import EventLog

NO_CODE = 0xFFFFFFFF


def u32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.uint32)


class Model:
    """Rows as (ts, arrival, cid, code, amount); the log must equal a stable sort."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, cids, ts, codes, amount) -> None:
        base = len(self.rows)
        for i in range(len(cids)):
            a = None if amount is None else amount[i]
            self.rows.append((int(ts[i]), base + i, int(cids[i]), int(codes[i]), a))

    def sorted(self) -> list[tuple]:
        return sorted(self.rows, key=lambda r: (r[0], r[1]))


def append(log: EventLog, model: Model, cids, ts, codes=None, amount=None) -> None:
    cids, ts = u32(cids), u32(ts)
    codes_arr = u32(codes) if codes is not None else u32([NO_CODE] * len(cids))
    amt = None if amount is None else np.asarray(amount, dtype=np.float64)
    log.append(cids, ts, {} if codes is None else {"item": codes_arr}, amt)
    model.add(cids, ts, codes_arr, amt)


def check(log: EventLog, model: Model) -> None:
    want = model.sorted()
    assert log.n == len(want)
    assert log.ts.tolist() == [r[0] for r in want]
    assert log.cid.tolist() == [r[2] for r in want]
    col = log.dim("item")
    if col is not None:
        codes = col.tolist()
        assert codes == [r[3] for r in want]
        p = log.postings["item"]
        assert p.postings == sum(c != NO_CODE for c in codes)
        for code in set(codes) - {NO_CODE}:
            rows = p.rows_of(code).tolist()
            assert rows == [i for i, c in enumerate(codes) if c == code]
    if log.amount is not None:
        got = log.amount.tolist()
        exp = [np.nan if r[4] is None else r[4] for r in want]
        np.testing.assert_array_equal(got, exp)


def test_empty_log() -> None:
    log = EventLog("view")
    assert log.n == 0 and log.ts.tolist() == [] and log.window(0, 2**32) == (0, 0)
    log.append(u32([]), u32([]), {}, None)
    assert log.n == 0 and log.dim("item") is None and log.amount is None


def test_in_order_appends() -> None:
    log, m = EventLog("view"), Model()
    append(log, m, [0, 1, 2], [10, 20, 30], [5, 6, 5])
    append(log, m, [3], [30], [6])
    append(log, m, [4, 5], [40, 50], [NO_CODE, 5])
    check(log, m)
    assert log.cid.tolist() == [0, 1, 2, 3, 4, 5]


def test_unsorted_batch_is_sorted_stably() -> None:
    log, m = EventLog("view"), Model()
    append(log, m, [0, 1, 2, 3, 4], [30, 10, 30, 10, 20], [1, 2, 3, 4, 5])
    check(log, m)
    assert log.cid.tolist() == [1, 3, 4, 0, 2]


def test_equal_timestamps_keep_arrival_order_across_batches() -> None:
    log, m = EventLog("view"), Model()
    append(log, m, [0, 1], [10, 10], [0, 0])
    append(log, m, [2, 3], [10, 10], [0, 1])
    append(log, m, [4], [5], [1])  # late: lands before all of them
    append(log, m, [5], [10], [0])  # a tie with the end: after every earlier 10
    check(log, m)
    assert log.cid.tolist() == [4, 0, 1, 2, 3, 5]


def test_late_batch_moves_only_the_tail() -> None:
    log, m = EventLog("order"), Model()
    append(log, m, [0, 1, 2, 3], [10, 20, 30, 40], [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0])
    append(log, m, [9, 8], [35, 25], [1, NO_CODE], [9.0, np.nan])
    check(log, m)
    assert log.ts.tolist() == [10, 20, 25, 30, 35, 40]
    assert log.cid.tolist() == [0, 1, 8, 2, 9, 3]


def test_late_batch_older_than_everything() -> None:
    log, m = EventLog("view"), Model()
    append(log, m, [0, 1], [100, 200], [0, 1])
    append(log, m, [2, 3], [50, 1], [1, 0])
    check(log, m)
    assert log.ts.tolist() == [1, 50, 100, 200]


def test_interleaved_batches() -> None:
    log, m = EventLog("view"), Model()
    append(log, m, [0, 0, 0], [10, 30, 50], [0, 0, 0])
    append(log, m, [1, 1, 1], [20, 40, 60], [1, 1, 1])
    append(log, m, [2, 2, 2], [15, 30, 55], [0, 1, NO_CODE])
    check(log, m)
    assert log.cid.tolist() == [0, 2, 1, 0, 2, 1, 0, 2, 1]


def test_dimension_and_amount_appearing_late() -> None:
    log, m = EventLog("view"), Model()
    log.append(u32([0, 1]), u32([10, 20]), {}, None)
    m.add([0, 1], [10, 20], [NO_CODE, NO_CODE], None)
    append(log, m, [2], [15], [7], [3.5])  # a late batch brings item and amount
    check(log, m)
    assert log.dim("item").tolist() == [NO_CODE, 7, NO_CODE]
    np.testing.assert_array_equal(log.amount, [np.nan, 3.5, np.nan])
    assert log.postings["item"].rows_of(7).tolist() == [1]


def test_order_id_is_a_column_without_postings() -> None:
    log = EventLog("order")
    log.append(u32([0, 1]), u32([1, 2]), {"order_id": u32([4, 4])}, None)
    assert log.dim("order_id").tolist() == [4, 4]
    assert "order_id" not in log.postings


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [
        (0, 2**32, (0, 6)),
        (10, 20, (0, 2)),  # [10, 20): both 10s, not the 20
        (11, 20, (2, 2)),
        (20, 21, (2, 3)),
        (31, 40, (4, 4)),
        (41, 10**12, (5, 6)),  # the last second of uint32 is inside
        (-5, 10, (0, 0)),
        (40, 40, (4, 4)),
        (2**32, 2**33, (6, 6)),
    ],
)
def test_window_is_half_open(lo: int, hi: int, want: tuple[int, int]) -> None:
    log = EventLog("view")
    log.append(u32([0] * 6), u32([10, 10, 20, 30, 40, 2**32 - 1]), {}, None)
    assert log.window(lo, hi) == want
    r0, r1 = log.window(lo, hi)
    ts = np.array([10, 10, 20, 30, 40, 2**32 - 1], dtype=np.int64)
    assert r1 - r0 == int(((ts >= lo) & (ts < hi)).sum())


def test_window_read_only_ts() -> None:
    """The probe is a uint32 scalar; a read-only ts column must be fine too."""
    log = EventLog("view")
    log.append(u32([0, 1, 2]), u32([5, 6, 7]), {}, None)
    log._ts = np.frombuffer(log._ts.tobytes(), dtype=np.uint32)
    assert log.window(6, 7) == (1, 2)


def test_shrink_to_fit_keeps_content_and_allows_appends() -> None:
    log, m = EventLog("view"), Model()
    for i in range(20):
        append(log, m, [i], [100 + i], [i % 3])
    log.shrink_to_fit()
    assert len(log._cid) == log.n == 20
    check(log, m)
    append(log, m, [99], [105], [1])  # late, after a shrink
    append(log, m, [98], [500], [2])
    check(log, m)


def test_nbytes_counts_rows_and_postings() -> None:
    log = EventLog("view")
    log.append(u32([0, 1]), u32([1, 2]), {"item": u32([0, 1])}, None)
    p = log.postings["item"]
    assert log.nbytes() == 2 * (8 + 4) + p.nbytes()
    assert log.nbytes() > 0


def test_many_random_batches_vs_model() -> None:
    rng = np.random.default_rng(7)
    log, m = EventLog("view"), Model()
    for _ in range(40):
        k = int(rng.integers(1, 6))
        ts = rng.integers(1, 60, k)
        codes = rng.integers(0, 4, k).astype(np.uint32)
        codes[rng.random(k) < 0.3] = NO_CODE
        append(log, m, rng.integers(0, 10, k), ts, codes, rng.random(k))
    check(log, m)
