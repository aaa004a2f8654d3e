"""``Engine.merge_many``: many merges as one record, all or nothing (issue 12)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from segd import Engine
from segd.identity import MergeError

T = 1_735_689_600
NOW = T + 10 * 86_400
IDS = ["a", "b", "c", "d", "e"]


def _engine(eng: Engine | None = None) -> Engine:
    eng = eng or Engine()
    eng.append_events(
        [
            {"customer_id": c, "ts": T + i, "type": t, "order_id": f"o{i % 3}"}
            for i, (c, t) in enumerate([(c, t) for c in IDS for t in ("view", "order")])
        ]
    )
    eng.upsert_contacts([{"customer_id": c, "rank": i} for i, c in enumerate(IDS)])
    eng.create_segment("first", "rank <= 1", static=True, now=NOW)
    return eng


def state(eng: Engine) -> dict:
    return {
        "resolved": {c: eng.resolve("customer_id", c) for c in IDS},
        "orders": {c: eng.contact(c)["aggregates"]["orders_count"] for c in IDS},
        "contacts": eng.stats()["contacts"],
        "static": sorted(eng.segment('in segment "first"', now=NOW).ids()),
        "rank": sorted(eng.segment("rank >= 0", now=NOW).ids()),
    }


def test_merge_many_equals_the_merges_one_by_one():
    pairs = [("a", "b"), ("c", "a"), ("d", "e")]  # a chain: b -> a -> c
    one, many = _engine(), _engine()
    for s, m in pairs:
        one.merge(s, m)
    assert many.merge_many(pairs) == 3
    assert state(many) == state(one)
    assert many.resolve("customer_id", "b") == "c"
    assert state(many)["static"] == ["c"]  # a and b's memberships moved to c


@pytest.mark.parametrize(
    ("pairs", "where"),
    [
        ([("a", "b"), ("c", "d"), ("a", "zz")], "pairs[2].merged"),
        ([("a", "b"), ("c", "b")], "pairs[1].merged"),  # b is gone already
        ([("a", "b"), ("b", "c")], "pairs[1].survivor"),  # b is no one now
        ([("a", "a")], "pairs[0].merged"),
        ([("a",)], "pairs[0]"),
    ],
)
def test_a_bad_pair_merges_nothing(pairs, where):
    eng = _engine()
    before = state(eng)
    with pytest.raises(MergeError) as err:
        eng.merge_many(pairs)
    assert err.value.where == where
    assert state(eng) == before


def test_merge_many_replays_after_restart_and_crash():
    d = Path(tempfile.mkdtemp(prefix="segd-mm-"))
    try:
        model = _engine()
        model.merge_many([("a", "b"), ("c", "a")])
        eng = Engine.open(d)
        eng.snapshot_background = False
        _engine(eng)
        eng.merge_many([("a", "b"), ("c", "a")])
        want = state(model)
        assert state(eng) == want
        eng.close()
        eng = Engine.open(d)
        assert state(eng) == want
        eng._dir_lock.release()  # abandoned: a crash
        eng = Engine.open(d)
        assert state(eng) == want
        eng.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
