"""Engine._touched: the one notification path for live segments and triggers.

Every record that changes contacts' data tells the hooks which contacts and why, on the
live path and on replay alike."""

from __future__ import annotations

import numpy as np

from segd import Engine


def _recorder(eng: Engine) -> list[tuple[list[str], str]]:
    seen: list[tuple[list[str], str]] = []

    def hook(cids: np.ndarray, cause: str) -> None:
        seen.append((sorted(set(eng.customer_ids(np.unique(cids)))), cause))

    eng._touch_hooks.append(hook)
    return seen


EVENTS = [
    {"customer_id": "a", "type": "view", "ts": "2026-01-01T00:00:00Z", "item": "i1"},
    {
        "customer_id": "b",
        "type": "order",
        "ts": "2026-01-02T00:00:00Z",
        "item": "i1",
        "order_id": "o1",
        "amount": 10.0,
    },
]


def test_appends_and_upserts_notify_per_type() -> None:
    eng = Engine()
    seen = _recorder(eng)
    eng.append_events(EVENTS)
    eng.upsert_contacts([{"customer_id": "c", "gender": "f"}])
    assert sorted(seen) == [(["a"], "view"), (["b"], "order"), (["c"], "upsert")]


def test_bulk_load_notifies(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(EVENTS), path)
    eng = Engine()
    seen = _recorder(eng)
    eng.load_events(path)
    assert sorted(seen) == [(["a"], "view"), (["b"], "order")]


def test_replay_notifies_like_the_live_path(tmp_path) -> None:
    with Engine.open(tmp_path / "d") as eng:
        eng.append_events(EVENTS)
        eng.upsert_contacts([{"customer_id": "c", "gender": "f"}])
    # the hook must be installed before recovery: patch the class for this open
    seen: list[tuple[list[str], str]] = []
    original = Engine.__init__

    def init(self: Engine, *a, **k) -> None:
        original(self, *a, **k)
        self._touch_hooks.append(lambda cids, cause: seen.append((len(cids), cause)))

    Engine.__init__ = init  # type: ignore[method-assign]
    try:
        with Engine.open(tmp_path / "d"):
            pass
    finally:
        Engine.__init__ = original  # type: ignore[method-assign]
    assert sorted(seen) == [(1, "order"), (1, "upsert"), (1, "view")]
