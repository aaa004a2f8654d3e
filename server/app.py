"""Assembling the gRPC server: servicers, interceptors, health, reflection, ports.

``build_server(settings, engine) -> (server, port)`` is what tests use (bind
``127.0.0.1:0``, then ``segd.server.start()``); ``build_app`` also hands back the health
servicer and metrics, for ``segd.server.main`` which flips health to SERVING only once the
data is loaded.
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from segd.server.auth import AuthInterceptor
from segd.server.errors import ErrorInterceptor
from segd.server.metrics import Metrics, MetricsInterceptor
from segd.server.servicers.admin import AdminServicer
from segd.server.servicers.ingest import EventSequence, IngestServicer
from segd.server.servicers.segments import SegmentServicer
from segd.server.settings import Settings
from segd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    segments_pb2,
    segments_pb2_grpc,
)

SEGD_SERVICES = (
    ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class StartupError(Exception):
    """The server cannot start as configured (port taken, unreadable TLS files)."""


@dataclass
class App:
    """A built (not yet started) server with the handles ``segd.server.main`` needs."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics: Metrics
    sequence: EventSequence

    def set_serving(self) -> None:
        """Health SERVING for the whole server ("") and for each segd service."""
        for name in ("", *SEGD_SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_seconds: float) -> Any:
        """Health NOT_SERVING for good, then stop accepting calls; in-flight calls get
        ``grace_seconds``. Returns the event set when the server has stopped."""
        self.health.enter_graceful_shutdown()
        return self.server.stop(grace_seconds)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not (settings.tls_cert or settings.tls_key):
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise StartupError("--tls-cert and --tls-key go together")
    try:
        with open(settings.tls_key, "rb") as key, open(settings.tls_cert, "rb") as cert:
            return grpc.ssl_server_credentials([(key.read(), cert.read())])
    except OSError as exc:
        raise StartupError(f"cannot read TLS files: {exc}") from exc


def build_app(settings: Settings, engine: Any, *, serving: bool = False) -> App:
    """Build the server for ``engine`` bound to ``settings.address`` (port 0 = any free)."""
    metrics = Metrics(engine.stats)
    interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if settings.token:
        interceptors.append(
            AuthInterceptor(settings.token)
        )  # before errors: refuse first
    interceptors.append(ErrorInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="segd-rpc"
        ),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared listener
        ],
    )
    sequence = EventSequence(engine)
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(engine, sequence), server
    )
    segments_pb2_grpc.add_SegmentServiceServicer_to_server(
        SegmentServicer(engine), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(engine, sequence), server
    )

    health_servicer = health.HealthServicer()
    for name in ("", *SEGD_SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SEGD_SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )

    credentials = _credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.address)
        else:
            port = server.add_secure_port(settings.address, credentials)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {settings.address}: {exc}") from exc
    if not port:
        raise StartupError(f"cannot listen on {settings.address}")
    app = App(server, port, health_servicer, metrics, sequence)
    if serving:
        app.set_serving()
    return app


def build_server(settings: Settings, engine: Any) -> tuple[grpc.Server, int]:
    """A ready-to-start server (health already SERVING) and its bound port."""
    app = build_app(settings, engine, serving=True)
    return app.server, app.port
