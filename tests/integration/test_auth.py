"""Bearer-token auth: refused before anything runs, on every kind of call."""

from __future__ import annotations

import grpc
import pytest

from segd.server.client import SegdRpcError
from tests.integration.conftest import BASE_TS

EVENTS = [{"customer_id": "intruder", "ts": BASE_TS, "type": "ping"}]


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_refused_calls_change_nothing(srv, token):
    good = srv.client()
    before = good.stats()
    bad = srv.client(token=token, retries=0)
    calls = {
        "IngestEvents": lambda: bad.ingest_events(EVENTS),
        "StreamEvents": lambda: bad.stream_events([EVENTS, EVENTS]),
        "UpsertContacts": lambda: bad.upsert_contacts([{"customer_id": "intruder"}]),
        "Count": lambda: bad.count("age > 1"),
        "Export": lambda: list(bad.export("age > 1")),
        "Create": lambda: bad.create_segment("evil", "age > 1"),
        "Stats": lambda: bad.stats(),
    }
    for name, call in calls.items():
        with pytest.raises(SegdRpcError) as e:
            call()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED, name
        want = "missing" if token is None else "invalid"
        assert want in e.value.message
    after = good.stats()
    for key in ("contacts", "events", "segments", "events_sequence"):
        assert after[key] == before[key], key
    assert good.count('city = "Kazan"') == 250


def test_health_and_reflection_need_no_token(srv):
    bad = srv.client(token=None)
    assert bad.health() == "SERVING"
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(srv.address)
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "segd.v1.SegmentService" in services
    channel.close()


def test_no_token_configured_means_open(make_server):
    srv = make_server(token=None)
    assert srv.client(token=None).count('gender = "m"') == 500
    # a token sent to an open server is simply ignored
    assert srv.client(token="anything").count('gender = "m"') == 500
