"""RfmService over a real gRPC server on 127.0.0.1, and ``segctl rfm`` against it."""

from __future__ import annotations

import json

import grpc
import pyarrow as pa
import pytest

from segd import Engine
from segd.segments import dsl
from segd.server.client import SegdRpcError
from segd.server.convert import ast_to_condition
from segd.v1 import rfm_pb2 as pb
from segd.v1 import rfm_pb2_grpc, segments_pb2

from .conftest import BASE_TS, run_segctl

D = 86_400
NOW = BASE_TS + 200 * D


def rfm_engine() -> Engine:
    """c0..c9 with 1..10 orders (a day apart), the last one c*2 days before NOW."""
    eng = Engine()
    eng.upsert_contacts(pa.Table.from_pylist(
        [{"customer_id": f"c{i}", "city": "Kazan" if i % 2 else "Moscow"} for i in range(12)]
    ))  # fmt: skip
    rows = []
    for i in range(10):
        for j in range(i + 1):
            rows.append({"customer_id": f"c{i}", "ts": NOW - (i * 2 + j) * D - 60,
                         "type": "order", "amount": 10.0 * (i + 1), "order_id": f"o{i}-{j}"})  # fmt: skip
    eng.append_events(pa.Table.from_pylist(rows))
    return eng


@pytest.fixture
def rfm_srv(make_server):
    return make_server(engine=rfm_engine())


def stub(running) -> tuple[rfm_pb2_grpc.RfmServiceStub, tuple]:
    client = running.client()
    return rfm_pb2_grpc.RfmServiceStub(client._channel), (
        ("authorization", f"Bearer {running.token}"),
    )


def test_compute_matrix_transitions_config_over_grpc(rfm_srv) -> None:
    s, md = stub(rfm_srv)
    st = s.Status(pb.StatusRequest(), metadata=md)
    assert st.computed is False
    resp = s.Compute(pb.ComputeRequest(as_of_ms=NOW * 1000), metadata=md)
    assert resp.status.computed and resp.status.as_of_ms == NOW * 1000
    assert resp.status.contacts == 10 and resp.new_transitions == 10
    assert sum(resp.status.segments.values()) == 10
    m = s.Matrix(pb.MatrixRequest(by="rf"), metadata=md)
    assert m.scale == 5 and len(m.cells) == 25
    assert sum(c.count for c in m.cells) == 10
    seg = s.Matrix(pb.MatrixRequest(by="segment"), metadata=md)
    by_name = {c.segment: c.count for c in seg.cells}
    assert by_name["Loyal"] == rfm_srv.engine.rfm_status()["segments"]["Loyal"]
    t = s.Transitions(pb.TransitionsRequest(to="Loyal"), metadata=md)
    assert t.total_size == by_name["Loyal"]
    assert all(x.from_segment == "" and x.to_segment == "Loyal" for x in t.transitions)
    limited = s.Transitions(pb.TransitionsRequest(limit=3), metadata=md)
    assert len(limited.transitions) == 3 and limited.total_size == 10
    h = s.History(pb.HistoryRequest(), metadata=md)
    assert {c.kind for c in h.counts} == {"segment", "code"}

    cfg = s.GetConfig(pb.GetConfigRequest(), metadata=md)
    assert cfg.config["window_days"] == 365 and len(cfg.overlaps) == 2
    req = pb.SetConfigRequest()
    req.config.update({"window_days": 180})
    cfg = s.SetConfig(req, metadata=md)
    assert cfg.config["window_days"] == 180
    bad = pb.SetConfigRequest()
    bad.config.update(
        {"rules": [{"segment": "A", "orders": [2, None], "days": [0, None]}]}
    )
    with pytest.raises(grpc.RpcError) as err:
        s.SetConfig(bad, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gap" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        s.Compute(pb.ComputeRequest(as_of_ms=(NOW - D) * 1000), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rfm_conditions_through_the_segment_service(rfm_srv) -> None:
    client = rfm_srv.client()
    with pytest.raises(SegdRpcError) as err:
        client.count('rfm.segment = "Loyal"')
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    rfm_srv.engine.rfm_compute(as_of=NOW)
    loyal = rfm_srv.engine.rfm_status()["segments"]["Loyal"]
    assert client.count('rfm.segment = "Loyal"') == loyal
    assert client.count("rfm.segment is null") == 2  # c10, c11: no orders
    entered = dsl.parse('rfm.entered "Loyal" in last 1 day')
    cond = ast_to_condition(entered)
    req = segments_pb2.CountRequest(condition=cond, now_ms=NOW * 1000)
    resp = client.call(client.segments_stub.Count, req)
    assert resp.count == loyal


def test_segctl_rfm(rfm_srv, tmp_path) -> None:
    r = run_segctl(rfm_srv, "rfm", "compute", "--as-of", "2025-07-20T00:00:00Z")
    assert r.code == 0, r.err
    assert "scored" in r.out and "Loyal" in r.out
    r = run_segctl(rfm_srv, "rfm", "matrix")
    assert r.code == 0, r.err
    assert "R5" in r.out and "F1" in r.out and "%" in r.out
    r = run_segctl(rfm_srv, "rfm", "matrix", "--by", "segment", "--json")
    cells = json.loads(r.out)["cells"]
    assert {c["segment"] for c in cells} >= {"Loyal", "Newcomers"}
    r = run_segctl(rfm_srv, "rfm", "transitions", "--to", "Loyal")
    assert r.code == 0 and "Loyal" in r.out
    r = run_segctl(rfm_srv, "rfm", "history")
    assert r.code == 0 and "2025-07-20" in r.out
    r = run_segctl(rfm_srv, "rfm", "config", "--set", '{"scale": 10}')
    assert r.code == 0, r.err
    assert '"scale"' not in r.err and "10" in r.out
    r = run_segctl(rfm_srv, "rfm", "config", "--set", '{"scale": 11}')
    assert r.code == 1 and "INVALID_ARGUMENT" in r.err and "scale" in r.err
    r = run_segctl(rfm_srv, "rfm", "config", "--set", "{nope")
    assert r.code == 2


def test_segctl_rfm_png(rfm_srv, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    rfm_srv.engine.rfm_compute(as_of=NOW)
    png = tmp_path / "m.png"
    r = run_segctl(rfm_srv, "rfm", "matrix", "--png", str(png))
    assert r.code == 0, r.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = tmp_path / "h.png"
    r = run_segctl(rfm_srv, "rfm", "history", "--png", str(hist))
    assert r.code == 0, r.err
    assert hist.stat().st_size > 1000
