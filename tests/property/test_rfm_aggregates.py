"""RFM from the per-contact aggregates kept on ingest, after random operations.

``rfm.compute`` answers the buyers whose orders all lie in the window from the
aggregates (``segd.aggregates``: distinct orders, revenue, first and last order time)
and rolls up only the others from the order rows. That is exact only while the kept
aggregates equal what the order log holds, so a RuleBasedStateMachine drives a durable
Engine through order ingest (late events included: times anywhere in the period), bulk
loads in chunks, contact upserts, identity merges, snapshots, clean restarts and crash
restarts (abandoned without close: the write-ahead log is replayed), and checks after
every step that

- the aggregates equal a from-scratch numpy computation over the order log's rows;
- ``compute`` with the aggregates equals ``compute`` from the rows alone (every
  per-contact array, the window values included) for windows that cover every order,
  some or none, and for an ``as_of`` inside the period (orders after it: the restricted
  rollup from row 0 is forced by ``ROLLUP_ALL_AFTER = 1``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from segd import Engine
from segd import rfm as rfm_mod
from segd.errors import SegdError

DAY = 86_400
BASE = 1_735_689_600
NOW = BASE + 40 * DAY
IDS = [f"c{i}" for i in range(7)]
NO_CODE = 0xFFFFFFFF

orders = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(IDS),
            "ts": st.integers(BASE, BASE + 30 * DAY),
            "type": st.just("order"),
            "amount": st.one_of(st.none(), st.sampled_from([0.5, 10.0, 99.99, 2.25])),
            "order_id": st.one_of(st.none(), st.sampled_from(["o1", "o2", "o3", "o4"])),
        }
    ),
    min_size=1,
    max_size=6,
)

# (as_of, window days): every order in the window; some before it; as_of inside the
# period (orders after it); a window that ends before the last orders
MOMENTS = [(NOW, 365), (NOW, 15), (BASE + 20 * DAY + 0.5, 365), (BASE + 12 * DAY, 5)]


def aggregates_from_rows(eng: Engine) -> tuple[np.ndarray, ...]:
    """Distinct orders, revenue, first and last order per contact, from the log."""
    store = eng.store
    n = store.n_contacts
    count = np.zeros(n, np.int64)
    revenue = np.zeros(n)
    first = np.zeros(n, np.int64)
    last = np.zeros(n, np.int64)
    log = store.logs.get("order")
    if log is None or log.n == 0:
        return count, revenue, first, last
    cids, ts = log.cid.astype(np.int64), log.ts.astype(np.int64)
    codes = log.dim("order_id")
    amount = log.amount
    pairs: set[tuple[int, int]] = set()
    for i, c in enumerate(cids.tolist()):
        code = NO_CODE if codes is None else int(codes[i])
        if code == NO_CODE:
            count[c] += 1
        elif (c, code) not in pairs:
            pairs.add((c, code))
            count[c] += 1
        if amount is not None and not np.isnan(amount[i]):
            revenue[c] += amount[i]
        first[c] = ts[i] if first[c] == 0 else min(first[c], ts[i])
        last[c] = max(last[c], ts[i])
    return count, revenue, first, last


class RfmAggregates(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="segd-rfm-agg-"))
        self.eng = self._open()

    def _open(self) -> Engine:
        eng = Engine.open(self.dir, segment_bytes=4_000)
        eng.snapshot_background = False  # no fork() in a test process with threads
        return eng

    def _call(self, method: str, *args, **kw) -> None:
        try:
            getattr(self.eng, method)(*args, **kw)
        except SegdError:
            pass  # refused (unknown contact, merged already, ...): nothing changed

    @rule(batch=orders)
    def ingest(self, batch):
        self._call("append_events", batch)

    @rule(batch=orders, chunk=st.integers(1, 4))
    def bulk_load(self, batch, chunk):
        self._call("load_events", batch, rows_per_chunk=chunk)

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3))
    def upsert(self, ids):
        self._call("upsert_contacts", [{"customer_id": c} for c in ids])

    @rule(survivor=st.sampled_from(IDS), merged=st.sampled_from(IDS))
    def merge(self, survivor, merged):
        self._call("merge", survivor, merged)

    @rule()
    def snapshot(self):
        self.eng.snapshot()

    @rule()
    def clean_restart(self):
        self.eng.close()
        self.eng = self._open()

    @rule()
    def crash_restart(self):
        """Abandon the engine without close: the reopen replays the log."""
        self.eng._dir_lock.release()  # the kernel drops a dead process's lock
        self.eng = self._open()

    @invariant()
    def aggregates_match_the_rows(self):
        agg = self.eng.store.aggregates
        n = self.eng.store.n_contacts
        count, revenue, first, last = aggregates_from_rows(self.eng)
        assert agg.orders_count[:n].tolist() == count.tolist()
        assert agg.first_order_s[:n].tolist() == first.tolist()
        assert agg.last_order_s[:n].tolist() == last.tolist()
        assert np.allclose(agg.revenue[:n], revenue, rtol=0, atol=1e-9)

    @invariant()
    def compute_from_aggregates_equals_the_rollup(self):
        store, cfg = self.eng.store, self.eng.rfm_state.config
        saved = rfm_mod.ROLLUP_ALL_AFTER
        rfm_mod.ROLLUP_ALL_AFTER = 1.0
        try:
            for as_of, window in MOMENTS:
                got, want = (
                    rfm_mod.compute(
                        store,
                        as_of,
                        window,
                        5,
                        "quantile",
                        None,
                        cfg,
                        use_aggregates=use,
                    )  # fmt: skip
                    for use in (True, False)
                )
                for name in ("r", "f", "m", "segment", "recency_days", "frequency",
                             "monetary", "orders_all"):  # fmt: skip
                    a, b = getattr(got, name), getattr(want, name)
                    assert a.tolist() == b.tolist(), (as_of, window, name)
        finally:
            rfm_mod.ROLLUP_ALL_AFTER = saved

    def teardown(self):
        try:
            self.eng.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


RfmAggregates.TestCase.settings = settings(
    RfmAggregates.TestCase.settings,
    stateful_step_count=20,
    # every example opens and snapshots real directories: cap the ci profile's 150
    max_examples=min(settings.default.max_examples, 30),
)
TestRfmAggregates = RfmAggregates.TestCase
