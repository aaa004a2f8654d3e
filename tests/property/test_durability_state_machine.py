"""A RuleBasedStateMachine: random interleavings of event ingest, bulk loads (logged in
chunks; by customer_id or by link), contact upserts, identity links, ingest by link and merges, saved
segment create / update / delete, snapshots, clean restarts and crash restarts (the
engine abandoned without close, sometimes with a torn, unacknowledged record at the end
of the log) of a durable Engine, against an in-memory Engine fed the same calls.

After every restart the durable engine must equal the model: the same contacts, events,
segments (versions and texts) and segment counts. Profiles come from tests/conftest.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from segd import Engine, mutations
from segd import wal as walmod
from segd.errors import SegdError

BASE = 1_735_689_600
NOW = BASE + 30 * 86_400
IDS = [f"c{i}" for i in range(8)]
CITIES = ["Kazan", "Omsk", None]
QUERIES = [
    'city = "Kazan"',
    "age >= 40",
    "view()",
    "order() count >= 2",
    'view(channel = "a")',
    'in segment "s0"',
    'in segment "s1"',
]
SEGMENT_QUERIES = ['city = "Kazan"', "age < 40", "view()", 'in segment "s0"']

events = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(IDS),
            "ts": st.integers(BASE, BASE + 20 * 86_400),
            "type": st.sampled_from(["view", "order"]),
            "channel": st.sampled_from(["a", "b"]),
        }
    ),
    min_size=1,
    max_size=6,
)
contacts = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(IDS),
            "age": st.integers(18, 70),
            "city": st.sampled_from(CITIES),
        }
    ),
    min_size=1,
    max_size=4,
)


def fingerprint(eng: Engine) -> dict:
    s = eng.stats()
    counts = {}
    for q in QUERIES:
        try:
            counts[q] = eng.count(q, now=NOW)
        except SegdError as exc:
            counts[q] = type(exc).__name__
    return {
        "contacts": s["contacts"],
        "resolved": {c: eng.resolve("customer_id", c) for c in IDS},
        "cards": {k: eng.resolve("card", k) for k in ("k1", "k2", "k3", "k4")},
        "events": s["event_types"],
        "segments": [(g.name, g.version, g.dsl, g.static) for g in eng.list_segments()],
        "counts": counts,
    }


class DurableVersusMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="segd-sm-"))
        self.model = Engine()
        self.eng = self._open()
        # both know every column from the start, so segment queries compile alike
        self._both(
            "upsert_contacts", [{"customer_id": "c0", "age": 30, "city": "Omsk"}]
        )
        self._both("append_events", [{"customer_id": "c0", "ts": BASE, "type": "view",
                                      "channel": "a"}])  # fmt: skip
        self._both(
            "append_events", [{"customer_id": "c0", "ts": BASE, "type": "order"}]
        )

    def _open(self) -> Engine:
        eng = Engine.open(self.dir, segment_bytes=4_000)
        eng.snapshot_background = False  # no fork() in a test process with threads
        return eng

    def _both(self, method: str, *args, **kw) -> None:
        """The same call on both; both fail alike or both succeed."""
        expected = None
        try:
            getattr(self.model, method)(*args, **kw)
        except SegdError as exc:
            expected = type(exc)
        try:
            getattr(self.eng, method)(*args, **kw)
        except SegdError as exc:
            assert type(exc) is expected, (method, exc)
            return
        assert expected is None, (method, expected)

    @rule(batch=events)
    def ingest(self, batch):
        self._both("append_events", batch)

    @rule(batch=events, chunk=st.integers(1, 4))
    def bulk_load(self, batch, chunk):
        self._both("load_events", batch, rows_per_chunk=chunk)

    @rule(batch=contacts)
    def upsert(self, batch):
        self._both("upsert_contacts", batch)

    @rule(name=st.sampled_from(["s0", "s1"]), query=st.sampled_from(SEGMENT_QUERIES),
          static=st.booleans())  # fmt: skip
    def create_segment(self, name, query, static):
        self._both("create_segment", name, query, static=static, now=NOW)

    @rule(name=st.sampled_from(["s0", "s1"]), query=st.sampled_from(SEGMENT_QUERIES))
    def update_segment(self, name, query):
        self._both("update_segment", name, query, now=NOW)

    @rule(name=st.sampled_from(["s0", "s1"]))
    def delete_segment(self, name):
        self._both("delete_segment", name)

    @rule(survivor=st.sampled_from(IDS), merged=st.sampled_from(IDS))
    def merge(self, survivor, merged):
        """Identity merges (issue 12): refused alike (self, unknown, merged already)."""
        self._both("merge", survivor, merged)

    @rule(pairs=st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)),
                         min_size=1, max_size=3))  # fmt: skip
    def merge_many(self, pairs):
        """Many merges as one record: all or nothing, refused alike."""
        self._both("merge_many", pairs)

    @rule(cid=st.sampled_from(IDS), card=st.sampled_from(["k1", "k2"]))
    def link(self, cid, card):
        self._both("link", cid, "card", card)

    @rule(card=st.sampled_from(["k1", "k2", "k3"]), day=st.integers(0, 20),
          policy=st.sampled_from(["reject", "merge"]),
          cid=st.sampled_from([None, *IDS]))  # fmt: skip
    def ingest_by_link(self, card, day, policy, cid):
        row = {"card": card, "ts": BASE + day * 86_400, "type": "order"}
        if cid is not None:
            row["customer_id"] = cid
        self._both("append_events", [row], on_conflict=policy)

    @rule(rows=st.lists(st.tuples(st.sampled_from([None, None, *IDS[:3]]),
                                  st.sampled_from(["k1", "k3", "k4"]),
                                  st.integers(0, 20)), min_size=1, max_size=5),
          chunk=st.integers(1, 3),
          policy=st.sampled_from(["reject", "merge"]))  # fmt: skip
    def bulk_load_by_link(self, rows, chunk, policy):
        """A bulk load naming contacts by card (logged in chunks + a resolution)."""
        batch = [
            {"card": card, "ts": BASE + day * 86_400, "type": "view", "channel": "b"}
            | ({} if cid is None else {"customer_id": cid})
            for cid, card, day in rows
        ]
        self._both("load_events", batch, rows_per_chunk=chunk, on_conflict=policy)

    @rule()
    def snapshot(self):
        self.eng.snapshot()

    @rule()
    def clean_restart(self):
        self.eng.close()
        self.eng = self._open()
        assert fingerprint(self.eng) == fingerprint(self.model)

    @rule(torn=st.one_of(st.none(), st.floats(0.0, 0.999)), batch=events)
    def crash_restart(self, torn, batch):
        """Abandon the engine (no close, no final fsync) — kill -9 keeps what write()
        handed the kernel. With `torn`, a record for `batch` was being written: only a
        prefix reached the file, it was never acknowledged, and the model lacks it."""
        wal = self.eng._wal
        if torn is not None:
            import pyarrow as pa

            from segd import ingest

            valid = ingest.validate_events(pa.Table.from_pylist(batch))
            record = walmod.encode_record(
                wal.last_seq + 1, mutations.encode(mutations.EventsAppended(valid))
            )
            with open(wal.current, "ab") as f:
                f.write(record[: int(len(record) * torn)])
        self.eng._dir_lock.release()  # the kernel drops a dead process's lock
        self.eng = self._open()
        assert fingerprint(self.eng) == fingerprint(self.model)

    @invariant()
    def sizes_agree(self):
        a, b = self.eng.stats(), self.model.stats()
        assert (a["contacts"], a["events"]) == (b["contacts"], b["events"])

    def teardown(self):
        try:
            self.eng.close()
            self.eng = self._open()
            assert fingerprint(self.eng) == fingerprint(self.model)
            self.eng.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


DurableVersusMemory.TestCase.settings = settings(
    DurableVersusMemory.TestCase.settings,
    stateful_step_count=20,
    # every example opens and snapshots real directories: cap the ci profile's 150
    max_examples=min(settings.default.max_examples, 25),
)
TestDurableVersusMemory = DurableVersusMemory.TestCase
