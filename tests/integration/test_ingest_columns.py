"""IngestService with the columnar typed batch (``EventColumns``) on a real server:
the same events as the Arrow path, bad values named by row and column with nothing
stored, and StreamEvents acknowledging columnar batches in order."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pytest

from segd.server.client import SegdRpcError, to_event_columns
from segd.v1 import ingest_pb2
from tests.integration.conftest import BASE_TS, TOKEN

MD = (("authorization", f"Bearer {TOKEN}"),)


def table(prefix: str, n: int, type_: str = "ping") -> pa.Table:
    return pa.table(
        {
            "customer_id": [f"{prefix}{i}" for i in range(n)],
            "ts": pa.array(
                [(BASE_TS + i) * 1000 for i in range(n)], pa.timestamp("ms", tz="UTC")
            ),
            "type": [type_] * n,
            "item_id": [None if i % 2 else f"i{i}" for i in range(n)],
            "amount": [float(i) if i % 3 == 0 else None for i in range(n)],
            "channel": [None if i % 4 else "email" for i in range(n)],
        }
    )


def test_columns_apply_like_arrow(client):
    before = client.stats()["events"]
    r1 = client.ingest_events(to_event_columns(table("col", 40)))
    r2 = client.ingest_events(table("arr", 40))
    assert (r1.rows, r2.rows) == (40, 40)
    assert r2.sequence == r1.sequence + 40
    assert client.stats()["events"] == before + 80
    assert client.count("ping()") == 80
    # the same members whichever form carried them
    for dsl in ('ping(channel = "email")', "ping() count >= 1"):
        members = client.members(dsl)
        col = sorted(m[3:] for m in members if m.startswith("col"))
        arr = sorted(m[3:] for m in members if m.startswith("arr"))
        assert col == arr and col


def test_bad_value_is_named_by_row_and_column_and_nothing_is_stored(client):
    before = client.stats()
    bad = table("bad", 20)
    types = ["ping"] * 20
    types[7] = "Not A Type"
    bad = bad.set_column(2, "type", pa.array(types))
    with pytest.raises(SegdRpcError) as e:
        client.ingest_events(to_event_columns(bad))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.row, e.value.column) == (7, "type")
    after = client.stats()
    for key in ("events", "contacts", "events_sequence"):
        assert after[key] == before[key]


def test_bad_layout_is_invalid_argument_naming_the_column(client):
    cols = to_event_columns(table("lay", 5))
    del cols.ts_ms[-1]
    before = client.stats()["events"]
    with pytest.raises(grpc.RpcError) as e:
        client.ingest_stub.IngestEvents(
            ingest_pb2.IngestEventsRequest(columns=cols), metadata=MD
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "columns.ts_ms" in e.value.details()
    assert client.stats()["events"] == before


def test_stream_of_columns_acks_in_order_and_stops_at_a_bad_batch(client):
    acks = []
    res = client.stream_events(
        (table(f"s{b}-", 25) for b in range(4)), on_ack=acks.append, columns=True
    )
    assert (res.rows, res.batches) == (100, 4)
    assert [a.batch_index for a in acks] == [0, 1, 2, 3]
    batches = [table("g0-", 10), table("g1-", 10), table("x", 3, type_="BAD"),
               table("g3-", 10)]  # fmt: skip
    acks.clear()
    with pytest.raises(SegdRpcError) as e:
        client.stream_events(iter(batches), on_ack=acks.append, columns=True)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.message.startswith("batch 2: ")
    assert (e.value.row, e.value.column) == (0, "type")
    assert len(acks) == 2
    assert client.count("ping()") == 120
