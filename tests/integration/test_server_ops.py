"""Health, reflection, metrics, graceful shutdown and TLS of the in-process server."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from segd.server.app import SEGD_SERVICES
from segd.server.client import SegdClient, SegdRpcError


def health_of(address: str, service: str = "") -> str:
    with grpc.insecure_channel(address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def test_health_not_serving_until_ready_then_serving(make_server):
    srv = make_server(serving=False)
    for service in ("", *SEGD_SERVICES):
        assert health_of(srv.address, service) == "NOT_SERVING"
    # calls work already; only health tells load balancers to wait
    srv.app.set_serving()
    for service in ("", *SEGD_SERVICES):
        assert health_of(srv.address, service) == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        health_of(srv.address, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_graceful_stop_turns_health_off_then_refuses(make_server):
    srv = make_server()
    client = srv.client(retries=0, timeout=2)
    assert client.count('gender = "m"') == 500
    srv.app.health.enter_graceful_shutdown()
    assert health_of(srv.address) == "NOT_SERVING"
    srv.app.stop(0.5).wait(5)
    with pytest.raises(SegdRpcError) as e:
        client.count('gender = "m"')
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_reflection_lists_every_service(srv):
    with grpc.insecure_channel(srv.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert set(SEGD_SERVICES) <= services
        assert "grpc.health.v1.Health" in services
        fd = db.FindFileContainingSymbol("segd.v1.SegmentService")
        assert fd.name == "segd/v1/segments.proto"
        assert {s.name for s in fd.service} == {"SegmentService"}


def test_metrics_endpoint_counts_requests(srv, client):
    port = srv.app.metrics.serve_http("127.0.0.1", 0)
    client.count('gender = "m"')
    with pytest.raises(SegdRpcError):
        client.get_segment("missing")
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'segd_requests_total{code="OK",method="SegmentService/Count"} 1.0' in body
    assert (
        'segd_requests_total{code="NOT_FOUND",method="SegmentService/Get"} 1.0' in body
    )
    assert (
        'segd_request_duration_seconds_bucket{le="0.5",method="SegmentService/Count"}'
        in body
    )
    assert "segd_contacts 1000.0" in body
    assert "segd_events 100.0" in body


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls(make_server, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    srv = make_server(tls_cert=str(cert), tls_key=str(key))
    with SegdClient(srv.address, token=srv.token, tls_ca=str(cert)) as c:
        assert c.count('gender = "m"') == 500
    with SegdClient(srv.address, token=srv.token, retries=0, timeout=3) as plain:
        with pytest.raises(SegdRpcError) as e:
            plain.count('gender = "m"')
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
