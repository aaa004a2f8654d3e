"""Regression tests for issue 9 against the real in-process server: saved segments are
all-or-nothing, every request has a bounded cost, out-of-range input is INVALID_ARGUMENT.

Each test is a reproducer from the issue: before the fix it left a broken saved segment,
ran for minutes, or answered INTERNAL.
"""

from __future__ import annotations

import base64
import time

import grpc
import pytest

from segd.segments.limits import MAX_CONDITIONS, MAX_DEPTH
from segd.server.client import SegdRpcError
from segd.v1 import common_pb2 as common
from segd.v1 import segments_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _nothing_saved(client, name: str) -> None:
    """The failed Create left no trace: Get is NOT_FOUND, List and Count still work."""
    with pytest.raises(SegdRpcError) as e:
        client.get_segment(name)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert name not in [s["name"] for s in client.list_segments(include_counts=True)]
    assert client.count('city = "Kazan"') == 250


def _attr(value: str = "Kazan") -> common.Condition:
    c = common.Condition()
    c.attr.attr = "city"
    c.attr.op = common.OPERATOR_EQ
    c.attr.value.string_value = value
    return c


def test_fifty_nested_nots_are_refused_and_not_saved(client):
    with pytest.raises(SegdRpcError) as e:
        client.create_segment("deep", "not " * 50 + 'city = "Kazan"')
    assert e.value.code == EXHAUSTED
    assert "MAX_DEPTH" in e.value.message
    _nothing_saved(client, "deep")


def test_deepest_allowed_query_round_trips_through_the_api(client):
    dsl = "not " * (MAX_DEPTH - 1) + 'city = "Kazan"'
    saved = client.create_segment("deepest", dsl)
    assert saved["count"] == 750  # an odd number of nots is one not
    assert client.get_segment("deepest")["dsl"] == dsl
    assert client.count(segment="deepest") == 750


def test_type_error_on_a_text_column_is_invalid_and_not_saved(client):
    for include_count in (True, False):
        with pytest.raises(SegdRpcError) as e:
            client.create_segment("typo", "city = 5", include_count=include_count)
        assert e.value.code == INVALID
        _nothing_saved(client, "typo")


def test_lone_surrogate_is_invalid_and_not_saved(client):
    with pytest.raises(SegdRpcError) as e:
        client.create_segment("sur", 'city = "\\uD800"')
    assert e.value.code == INVALID
    _nothing_saved(client, "sur")


def test_reference_chain_stops_at_the_depth_limit(client):
    client.create_segment("chain0", 'city = "Kazan"', include_count=False)
    last_ok = "chain0"
    with pytest.raises(SegdRpcError) as e:
        for i in range(1, 200):
            client.create_segment(
                f"chain{i}", f'in segment "{last_ok}"', include_count=False
            )
            last_ok = f"chain{i}"
    assert e.value.code == EXHAUSTED
    assert int(last_ok[5:]) < MAX_DEPTH + 1
    # Everything that was saved still works, for every client.
    assert client.count(segment=last_ok) == 250
    assert len(client.list_segments(include_counts=True)) == int(last_ok[5:]) + 1
    _nothing_saved(client, f"chain{int(last_ok[5:]) + 1}")


def test_update_that_would_deepen_a_dependent_is_refused(client):
    client.create_segment("base", 'city = "Kazan"')
    client.create_segment("user", 'not in segment "base"')
    deep = "not " * (MAX_DEPTH - 1) + 'city = "Kazan"'  # fine alone, too deep in "user"
    with pytest.raises(SegdRpcError) as e:
        client.update_segment("base", deep)
    assert e.value.code == EXHAUSTED
    assert client.get_segment("base")["version"] == 1
    assert client.count(segment="user") == 750


def test_segment_name_must_match_the_whole_pattern(client):
    with pytest.raises(SegdRpcError) as e:
        client.create_segment("vip\n", 'city = "Kazan"')
    assert e.value.code == INVALID
    assert client.list_segments() == []


def test_huge_name_error_stays_small(client):
    name = "x" * 5000
    with pytest.raises(SegdRpcError) as e:
        client.create_segment(name + "!", 'city = "Kazan"')
    assert e.value.code == INVALID  # not RESOURCE_EXHAUSTED from the client's limit
    assert len(e.value.message) < 1200
    with pytest.raises(SegdRpcError) as e:
        client.get_segment(name)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert len(e.value.message) < 1200


def test_create_and_get_do_not_evaluate_unless_asked(make_server):
    from tests.integration.conftest import seeded_engine

    class CountingEngine:
        def __init__(self, inner):
            self.inner, self.evaluations = inner, 0

        def segment(self, *args, **kw):
            self.evaluations += 1
            return self.inner.segment(*args, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    eng = CountingEngine(seeded_engine())
    client = make_server(engine=eng).client()
    saved = client.create_segment("k", 'city = "Kazan"', include_count=False)
    assert saved["count"] is None
    assert client.get_segment("k", include_count=False)["count"] is None
    updated = client.update_segment("k", 'city = "Omsk"', include_count=False)
    assert updated["count"] is None and updated["version"] == 2
    assert eng.evaluations == 0
    assert client.get_segment("k")["count"] == 250
    assert eng.evaluations == 1
    static = client.create_segment("frozen", 'city = "Kazan"', static=True)
    assert client.get_segment("frozen", include_count=False)["count"] == 250
    assert static["count"] == 250
    client.close()


def test_typed_or_of_100k_leaves_is_refused_at_once(srv):
    cond = common.Condition()
    cond.or_node.SetInParent()
    cond.or_node.conditions.extend([_attr(f"c{i}") for i in range(100_000)])
    client = srv.client(retries=0)
    start = time.monotonic()
    with pytest.raises(SegdRpcError) as e:
        client.count(cond)
    assert e.value.code == EXHAUSTED
    assert "MAX_CONDITIONS" in e.value.message
    assert time.monotonic() - start < 5.0
    client.close()


def test_typed_or_at_the_condition_limit_is_answered(client):
    cond = common.Condition()
    cond.or_node.SetInParent()
    cities = ["Kazan", "Omsk"] + [f"nowhere{i}" for i in range(MAX_CONDITIONS - 2)]
    cond.or_node.conditions.extend([_attr(c) for c in cities])
    assert client.count(cond) == 500


def test_megabytes_of_parentheses_are_refused_at_once(client):
    start = time.monotonic()
    with pytest.raises(SegdRpcError) as e:
        client.count(")" * 3_000_000)
    assert e.value.code == EXHAUSTED
    assert "MAX_DSL_CHARS" in e.value.message
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("ms", [2**63 - 1, -(2**63), 253_402_300_800_000])
def test_out_of_range_timestamps_name_the_field(client, ms):
    attr = common.Condition()
    attr.attr.attr = "age"
    attr.attr.op = common.OPERATOR_GT
    attr.attr.value.timestamp_ms = ms
    with pytest.raises(SegdRpcError) as e:
        client.count(attr)
    assert e.value.code == INVALID
    assert "condition.attr.value.timestamp_ms" in e.value.message
    event = common.Condition()
    event.event.event = "view"
    event.event.period.absolute.from_ms = ms
    with pytest.raises(SegdRpcError) as e:
        client.count(event)
    assert e.value.code == INVALID
    assert "period.absolute.from_ms" in e.value.message


@pytest.mark.parametrize(
    "dsl",
    [
        "age > " + "9" * 400,
        "view() count >= " + "9" * 30,
        "view() in last 99999999999 days",
        "registered_at > 0000-01-01",
    ],
)
def test_out_of_range_numbers_in_dsl_are_invalid(client, dsl):
    with pytest.raises(SegdRpcError) as e:
        client.count(dsl)
    assert e.value.code == INVALID


def test_now_ms_out_of_range_names_the_field(srv):
    stub = srv.client().segments_stub
    metadata = (("authorization", f"Bearer {srv.token}"),)
    for call, request in (
        (stub.Count, pb.CountRequest(dsl='city = "Kazan"', now_ms=10**18)),
        (stub.Members, pb.MembersRequest(dsl='city = "Kazan"', now_ms=-5)),
        (stub.Sample, pb.SampleRequest(dsl='city = "Kazan"', now_ms=10**18)),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call(request, metadata=metadata, timeout=10)
        assert e.value.code() == INVALID
        assert "now_ms" in e.value.details()


@pytest.mark.parametrize(
    "raw",
    [
        '{"o":Infinity,"n":1,"k":"x"}',
        '{"o":1e400,"n":1,"k":"x"}',
        '{"o":1,"n":NaN,"k":"x"}',
        '{"o":' + "9" * 400 + ',"n":1,"k":"x"}',
        "[" * 5000 + "]" * 5000,
    ],
    ids=["infinity", "1e400", "nan", "400-digits", "deep-json"],
)
def test_forged_page_tokens_are_invalid(client, raw):
    token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(SegdRpcError) as e:
        client.members_page('city = "Kazan"', page_token=token)
    assert e.value.code == INVALID
    assert "page_token" in e.value.message


def test_undeserialisable_requests_are_invalid_argument(srv):
    channel = grpc.insecure_channel(srv.address)
    metadata = (("authorization", f"Bearer {srv.token}"),)
    count = channel.unary_unary(
        "/segd.v1.SegmentService/Count",
        request_serializer=lambda b: b,
        response_deserializer=pb.CountResponse.FromString,
    )
    # A Condition nested past protobuf's decoding limit (100), and plain garbage. The
    # nesting is written by hand: protobuf itself refuses to build such a message.
    not_field = common.Condition.DESCRIPTOR.fields_by_name["not_node"].number
    inner_field = common.Not.DESCRIPTOR.fields_by_name["condition"].number
    body = _attr().SerializeToString()
    for _ in range(60):
        inner = _field(inner_field, body)
        body = _field(not_field, inner)
    cond_field = pb.CountRequest.DESCRIPTOR.fields_by_name["condition"].number
    nested = _field(cond_field, body)
    for payload in (nested, b"\xff\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as e:
            count(payload, metadata=metadata, timeout=10)
        assert e.value.code() == INVALID, e.value.details()
    channel.close()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, varint length, payload."""

    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_members_pages_are_consistent_slices(client):
    seen, token = [], ""
    while True:
        resp = client.members_page('city = "Kazan"', page_size=37, page_token=token)
        seen += list(resp.customer_ids)
        token = resp.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 250
