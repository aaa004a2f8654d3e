"""segctl in-process (``main(argv, stdout, stderr)``) against a real server."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import BASE_TS, N_CONTACTS, expected, run_segctl

MEN = 'gender = "m"'
N_MEN = len(expected(lambda r: r["gender"] == "m"))


def test_count_members_sample(srv):
    r = run_segctl(srv, "segment", "count", MEN)
    assert (r.code, r.out.strip()) == (0, str(N_MEN))
    r = run_segctl(srv, "--json", "segment", "count", MEN)
    assert json.loads(r.out) == {"count": N_MEN}
    r = run_segctl(srv, "segment", "members", MEN, "--limit", "5")
    assert r.code == 0 and len(r.out.split()) == 5
    assert f"5 of {N_MEN:,}" in r.err
    r = run_segctl(srv, "segments", "members", MEN, "--limit", "0", "--json")
    data = json.loads(r.out)
    assert data["total"] == N_MEN and len(data["customer_ids"]) == N_MEN
    r = run_segctl(srv, "segment", "sample", MEN, "--size", "3", "--json")
    assert len(json.loads(r.out)["customer_ids"]) == 3


def test_explain_human_and_json(srv):
    q = 'gender = "m" and not view()'
    r = run_segctl(srv, "segment", "explain", q, "--customer", "c0002")
    assert r.code == 0, r.err
    lines = [line.rstrip() for line in r.out.splitlines()]
    # the real tree, once: operators kept (not is not dropped), counts over the base
    assert lines[0].split() == ["condition", "in", "base", "c0002", "evidence"]
    assert lines[1].split() == ["and", "450", "no"]
    assert lines[2].split()[:5] == ["├─", "gender", "=", '"m"', "500"]
    assert lines[2].split()[5:] == ["yes", "gender", "=", '"m"']
    assert lines[3].split() == ["└─", "not", "900", "no"]
    assert lines[4].split()[:4] == ["└─", "view()", "100", "yes"]
    assert "1 matching view event, last 2025-01-01T00:00:02Z" in lines[4]
    assert lines[5].startswith("450 of 1,000 contacts match; c0002 is not a member (")
    assert lines[6].startswith("in base: contacts in the whole base matching")
    assert sum("gender" in line for line in lines) == 1  # the root is not repeated
    r = run_segctl(srv, "segment", "explain", q, "--json")
    data = json.loads(r.out)
    assert data["count"] == len(expected(lambda x: x["gender"] == "m")) - 50
    tree = data["tree"]

    def nodes(n):
        yield n
        for c in n.get("children", []):
            yield from nodes(c)

    assert all(n["kind"] for n in nodes(tree))  # no root with "kind": ""
    assert all(n.get("children") for n in nodes(tree) if n["kind"] in ("and", "not"))
    assert [n["operator"] for n in nodes(tree)] == ["and", "=", "not", "count"]
    r = run_segctl(srv, "segment", "explain", q, "--timings")
    assert r.out.splitlines()[0].split()[-1] == "ms"


def test_saved_segment_commands(srv):
    r = run_segctl(srv, "segment", "create", "men", MEN)
    assert r.code == 0 and "men" in r.out and f"{N_MEN:,}" in r.out
    r = run_segctl(
        srv, "segment", "create", "kazan", 'city = "Kazan"', "--static", "--json"
    )
    assert json.loads(r.out)["kind"] == "static"
    r = run_segctl(srv, "segment", "list", "--counts")
    lines = r.out.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "version", "count"]
    assert any(line.split()[:2] == ["men", "dynamic"] for line in lines)
    r = run_segctl(srv, "segment", "show", "men", "--json")
    assert json.loads(r.out)["count"] == N_MEN
    r = run_segctl(srv, "segment", "update", "men", 'gender = "f"', "--version", "1")
    assert r.code == 0
    r = run_segctl(srv, "segment", "update", "men", MEN, "--version", "1")
    assert r.code == 1 and "ABORTED" in r.err
    r = run_segctl(srv, "segment", "delete", "men")
    assert (r.code, r.out.strip()) == (0, "deleted segment 'men'")
    r = run_segctl(srv, "segment", "show", "men")
    assert r.code == 1
    assert r.err.strip() == "segctl: error: NOT_FOUND: segment 'men' not found"
    assert "Traceback" not in r.err


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "xml", "xlsx"])
def test_export_formats_read_back(srv, tmp_path, fmt):
    run_segctl(srv, "segment", "create", "men", MEN)
    out = tmp_path / f"men.{fmt}"
    r = run_segctl(srv, "segment", "export", "men", "--format", fmt, "-o", str(out),
                   "--chunk-size", "97")  # fmt: skip
    assert r.code == 0, r.err
    assert f"exported {N_MEN:,}" in r.out
    if fmt == "csv":
        rows = list(csv.DictReader(out.open()))
        ids = [row["customer_id"] for row in rows]
    elif fmt == "json":
        ids = [o["customer_id"] for o in json.loads(out.read_text())]
    elif fmt == "jsonl":
        ids = [json.loads(line)["customer_id"] for line in out.read_text().splitlines()]
    elif fmt == "xml":
        root = ET.parse(out).getroot()
        assert root.tag == "segment" and root.get("name") == "men"
        ids = [c.get("customer_id") for c in root.iter("contact")]
    else:
        from openpyxl import load_workbook

        sheet = load_workbook(out, read_only=True).active
        values = [row[0] for row in sheet.iter_rows(values_only=True)]
        assert values[0] == "customer_id"
        ids = values[1:]
    assert sorted(ids) == sorted(expected(lambda r: r["gender"] == "m"))


def test_export_to_stdout_and_errors(srv, tmp_path):
    run_segctl(srv, "segment", "create", "kazan", 'city = "Kazan"')
    r = run_segctl(srv, "segment", "export", "kazan", "--format", "jsonl")
    assert r.code == 0 and len(r.out.splitlines()) == N_CONTACTS // 4
    r = run_segctl(srv, "segment", "export", "kazan", "--format", "xlsx")
    assert r.code == 2 and "xlsx needs a file" in r.err
    missing = tmp_path / "never.csv"
    r = run_segctl(srv, "segment", "export", "nope", "-o", str(missing))
    assert r.code == 1 and "NOT_FOUND" in r.err and not missing.exists()


def event_rows(n: int, bad_at: int | None = None) -> list[dict]:
    return [
        {"customer_id": f"l{i}", "ts": BASE_TS + i,
         "type": "BAD TYPE" if i == bad_at else "ping"}
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_load_events_all_formats(srv, tmp_path, fmt):
    table = pa.Table.from_pylist(event_rows(250))
    path = tmp_path / f"events.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    r = run_segctl(srv, "load", "events", str(path), "--batch-rows", "100", "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert (summary["rows"], summary["batches"], summary["rejected_rows"]) == (
        250,
        3,
        0,
    )
    assert run_segctl(srv, "segment", "count", "ping()").out.strip() == "250"


def test_load_reports_rejected_batches_and_continues(srv, tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(event_rows(500, bad_at=130)), path)
    r = run_segctl(srv, "load", "events", str(path), "--batch-rows", "100")
    assert r.code == 1
    assert "loaded 400 events" in r.out
    assert "rejected 1 batch(es), 100 rows" in r.out
    assert "100..199" in r.out
    assert "1 batch(es) rejected" in r.err
    assert run_segctl(srv, "segment", "count", "ping()").out.strip() == "400"


def test_load_contacts_and_items(srv, tmp_path):
    contacts = tmp_path / "contacts.jsonl"
    contacts.write_text("".join(json.dumps({"customer_id": f"n{i}", "age": 200 + i}) + "\n"
                                for i in range(30)))  # fmt: skip
    r = run_segctl(
        srv, "load", "contacts", str(contacts), "--batch-rows", "7", "--json"
    )
    assert r.code == 0 and json.loads(r.out)["rows"] == 30
    assert run_segctl(srv, "segment", "count", "age >= 200").out.strip() == "30"
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1", "i2"], "category": ["A/B", "A/C"],
                             "price": [1.0, 2.0]}), items)  # fmt: skip
    r = run_segctl(srv, "load", "items", str(items))
    assert r.code == 0 and "loaded 2 items" in r.out


def test_stats_and_health(srv):
    r = run_segctl(srv, "stats")
    assert r.code == 0 and "contacts" in r.out and f"{N_CONTACTS:,}" in r.out
    data = json.loads(run_segctl(srv, "stats", "--json").out)
    assert data["contacts"] == N_CONTACTS and data["events"] == 100
    r = run_segctl(srv, "health", token=None)
    assert (r.code, r.out.strip()) == (0, "SERVING")


def test_usage_and_connection_errors(srv, tmp_path):
    r = run_segctl(None, "segment", "frobnicate")
    assert r.code == 2 and "invalid choice" in r.err
    r = run_segctl(None)
    assert r.code == 2
    r = run_segctl(srv, "load", "events", str(tmp_path / "missing.csv"))
    assert (
        r.code == 2
        and r.err.strip() == f"segctl: error: no such file: {tmp_path}/missing.csv"
    )
    r = run_segctl(srv, "load", "events", str(tmp_path / "x.txt"))
    assert r.code == 2 and "--format" in r.err
    r = run_segctl(srv, "segment", "count", "gender ==== 1")
    assert r.code == 1 and "INVALID_ARGUMENT" in r.err and "line 1:" in r.err
    r = run_segctl(srv, "stats", token="wrong")
    assert r.code == 1 and "UNAUTHENTICATED" in r.err and "SEGD_TOKEN" in r.err
    r = run_segctl(None, "--address", "127.0.0.1:1", "--timeout", "2", "stats")
    assert r.code == 1 and "UNAVAILABLE" in r.err
    r = run_segctl(None, "--address", "127.0.0.1:1", "health")
    assert (r.code, r.out.strip()) == (1, "UNREACHABLE")
    for out in (r.err, r.out):
        assert "Traceback" not in out


def test_help_and_bench_hook(monkeypatch):
    r = run_segctl(None, "--help")
    assert r.code == 0 and "segment" in r.out and "load" in r.out and "bench" in r.out
    r = run_segctl(None, "serve", "--help")
    assert r.code == 0 and "--demo" in r.out and "127.0.0.1:50051" in r.out
    import sys
    import types

    seen = {}
    fake = types.ModuleType("segd.bench.__main__")
    fake.main = lambda argv, prog: seen.update(argv=argv, prog=prog) or 0
    monkeypatch.setitem(sys.modules, "segd.bench.__main__", fake)
    r = run_segctl(None, "bench", "--quick", "count")
    assert r.code == 0 and seen["argv"] == ["--quick", "count"]
    assert seen["prog"] == "segctl bench"
