"""Identity over gRPC and segctl (issue 12): MergeContacts, LinkIdentity, UnlinkIdentity,
Resolve, GetContact; ingest by link; conflicts as INVALID_ARGUMENT with per-row
violations; ``segctl contacts show|merge|links``."""

from __future__ import annotations

import json

import grpc
import pytest

from segd.server.client import SegdRpcError
from segd.v1 import ingest_pb2
from tests.integration.conftest import BASE_TS, run_segctl

NOW = BASE_TS + 5 * 86_400


def _ev(cid: str, dt: int, etype: str, **props: str) -> ingest_pb2.Event:
    return ingest_pb2.Event(
        customer_id=cid, ts_ms=(BASE_TS + dt) * 1000, type=etype, properties=props
    )


def test_merge_link_resolve_over_grpc(srv, client):
    client.ingest_events(
        ingest_pb2.EventBatch(
            events=[
                _ev("", 1, "add_to_cart", device_id="ck-9"),
                _ev("c0001", 2, "order"),
            ]
        )
    )
    who = client.resolve("device_id", "ck-9")
    assert who == "device_id:ck-9"
    assert client.link_identity("c0001", "email", " Bob@Shop.RU") == "bob@shop.ru"
    assert client.resolve("email", "BOB@shop.ru") == "c0001"
    assert client.merge_contacts("c0001", [who]) == 1
    assert client.resolve("device_id", "ck-9") == "c0001"
    assert client.resolve("customer_id", who) == "c0001"
    card = client.get_contact(who, 5)
    assert card["customer_id"] == "c0001"
    assert card["links"] == {
        "email": ["bob@shop.ru"],
        "device_id": ["ck-9"],
        "customer_id": ["device_id:ck-9"],
    }
    assert card["aggregates"]["orders_count"] == 1
    froms = {e["type"]: e["merged_from"] for e in card["events"]}
    assert froms["add_to_cart"] == "device_id:ck-9" and froms["order"] is None
    assert client.count("add_to_cart() and order()", now=NOW) == 1
    with pytest.raises(SegdRpcError) as err:
        client.merge_contacts("c0001", [who])  # already merged
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "already merged" in err.value.message
    client.unlink_identity("c0001", "email", "bob@shop.ru")
    assert client.resolve("email", "bob@shop.ru") is None
    with pytest.raises(SegdRpcError) as err:
        client.get_contact("nobody")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_conflicting_rows_fail_per_row_and_merge_on_request(client):
    client.link_identity("c0002", "card", "K-1")
    batch = ingest_pb2.EventBatch(
        events=[_ev("c0003", 1, "view"), _ev("c0003", 2, "view", card="K-1")]
    )
    with pytest.raises(SegdRpcError) as err:
        client.ingest_events(batch)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.row == 1 and err.value.column == "card"
    client.ingest_events(batch, on_conflict="merge")
    assert client.resolve("customer_id", "c0002") == "c0003"


def test_segctl_contacts_show_merge_links(srv):
    client = srv.client()
    client.link_identity("c0004", "phone", "+7 912 000-00-04")
    r = run_segctl(srv, "contacts", "merge", "c0004", "c0005", "c0006")
    assert r.code == 0, r.err
    assert r.out.strip() == "merged c0005, c0006 into c0004"
    r = run_segctl(srv, "contacts", "links", "c0005")
    assert r.code == 0, r.err
    assert "phone" in r.out and "79120000004" in r.out and "c0006" in r.out
    r = run_segctl(srv, "--json", "contacts", "show", "c0006")
    assert r.code == 0, r.err
    card = json.loads(r.out)
    assert card["customer_id"] == "c0004"
    assert [e["merged_from"] for e in card["events"]].count("c0005") == 1
    r = run_segctl(srv, "contacts", "show", "c0004")
    assert r.code == 0 and "merged from" in r.out and "c0005" in r.out
    r = run_segctl(srv, "contacts", "merge", "c0004", "c0004")
    assert r.code == 1 and "into itself" in r.err
    r = run_segctl(srv, "contacts", "resolve", "phone", "89120000004")
    assert r.code == 0 and r.out.strip() == "c0004"


def test_merge_contacts_with_several_ids_is_all_or_nothing(client):
    client.ingest_events(
        ingest_pb2.EventBatch(
            events=[_ev("m-a", 1, "view"), _ev("m-b", 2, "view"), _ev("m-c", 3, "view")]
        )
    )
    with pytest.raises(SegdRpcError) as err:
        client.merge_contacts("m-a", ["m-b", "m-c", "m-b"])  # m-b twice
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pairs[2].merged" in err.value.message
    assert client.resolve("customer_id", "m-b") == "m-b"  # nothing merged
    assert client.merge_contacts("m-a", ["m-b", "m-c"]) == 2
    assert client.resolve("customer_id", "m-c") == "m-a"
