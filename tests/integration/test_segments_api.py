"""SegmentService through SegdClient and the raw stubs: every RPC, paging, saved segments."""

from __future__ import annotations

import grpc
import pytest

from segd.server.client import SegdRpcError
from segd.v1 import common_pb2, segments_pb2
from tests.integration.conftest import BASE_TS, TOKEN, expected

MEN = 'gender = "m"'
MEN_35 = 'gender = "m" and age >= 35'


def test_count_dsl_condition_and_segment_agree(client):
    n = len(expected(lambda r: r["gender"] == "m" and r["age"] >= 35))
    assert client.count(MEN_35) == n
    ast = {"and": [{"attr": "gender", "op": "=", "value": "m"},
                   {"attr": "age", "op": ">=", "value": 35}]}  # fmt: skip
    assert client.count(ast) == n
    client.create_segment("men35", MEN_35)
    assert client.count(segment="men35") == n
    assert client.count('in segment "men35"') == n


def test_count_typed_condition_message_raw_stub(client):
    cond = common_pb2.Condition(
        attr=common_pb2.AttrCondition(
            attr="city", op=common_pb2.OPERATOR_IN,
            value=common_pb2.Value(list_value=common_pb2.ValueList(values=[
                common_pb2.Value(string_value="Kazan"), common_pb2.Value(string_value="Omsk"),
            ])),
        )
    )  # fmt: skip
    resp = client.segments_stub.Count(
        segments_pb2.CountRequest(condition=cond),
        metadata=(("authorization", f"Bearer {TOKEN}"),),
    )
    assert resp.count == len(expected(lambda r: r["city"] in ("Kazan", "Omsk")))
    assert resp.duration_ms >= 0


def test_members_pages_cover_the_segment_once(client):
    want = expected(lambda r: r["gender"] == "m")
    pages, token = [], ""
    while True:
        page = client.members_page(MEN, page_size=64, page_token=token)
        assert page.total_size == len(want)
        pages.append(list(page.customer_ids))
        token = page.next_page_token
        if not token:
            break
    assert all(len(p) == 64 for p in pages[:-1])
    flat = [cid for p in pages for cid in p]
    assert sorted(flat) == sorted(want) and len(set(flat)) == len(flat)
    assert client.members(MEN, page_size=100) == flat
    assert client.members(MEN, limit=10) == flat[:10]


def test_members_bad_tokens(client):
    with pytest.raises(SegdRpcError) as e:
        client.members_page(MEN, page_token="not-a-token!")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    token = client.members_page(MEN, page_size=10).next_page_token
    with pytest.raises(SegdRpcError) as e:  # a token of another query
        client.members_page('gender = "f"', page_token=token)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_members_token_past_the_end_is_out_of_range(client, srv):
    from segd.server.servicers.segments import _encode_token, _query_key

    req = segments_pb2.MembersRequest(dsl=MEN)
    token = _encode_token(10_000, 1, _query_key(req))
    with pytest.raises(SegdRpcError) as e:
        client.members_page(MEN, page_token=token)
    assert e.value.code == grpc.StatusCode.OUT_OF_RANGE


def test_sample_is_deterministic_members(client):
    want = set(expected(lambda r: r["gender"] == "m"))
    a = client.sample(MEN, size=25, seed=7)
    assert len(a) == 25 and set(a) <= want
    assert client.sample(MEN, size=25, seed=7) == a


def test_export_streams_all_members_in_chunks(client):
    want = expected(lambda r: r["city"] == "Kazan")
    chunks = list(client.export('city = "Kazan"', chunk_size=40))
    assert all(len(c) == 40 for c in chunks[:-1])
    assert sorted(cid for c in chunks for cid in c) == sorted(want)
    assert list(client.export('city = "Nowhere"')) == []


def test_saved_segment_lifecycle(client):
    n_men = len(expected(lambda r: r["gender"] == "m"))
    seg = client.create_segment("men", MEN)
    assert (seg["name"], seg["kind"], seg["version"], seg["count"]) == (
        "men",
        "dynamic",
        1,
        n_men,
    )
    assert seg["ast"] == {"attr": "gender", "op": "=", "value": "m"}
    assert client.get_segment("men")["dsl"] == seg["dsl"]
    static = client.create_segment("kazan", {"attr": "city", "op": "=", "value": "Kazan"},
                                   static=True)  # fmt: skip
    assert static["kind"] == "static"
    listed = client.list_segments(include_counts=True)
    assert [s["name"] for s in listed] == ["kazan", "men"]
    assert {s["name"]: s["count"] for s in listed}["men"] == n_men
    assert all(s["count"] is None for s in client.list_segments())

    updated = client.update_segment("men", 'gender = "f"', version=1)
    assert updated["version"] == 2
    with pytest.raises(SegdRpcError) as e:
        client.update_segment("men", MEN, version=1)
    assert e.value.code == grpc.StatusCode.ABORTED
    with pytest.raises(SegdRpcError) as e:
        client.create_segment("men", MEN)
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS

    client.delete_segment("men")
    for call in (lambda: client.get_segment("men"), lambda: client.delete_segment("men"),
                 lambda: client.count(segment="men")):  # fmt: skip
        with pytest.raises(SegdRpcError) as e:
            call()
        assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_static_segment_keeps_its_members(client):
    client.create_segment("frozen", 'city = "Perm"', static=True)
    before = client.count(segment="frozen")
    client.upsert_contacts([{"customer_id": "new-perm", "gender": "m", "age": 30,
                             "city": "Perm"}])  # fmt: skip
    assert client.count('city = "Perm"') == before + 1
    assert client.count(segment="frozen") == before


def test_explain_plan_and_one_contact(client):
    n = client.count(MEN_35)
    res = client.explain(MEN_35)
    assert res["count"] == n == res["tree"]["count"]
    assert res["contacts"] == 1000 and "whole base" in res["count_meaning"]
    assert res["duration_ms"] >= 0
    assert "customer_id" not in res and "matched" not in res["tree"]
    tree = res["tree"]
    assert (tree["kind"], tree["operator"]) == ("and", "and")
    assert [(c["condition"], c["operator"], c["count"]) for c in tree["children"]] == [
        (MEN, "=", 500),
        ("age >= 35", ">=", len(expected(lambda r: r["age"] >= 35))),
    ]
    member = client.members(MEN_35, limit=1)[0]
    res = client.explain(MEN_35, customer_id=member)
    assert res["member"] is True and res["customer_id"] == member
    assert res["contact_attributes"]["gender"] == "m"
    res = client.explain(MEN_35, customer_id="c0001")  # a woman
    assert res["member"] is False
    gender = res["tree"]["children"][0]
    assert gender["matched"] is False
    assert gender["evidence"] == {
        "summary": 'gender = "f"',
        "attribute": {"attribute": "gender", "value": "f"},
    }
    with pytest.raises(SegdRpcError) as e:
        client.explain(MEN_35, customer_id="no-such-contact")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_explain_raw_response_is_one_typed_tree(client):
    """One tree (no second 'contact' tree), operators kept, evidence typed."""
    stub = client.segments_stub
    req = segments_pb2.ExplainRequest(
        dsl='gender = "m" and not view()', customer_id="c0002"
    )
    resp = stub.Explain(req, metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert resp.count == 450 and resp.contacts == 1000
    assert not resp.contact_matched  # a man who viewed
    ops = [resp.plan.operator] + [c.operator for c in resp.plan.children]
    assert ops == ["and", "=", "not"]
    inner = resp.plan.children[1].children[0]
    assert (inner.condition, inner.count, inner.matched) == ("view()", 100, True)
    assert inner.evidence.WhichOneof("kind") == "event"
    assert inner.evidence.event.matching_events == 1
    assert inner.evidence.summary.startswith("1 matching view event, last ")
    assert resp.plan.children[1].count == 900 and not resp.plan.children[1].matched


def test_unknown_catalog_value_warns_in_every_response(client):
    client.upsert_items(
        [{"item_id": "i1", "category": "Outdoor/Tents", "brand": "Nike"}]
    )
    q = 'view(category = "Outdor")'
    res = client.count_result(q)
    assert res.count == 0
    assert res.warnings == [
        {
            "field": "where[0].value",
            "message": 'unknown category "Outdor" (did you mean "Outdoor"?)',
            "subject": "category",
            "value": "Outdor",
            "suggestion": "Outdoor",
        }
    ]
    assert client.members_page(q).warnings[0].suggestion == "Outdoor"
    assert client.sample_result(q).warnings == res.warnings
    seen: list = []
    assert list(client.export(q, on_warning=seen.append)) == []
    assert seen == res.warnings
    assert client.explain(q)["warnings"] == res.warnings
    assert client.count_result('view(category = "Outdoor")').warnings == []


def test_now_ms_on_saved_segment_calls(client):
    """Saved segments over historical data count as of `now` (views are 2025-01-01)."""
    then = BASE_TS + 86_400
    recent = "view() in last 7 days"
    assert client.count(recent) == 0 and client.count(recent, now=then) == 100
    assert client.create_segment("recent", recent, now=then)["count"] == 100
    assert client.get_segment("recent", now=then)["count"] == 100
    assert client.get_segment("recent")["count"] == 0
    listed = client.list_segments(include_counts=True, now=then)
    assert [s["count"] for s in listed] == [100]
    frozen = client.create_segment("frozen", recent, static=True, now=then)
    assert frozen["count"] == 100 and client.count(segment="frozen") == 100
    assert client.update_segment("recent", "view()", now=then)["count"] == 100
    assert sum(map(len, client.export(segment="recent", now=then))) == 100


@pytest.mark.parametrize(
    "request_kwargs, field",
    [
        ({}, "query"),
        ({"dsl": "   "}, "dsl"),
        ({"condition": common_pb2.Condition()}, "condition"),
    ],
)
def test_missing_or_empty_query_is_invalid_argument(client, request_kwargs, field):
    md = (("authorization", f"Bearer {TOKEN}"),)
    with pytest.raises(grpc.RpcError) as e:
        client.segments_stub.Count(
            segments_pb2.CountRequest(**request_kwargs), metadata=md
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details()


def test_dsl_syntax_error_carries_position_and_violation(client):
    with pytest.raises(SegdRpcError) as e:
        client.count("gender equals 3")
    err = e.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 1:" in err.message
    assert err.violations and err.violations[0][0].startswith("line 1:")


def test_explain_deeper_than_a_response_holds_is_resource_exhausted():
    """Saved segments can nest an explained tree past protobuf's nesting limit: the
    server says so instead of sending a response no client can parse."""
    from segd.errors import TooComplex
    from segd.explain import AttributeEvidence, ExplainNode
    from segd.server import convert

    def chain(depth: int) -> ExplainNode:
        node = ExplainNode("attr", "=", 'g = "m"', 1, 0.0, True,
                           AttributeEvidence("g", ["m"]))  # fmt: skip
        for _ in range(depth - 1):
            node = ExplainNode("not", "not", "not ...", 0, 0.0, False, None, (node,))
        return node

    fits = convert.explain_node_to_proto(chain(convert.MAX_EXPLAIN_DEPTH))
    wire = segments_pb2.ExplainResponse(plan=fits).SerializeToString()
    assert segments_pb2.ExplainResponse.FromString(wire).plan.count == 0
    with pytest.raises(TooComplex):
        convert.explain_node_to_proto(chain(convert.MAX_EXPLAIN_DEPTH + 1))
