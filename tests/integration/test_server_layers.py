"""Layers wrap each method's handler once, at registration (``segd.server.handlers``),
over a real server on 127.0.0.1: however many calls come, no wrapping happens per call,
and names a client makes up are not remembered."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from segd.server.handlers import WrappingRegistrar, behavior_of, rewrap


class CountingLayer:
    """Notes each wrapping, and tags each call's context on the way through."""

    def __init__(self, tag: str, seen: list[str]) -> None:
        self.tag, self.seen = tag, seen
        self.wrapped: list[str] = []

    def wrap_method(self, method: str, handler: Any) -> Any:
        self.wrapped.append(method)

        def wrap(behavior: Any, _streaming: bool) -> Any:
            def tagged(request: Any, context: grpc.ServicerContext) -> Any:
                self.seen.append(self.tag)
                return behavior(request, context)

            return tagged

        return rewrap(handler, wrap)


@pytest.fixture
def layered() -> Any:
    seen: list[str] = []
    outer, inner = CountingLayer("outer", seen), CountingLayer("inner", seen)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(
        servicer, WrappingRegistrar(server, [outer, inner])
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, outer, inner, seen
    finally:
        channel.close()
        server.stop(None)


def test_each_method_is_wrapped_once_however_many_calls(layered: Any) -> None:
    channel, outer, inner, seen = layered
    stub = health_pb2_grpc.HealthStub(channel)
    wrapped_at_start = list(outer.wrapped)
    assert "/grpc.health.v1.Health/Check" in wrapped_at_start
    assert outer.wrapped == inner.wrapped
    for _ in range(20):
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert outer.wrapped == wrapped_at_start  # nothing wrapped per call
    assert seen == ["outer", "inner"] * 20  # the first layer is the outermost


def test_unknown_methods_are_unimplemented_and_not_remembered(layered: Any) -> None:
    channel, outer, _inner, _seen = layered
    before = list(outer.wrapped)
    for k in range(5):
        call = channel.unary_unary(f"/grpc.health.v1.Health/Nope{k}")
        with pytest.raises(grpc.RpcError) as err:
            call(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert outer.wrapped == before


def test_behavior_of_reads_every_handler_kind() -> None:
    def fn(request: Any, context: Any) -> Any:
        return request

    for factory in (
        grpc.unary_unary_rpc_method_handler,
        grpc.unary_stream_rpc_method_handler,
        grpc.stream_unary_rpc_method_handler,
        grpc.stream_stream_rpc_method_handler,
    ):
        assert behavior_of(factory(fn)) is fn
