"""Export with a format / columns and ExportHashes over gRPC, and ``segctl segment export
--columns`` / ``segctl segment retarget``, against a real server on 127.0.0.1.

Files are read back with pyarrow / csv and compared with the rows the contacts were
loaded from (conftest.contact_rows); hashes are recomputed with hashlib.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segd.server.client import SegdRpcError
from tests.integration.conftest import contact_rows, run_segctl

KAZAN = [r for r in contact_rows() if r["city"] == "Kazan"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_parquet_with_columns(client) -> None:
    rows: list[tuple[int, int]] = []
    data = b"".join(
        client.export_file(
            'city = "Kazan"',
            format="parquet",
            columns=["age", "city", "gender"],
            chunk_size=100,
            on_rows=lambda r, t: rows.append((r, t)),
        )
    )
    pf = pq.ParquetFile(io.BytesIO(data))
    assert pf.metadata.num_row_groups == 3  # 250 members, 100 per chunk
    assert pf.read().to_pylist() == [
        {k: r[k] for k in ("customer_id", "age", "city", "gender")} for r in KAZAN
    ]
    assert rows[-1] == (250, 250)
    assert [r for r, _ in rows] == sorted(r for r, _ in rows)


def test_csv_with_columns(client) -> None:
    data = b"".join(
        client.export_file('city = "Kazan"', format="csv", columns=["gender", "age"])
    )
    got = list(csv.DictReader(io.StringIO(data.decode())))
    assert got == [
        {"customer_id": r["customer_id"], "gender": r["gender"], "age": str(r["age"])}
        for r in KAZAN
    ]


def test_unknown_column_is_refused_before_anything(client) -> None:
    pieces = client.export_file(
        'city = "Kazan"', format="parquet", columns=["city", "cty"]
    )
    with pytest.raises(SegdRpcError) as info:
        next(pieces)
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "columns[1]: unknown column 'cty' (did you mean 'city'?)" in err.message


def test_columns_without_format(srv) -> None:
    from segd.v1 import segments_pb2 as pb
    from segd.v1 import segments_pb2_grpc

    channel = grpc.insecure_channel(srv.address)
    stub = segments_pb2_grpc.SegmentServiceStub(channel)
    req = pb.ExportRequest(dsl='city = "Kazan"', columns=["city"])
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Export(req, metadata=[("authorization", f"Bearer {srv.token}")]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "format: profile columns need a file format" in info.value.details()
    channel.close()


def test_ids_only_export_unchanged(client) -> None:
    ids = [i for chunk in client.export('city = "Kazan"', chunk_size=7) for i in chunk]
    assert ids == [r["customer_id"] for r in KAZAN]


@pytest.fixture
def reach(make_server):
    from segd import Engine

    eng = Engine()
    eng.upsert_contacts(
        pa.Table.from_pylist(
            [
                {"customer_id": "a", "email": "A@x.org", "phone": "+1 202 555 0100",
                 "email_subscribed": True, "sms_subscribed": False},
                {"customer_id": "b", "email": "b@x.org", "phone": None,
                 "email_subscribed": False, "sms_subscribed": True},
                {"customer_id": "c", "email": None, "phone": "89120001122",
                 "email_subscribed": None, "sms_subscribed": True},
            ]
        )
    )  # fmt: skip
    eng.create_segment("all", "email_subscribed is not null or phone is not null")
    return make_server(engine=eng)


def test_export_hashes(reach) -> None:
    client = reach.client(timeout=20.0)
    lines = b"".join(client.export_hashes(segment="all", channel="email"))
    # a is reachable by email; b (unsubscribed) and c (no email) are not
    assert lines.decode().splitlines() == [sha("b@x.org"), sha("79120001122")]
    data = b"".join(
        client.export_hashes(segment="all", channel="sms", format="csv")
    ).decode()
    assert data.splitlines() == [
        "email_sha256,phone_sha256",
        f"{sha('a@x.org')},{sha('12025550100')}",
        f"{sha('b@x.org')},",
    ]
    with pytest.raises(SegdRpcError) as info:
        list(client.export_hashes(segment="all", channel="fax"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message.startswith("channel: unknown channel 'fax'")
    client.close()


def test_segctl_export_columns_and_retarget(reach, tmp_path) -> None:
    out = tmp_path / "all.parquet"
    res = run_segctl(
        reach, "segment", "export", "all", "--columns", "email,sms_subscribed",
        "-o", str(out),
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "exported 3 rows (customer_id, email, sms_subscribed) of 'all'" in res.out
    assert pq.read_table(out).to_pylist() == [
        {"customer_id": "a", "email": "A@x.org", "sms_subscribed": False},
        {"customer_id": "b", "email": "b@x.org", "sms_subscribed": True},
        {"customer_id": "c", "email": None, "sms_subscribed": True},
    ]
    bad = tmp_path / "bad.parquet"
    res = run_segctl(reach, "segment", "export", "all", "-c", "emial", "-o", str(bad))
    assert res.code == 1 and "unknown column 'emial'" in res.err
    assert not bad.exists()
    res = run_segctl(reach, "segment", "export", "all", "-c", "email", "-f", "xml")
    assert res.code == 2 and "--columns needs --format csv or parquet" in res.err

    res = run_segctl(reach, "segment", "retarget", "all", "--channel", "email")
    assert res.code == 0, res.err
    assert res.out.splitlines() == [sha("b@x.org"), sha("79120001122")]
    hashes = tmp_path / "h.csv"
    res = run_segctl(
        reach, "--json", "segment", "retarget", "all", "--channel", "sms",
        "--identifiers", "email", "-o", str(hashes),
    )  # fmt: skip
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert (summary["rows"], summary["members"], summary["format"]) == (2, 3, "csv")
    assert hashes.read_text().splitlines() == [
        "email_sha256",
        sha("a@x.org"),
        sha("b@x.org"),
    ]
