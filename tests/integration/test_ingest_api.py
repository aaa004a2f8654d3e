"""IngestService: typed and Arrow batches, whole-batch rejection, streaming acks."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pytest
from google.protobuf import struct_pb2

from segd.server.client import SegdRpcError, to_arrow_ipc
from segd.v1 import common_pb2, ingest_pb2
from tests.integration.conftest import BASE_TS, N_CONTACTS, TOKEN

MD = (("authorization", f"Bearer {TOKEN}"),)


def events(prefix: str, n: int, type_: str = "ping") -> list[dict]:
    return [
        {"customer_id": f"{prefix}{i}", "ts": BASE_TS + i, "type": type_}
        for i in range(n)
    ]


def test_upsert_contacts_typed_and_arrow(client):
    typed = ingest_pb2.UpsertContactsRequest(contacts=ingest_pb2.ContactBatch(contacts=[
        ingest_pb2.Contact(customer_id="t1", attributes={
            "gender": common_pb2.Value(string_value="m"),
            "age": common_pb2.Value(int_value=99),
            "city": common_pb2.Value(null_value=struct_pb2.NULL_VALUE),
        }),
    ]))  # fmt: skip
    assert client.ingest_stub.UpsertContacts(typed, metadata=MD).rows == 1
    assert client.count("age >= 99") == 1
    assert (
        client.upsert_contacts(
            pa.table({"customer_id": ["a1", "a2"], "age": [120, 121]})
        )
        == 2
    )
    assert client.count("age >= 99") == 3
    assert client.stats()["contacts"] == N_CONTACTS + 3


def test_upsert_items_typed_and_arrow(client):
    typed = ingest_pb2.UpsertItemsRequest(items=ingest_pb2.ItemBatch(items=[
        ingest_pb2.Item(item_id="i1", attributes={
            "category": common_pb2.Value(string_value="Pets/Cats/Dry food"),
            "brand": common_pb2.Value(string_value="Purrfect"),
            "price": common_pb2.Value(float_value=9.5),
            "in_stock": common_pb2.Value(bool_value=True),
        }),
    ]))  # fmt: skip
    assert client.ingest_stub.UpsertItems(typed, metadata=MD).rows == 1
    rows = [{"item_id": "i2", "category": "Outdoor/Tents", "brand": "Tentco", "price": 120.0,
             "in_stock": False}]  # fmt: skip
    assert client.upsert_items(rows) == 1
    assert client.stats()["items"] >= 2


def test_ingest_events_typed_and_arrow(client):
    before = client.stats()["events"]
    typed = ingest_pb2.EventBatch(events=[
        ingest_pb2.Event(customer_id="c0001", ts_ms=BASE_TS * 1000, type="ping"),
        ingest_pb2.Event(customer_id="c0002", ts_ms=BASE_TS * 1000 + 1500, type="ping",
                         properties={"channel": "email"}),
    ])  # fmt: skip
    r1 = client.ingest_events(typed)
    assert r1.rows == 2
    r2 = client.ingest_events(events("e", 3))
    assert (r2.rows, r2.sequence) == (3, r1.sequence + 3)
    assert client.stats()["events"] == before + 5
    assert client.count("ping()") == 5


@pytest.mark.parametrize(
    "bad_row",
    [
        {"customer_id": "x", "ts": BASE_TS, "type": "Not A Type"},
        {"customer_id": None, "ts": BASE_TS, "type": "ping"},
        {"customer_id": "x", "ts": None, "type": "ping"},
    ],
)
def test_bad_event_batch_is_rejected_whole(client, bad_row):
    before = client.stats()
    rows = events("ok", 50) + [bad_row] + events("ok2", 10)
    table = pa.Table.from_pylist(rows, schema=pa.schema(
        [("customer_id", pa.string()), ("ts", pa.int64()), ("type", pa.string())]))  # fmt: skip
    with pytest.raises(SegdRpcError) as e:
        client.ingest_events(table)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    after = client.stats()
    assert after["events"] == before["events"]
    assert after["contacts"] == before["contacts"]
    assert after["events_sequence"] == before["events_sequence"]


def test_malformed_or_missing_batches_are_invalid_argument(client):
    for request in (ingest_pb2.IngestEventsRequest(arrow_ipc=b"definitely not arrow"),
                    ingest_pb2.IngestEventsRequest()):  # fmt: skip
        with pytest.raises(grpc.RpcError) as e:
            client.ingest_stub.IngestEvents(request, metadata=MD)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.ingest_stub.UpsertContacts(
            ingest_pb2.UpsertContactsRequest(), metadata=MD
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch" in e.value.details()


def test_stream_events_acks_every_batch_in_order(client):
    seen = []
    res = client.stream_events(
        (events(f"s{b}-", 20) for b in range(5)), on_ack=seen.append
    )
    assert (res.rows, res.batches) == (100, 5)
    assert [a.batch_index for a in seen] == [0, 1, 2, 3, 4]
    assert [a.rows for a in seen] == [20] * 5
    assert [b.sequence - a.sequence for a, b in zip(seen, seen[1:], strict=False)] == [
        20
    ] * 4
    assert client.count("ping()") == 100


def test_stream_events_bad_batch_ends_stream_earlier_batches_stay(client):
    batches = [events("g0-", 10), events("g1-", 10), events("bad", 1, type_="BAD"),
               events("g3-", 10)]  # fmt: skip
    acks = []
    with pytest.raises(SegdRpcError) as e:
        client.stream_events(iter(batches), on_ack=acks.append)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.message.startswith("batch 2: ")
    assert len(acks) == 2
    assert client.count("ping()") == 20


def test_merge_contacts_merges(client):
    assert client.merge_contacts("c0001", ["c0002"]) == 1
    assert client.resolve("customer_id", "c0002") == "c0001"
    with pytest.raises(SegdRpcError) as e:
        client.merge_contacts("c0001", ["c0002"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_request_is_resource_exhausted(make_server):
    srv = make_server(max_message_mb=1)
    c = srv.client()
    before = c.stats()["events"]
    big = events("big-" + "x" * 200, 8000)  # ~2 MiB of Arrow IPC
    assert len(to_arrow_ipc(big)) > 1 << 20
    with pytest.raises(SegdRpcError) as e:
        c.ingest_events(big)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert c.stats()["events"] == before
    c.close()
