"""Prometheus metrics: per-method request counts and latencies, and store gauges.

Each server owns its own ``CollectorRegistry`` (several servers can live in one test
process). The layer is the outermost one (``segd.server.handlers``), so refused
(UNAUTHENTICATED) calls are counted too. The HTTP endpoint is only started when
``--metrics-port`` is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from segd.server.handlers import Behavior, method_label, rewrap

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    """The server's metric families, registered on a private registry."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "segd_requests",
            "gRPC requests by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "segd_request_duration_seconds",
            "gRPC request latency by method (streams: the whole stream).",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # (method, code) -> its (counter, histogram) children, looked up once:
        # ``labels()`` takes a lock and builds its key on every call
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        contacts = Gauge(
            "segd_contacts", "Contacts in the store.", registry=self.registry
        )
        events = Gauge("segd_events", "Events in the store.", registry=self.registry)
        contacts.set_function(lambda: float(stats().get("contacts", 0)))
        events.set_function(lambda: float(stats().get("events", 0)))

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self.requests.labels(method, code.name),
                self.latency.labels(method),
            )
        counter, latency = children
        counter.inc()
        latency.observe(seconds)


def _code_of(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return grpc.StatusCode.INTERNAL if failed else grpc.StatusCode.OK
    return code


class MetricsLayer:
    """Times every call and counts it by final status code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def wrap_method(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        label = method_label(method)
        observe = self._metrics.observe

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                def timed_stream(
                    request: Any, context: grpc.ServicerContext
                ) -> Iterator:
                    start, failed = time.perf_counter(), True
                    try:
                        yield from behavior(request, context)
                        failed = False
                    finally:
                        observe(
                            label,
                            _code_of(context, failed),
                            time.perf_counter() - start,
                        )

                return timed_stream

            def timed(request: Any, context: grpc.ServicerContext) -> Any:
                start, failed = time.perf_counter(), True
                try:
                    result = behavior(request, context)
                    failed = False
                    return result
                finally:
                    observe(
                        label, _code_of(context, failed), time.perf_counter() - start
                    )

            return timed

        return rewrap(handler, wrap)
