"""``event_node._postings_total``: the postings of a catalog code array, kept per log
state, must follow the log (a new append changes the answer) and never serve another
array or a writeable (per-query) one."""

from __future__ import annotations

import numpy as np

from segd.segments import event_node


class FakeLog:
    def __init__(self, sizes: list[int]) -> None:
        self.sizes = np.array(sizes, dtype=np.int64)
        self.n = int(self.sizes.sum())
        self._version = 0
        self.asked = 0

    def posting_sizes(self, dim: str) -> np.ndarray:
        self.asked += 1
        return self.sizes

    def append(self, code: int) -> None:
        self.sizes[code] += 1
        self.n += 1
        self._version += 1


def frozen(values: list[int]) -> np.ndarray:
    a = np.array(values, dtype=np.uint32)
    a.flags.writeable = False
    return a


def test_total_is_kept_per_log_state_and_follows_appends() -> None:
    log = FakeLog([5, 3, 0, 7])
    codes = frozen([0, 3, 9])  # 9: past the code table, counts nothing
    assert event_node._postings_total(log, "item", codes) == 12.0
    assert event_node._postings_total(log, "item", codes) == 12.0
    assert log.asked == 1  # the second answer was kept
    log.append(3)
    assert event_node._postings_total(log, "item", codes) == 13.0
    assert log.asked == 2
    assert event_node._postings_total(log, "other", codes) == 13.0  # per dimension
    assert log.asked == 3


def test_other_and_writeable_arrays_are_not_served_from_the_memo() -> None:
    log = FakeLog([5, 3, 0, 7])
    a = frozen([1])
    assert event_node._postings_total(log, "item", a) == 3.0
    b = frozen([0, 1])
    assert event_node._postings_total(log, "item", b) == 8.0
    w = np.array([3], dtype=np.uint32)  # a per-query array: computed every time
    assert event_node._postings_total(log, "item", w) == 7.0
    w[0] = 0
    assert event_node._postings_total(log, "item", w) == 5.0
