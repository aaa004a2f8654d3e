"""Assembling the gRPC server: servicers, their layers, health, reflection, ports.

``build_server(settings, engine) -> (server, port)`` is what tests use (bind
``127.0.0.1:0``, then ``segd.server.start()``); ``build_app`` also hands back the health
servicer and metrics, for ``segd.server.main`` which flips health to SERVING only once the
data is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from segd.server.auth import AuthLayer
from segd.server.errors import ErrorLayer
from segd.server.handlers import Layer, WrappingRegistrar, behavior_of
from segd.server.metrics import Metrics, MetricsLayer
from segd.server.servicers.admin import AdminServicer
from segd.server.servicers.ingest import EventSequence, IngestServicer
from segd.server.servicers.recs import RecsServicer
from segd.server.servicers.rfm import RfmServicer
from segd.server.servicers.segments import SegmentServicer
from segd.server.settings import Settings
from segd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
    rfm_pb2,
    rfm_pb2_grpc,
    segments_pb2,
    segments_pb2_grpc,
)

SEGD_SERVICES = (
    ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    rfm_pb2.DESCRIPTOR.services_by_name["RfmService"].full_name,
    recommendations_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
)
RPC_THREAD_PREFIX = (
    "segd-rpc"  # names of the RPC pool's threads (see main._rpc_threads)
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Quick unary reads served by the read lane (Settings.read_workers): a cached Count is
# ~30 us of servicer work, the rest is gRPC's, so the thread hand-offs are the cost.
READ_LANE_METHODS = frozenset(
    {
        "/segd.v1.SegmentService/Count",
        "/segd.v1.SegmentService/Members",
        "/segd.v1.SegmentService/Sample",
        "/segd.v1.SegmentService/Get",
        f"/{HEALTH_SERVICE}/Check",
    }
)


class StartupError(Exception):
    """The server cannot start as configured (port taken, unreadable TLS files)."""


class ReadLaneLayer:
    """Runs the calls of ``READ_LANE_METHODS`` on their own small thread pool.

    gRPC's sync server runs a call on the pool its behavior names in an
    ``experimental_thread_pool`` attribute (grpc._server._select_thread_pool_for_behavior),
    else on the server's pool. With 16 clients on 16 shared worker threads, every
    cached Count woke another thread and the GIL went round all of them; on a pool of
    2 the same calls queue in the executor (costing nothing while they wait) and the
    server spends about half the CPU per call. It must be the outermost layer: gRPC
    reads the pool off the behavior of the handler it is finally given."""

    def __init__(self, pool: futures.ThreadPoolExecutor) -> None:
        self._pool = pool

    def wrap_method(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        if method in READ_LANE_METHODS:
            behavior_of(handler).experimental_thread_pool = self._pool  # type: ignore[attr-defined]
        return handler


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


@contextlib.contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration (a bind takes microseconds).

    gRPC's C core logs a failed bind (a busy port: ``E0000 ... chttp2_server.cc ...
    No address added out of total 1 resolved``) straight to fd 2, before the Python call
    fails; segd reports the failure itself in one clear line (StartupError), so the raw
    core line is only noise. Python's own sys.stderr is not touched."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _bind_problem(address: str, exc: Exception) -> str:
    """Why a bind failed, in the operating system's words ("Address already in use")
    rather than gRPC's ("...; set GRPC_VERBOSITY=debug ...")."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as err:
        return err.strerror or str(err)
    except ValueError:
        pass
    return str(exc).split("; set GRPC_VERBOSITY")[0]


def build_app(settings: Settings, engine: Any, *, serving: bool = False) -> App:
    """Build the server for ``engine`` bound to ``settings.address`` (port 0 = any free)."""
    if settings.read_workers < 0:
        raise StartupError(
            f"--read-workers must be >= 0 (0: no read lane), got {settings.read_workers}"
        )
    metrics = Metrics(engine.stats)
    layers: list[Layer] = []
    if settings.read_workers:
        layers.append(  # outermost: gRPC reads the pool off the final behavior
            ReadLaneLayer(
                futures.ThreadPoolExecutor(
                    max_workers=settings.read_workers,
                    thread_name_prefix=f"{RPC_THREAD_PREFIX}-read",
                )
            )
        )
    layers.append(MetricsLayer(metrics))
    if settings.token:
        layers.append(AuthLayer(settings.token))  # before errors: refuse first
    layers.append(ErrorLayer())
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix=RPC_THREAD_PREFIX
        ),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared listener
        ],
    )
    # Every handler is registered through the registrar, wrapped once by the layers.
    registrar: Any = WrappingRegistrar(server, layers)
    sequence = EventSequence(engine)
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(engine, sequence), registrar
    )
    segments_pb2_grpc.add_SegmentServiceServicer_to_server(
        SegmentServicer(engine), registrar
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(engine, sequence), registrar
    )
    rfm_pb2_grpc.add_RfmServiceServicer_to_server(RfmServicer(engine), registrar)
    recommendations_pb2_grpc.add_RecommendationServiceServicer_to_server(
        RecsServicer(engine), registrar
    )

    health_servicer = health.HealthServicer()
    for name in ("", *SEGD_SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reflection.enable_server_reflection(
        (*SEGD_SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), registrar
    )

    credentials = _credentials(settings)
    try:
        with _c_stderr_silenced():
            if credentials is None:
                port = server.add_insecure_port(settings.address)
            else:
                port = server.add_secure_port(settings.address, credentials)
    except RuntimeError as exc:
        raise StartupError(
            f"cannot listen on {settings.address}: {_bind_problem(settings.address, exc)}"
        ) from exc
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
