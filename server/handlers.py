"""Rewrapping gRPC method handlers, shared by the server's interceptors.

A ``grpc.ServerInterceptor`` only sees the handler, not the call: to act around the call
it returns a new handler of the same kind (unary/stream x unary/stream) whose behavior
wraps the original one. ``rewrap`` does that once for the four kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]
# wrap(behavior, response_streaming) -> behavior of the same shape
Wrapper = Callable[[Behavior, bool], Behavior]

_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def rewrap(
    handler: grpc.RpcMethodHandler | None,
    wrap: Wrapper,
    deserializer: Callable[[Any], Any] | None = None,
) -> Any:
    """Return ``handler`` with its behavior replaced by ``wrap(behavior, streaming)``
    (and its request deserializer by ``deserializer(old)`` when given)."""
    if handler is None:
        return None
    key = (bool(handler.request_streaming), bool(handler.response_streaming))
    attr, factory = _FACTORIES[key]
    request_deserializer = handler.request_deserializer
    if deserializer is not None and request_deserializer is not None:
        request_deserializer = deserializer(request_deserializer)
    return factory(
        wrap(getattr(handler, attr), key[1]),
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


def method_label(full_method: str) -> str:
    """``/segd.v1.SegmentService/Count`` -> ``SegmentService/Count``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"
