"""Wrapping gRPC method handlers once, when they are registered, not on every call.

segd acts around every call (metrics, authentication, error mapping, the read lane).
gRPC's own ``ServerInterceptor`` would do this *per call*: the sync server runs the
interceptor chain in its single polling thread for every incoming call, and each link
builds a new handler and new closures. With 16 clients counting a cached segment that
chain was a fifth of the server's GIL time. Here each method's handler is wrapped once:
``WrappingRegistrar`` stands in for the server while servicers register, and hands the
server handlers already wrapped by each ``Layer`` in turn.

A ``Layer`` sees the full method name and its handler and returns a handler of the same
kind (``rewrap`` does that for the four kinds); whatever it must know about the call
itself (metadata, status) it reads from the ``ServicerContext`` when the call runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


def behavior_of(handler: grpc.RpcMethodHandler) -> Behavior:
    """The one behavior a handler of any kind carries."""
    key = (bool(handler.request_streaming), bool(handler.response_streaming))
    return getattr(handler, _FACTORIES[key][0])


def method_label(full_method: str) -> str:
    """``/segd.v1.SegmentService/Count`` -> ``SegmentService/Count``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"


class Layer(Protocol):
    """Acts around every call of a method; applied once per method, at registration."""

    def wrap_method(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        """``handler`` of ``method`` (``/package.Service/Method``), wrapped."""
        ...


def apply_layers(
    layers: Sequence[Layer], method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """``handler`` wrapped by ``layers``, the first one outermost."""
    for layer in reversed(layers):
        handler = layer.wrap_method(method, handler)
    return handler


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out wrapped, each wrapped once.

    gRPC consults generic handlers only for methods not registered by name (the
    generated ``add_*_to_server`` registers both ways); the cache holds only methods
    the inner handler knows, so unknown names sent by a client cannot grow it."""

    def __init__(self, inner: grpc.GenericRpcHandler, layers: Sequence[Layer]) -> None:
        self._inner = inner
        self._layers = layers
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = apply_layers(self._layers, method, handler)
            self._wrapped[method] = wrapped  # a dict store is atomic under the GIL
        return wrapped


class WrappingRegistrar:
    """Stands in for a ``grpc.Server`` while servicers register: each method handler
    reaches the server wrapped by ``layers`` (the first one outermost).

    Pass it wherever generated code wants the server (``add_*Servicer_to_server``,
    ``reflection.enable_server_reflection``); anything else is the server's own."""

    def __init__(self, server: grpc.Server, layers: Sequence[Layer]) -> None:
        self._server = server
        self._layers = tuple(layers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: apply_layers(self._layers, f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(h, self._layers) for h in generic_rpc_handlers)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
