"""Hypothesis over the segment API of a real in-process server: whatever the text, the
name, the typed Condition or the page token, the answer is a deliberate status (never
INTERNAL or UNKNOWN), a failed Create / Update saves nothing, and the server keeps
answering. A small example count here; raise SEGD_FUZZ_EXAMPLES for a nightly-size run.
"""

from __future__ import annotations

import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd.segments.limits import MAX_CONDITIONS
from segd.server.client import SegdRpcError
from segd.v1 import common_pb2 as common

EXAMPLES = int(os.environ.get("SEGD_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

WORDS = st.sampled_from(
    [
        "city", "age", "gender", "view", "order", "not", "and", "or", "in", "segment",
        "(", ")", "=", "!=", ">=", "between", "count", "in last", "days", '"Kazan"',
        '"\\uD800"', "9" * 30, "-1", "1e400", "2025-01-01", "0000-01-01", ",", "..",
        "then no", "within", "sum(amount)", "is null", "orders_count", "item_id",
    ]
)  # fmt: skip
DSL = st.lists(WORDS, max_size=40).map(" ".join) | st.text(max_size=200)
NAMES = st.text(max_size=300) | st.sampled_from(["vip", "vip\n", "a" * 200, "-x"])


def _leaf(draw_value: common.Value) -> common.Condition:
    c = common.Condition()
    c.attr.attr = "city"
    c.attr.op = common.OPERATOR_EQ
    c.attr.value.CopyFrom(draw_value)
    return c


VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(lambda v: common.Value(int_value=v)),
    st.floats().map(lambda v: common.Value(float_value=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: common.Value(timestamp_ms=v)),
    st.text(max_size=20).map(lambda v: common.Value(string_value=v)),
)


@st.composite
def conditions(draw: st.DrawFn) -> common.Condition:
    node = _leaf(draw(VALUES))
    leaves = 1
    for kind in draw(st.lists(st.sampled_from(["not", "or", "and"]), max_size=45)):
        outer = common.Condition()
        if kind == "not":
            outer.not_node.condition.CopyFrom(node)
        else:
            group = outer.or_node if kind == "or" else outer.and_node
            # Copies multiply: up to 3^45 leaves would exhaust the test's own memory
            # building the message (seen: 23 GB, OOM-killed). Past 4x the server's
            # MAX_CONDITIONS a group keeps one child: still refused, cheaply built.
            copies = draw(st.integers(1, 3)) if leaves <= 4 * MAX_CONDITIONS else 1
            group.conditions.extend([node] * copies)
            leaves *= copies
        node = outer
    return node


def _deliberate(call) -> None:
    try:
        call()
    except SegdRpcError as err:
        assert err.code not in BAD, err.message
        assert len(err.message) < 1200


@pytest.fixture
def fuzz_client(srv):
    client = srv.client(retries=0, timeout=20.0)
    yield client
    client.close()


@FUZZ
@given(dsl=DSL, name=NAMES)
def test_dsl_and_names(fuzz_client, dsl, name) -> None:
    before = fuzz_client.list_segments()
    _deliberate(lambda: fuzz_client.count(dsl))
    try:
        fuzz_client.create_segment(name, dsl)
    except SegdRpcError as err:
        assert err.code not in BAD, err.message
        assert fuzz_client.list_segments() == before  # nothing saved
    else:
        fuzz_client.get_segment(name)  # what was saved can be read back
        fuzz_client.delete_segment(name)
    assert fuzz_client.count('city = "Kazan"') == 250


@FUZZ
@given(cond=conditions())
def test_typed_conditions(fuzz_client, cond) -> None:
    _deliberate(lambda: fuzz_client.count(cond))
    try:
        fuzz_client.create_segment("typed", cond)
    except SegdRpcError as err:
        assert err.code not in BAD, err.message
        assert fuzz_client.list_segments() == []
    else:
        fuzz_client.get_segment("typed")
        fuzz_client.delete_segment("typed")


@FUZZ
@given(token=st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.hex()))
def test_page_tokens(fuzz_client, token) -> None:
    _deliberate(lambda: fuzz_client.members_page('city = "Kazan"', page_token=token))
