"""segctl as a user reads it: --now everywhere, one rule for sizes, options before the
command, warnings for unknown catalog values, case hints, `segctl bench`, a busy port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import BASE_TS, run_segctl, subprocess_env

THEN = str(BASE_TS + 86_400)  # the seeded views are on 2025-01-01
RECENT = "view() in last 7 days"


def test_now_on_every_evaluating_command(srv, tmp_path):
    """A saved segment over historical data exports what `count --now` gives."""
    r = run_segctl(srv, "segment", "count", RECENT, "--now", THEN)
    assert r.out.strip() == "100"
    r = run_segctl(srv, "segment", "count", RECENT, "--now", "2025-01-02T00:00:00Z")
    assert r.out.strip() == "100"  # ISO-8601 works too
    assert run_segctl(srv, "segment", "count", RECENT).out.strip() == "0"
    r = run_segctl(srv, "--json", "segment", "create", "recent", RECENT, "--now", THEN)
    assert json.loads(r.out)["count"] == 100
    out = tmp_path / "recent.csv"
    r = run_segctl(srv, "segment", "export", "recent", "-o", str(out), "--now", THEN)
    assert r.code == 0, r.err
    assert len(out.read_text().splitlines()) == 101  # header + 100 ids
    r = run_segctl(srv, "segment", "export", "recent", "-o", str(out))
    assert len(out.read_text().splitlines()) == 1  # today: nobody
    r = run_segctl(srv, "--json", "segment", "list", "--counts", "--now", THEN)
    assert [s["count"] for s in json.loads(r.out)] == [100]
    r = run_segctl(srv, "--json", "segment", "show", "recent", "--now", THEN)
    assert json.loads(r.out)["count"] == 100
    r = run_segctl(
        srv, "--json", "segment", "create", "frozen", RECENT, "--static", "--now", THEN
    )
    assert json.loads(r.out)["count"] == 100
    r = run_segctl(srv, "segment", "sample", RECENT, "--size", "5", "--now", THEN)
    assert len(r.out.split()) == 5
    r = run_segctl(
        srv, "--json", "segment", "update", "recent", "view()", "--now", THEN
    )
    assert json.loads(r.out)["count"] == 100
    r = run_segctl(srv, "segment", "count", RECENT, "--now", "yesterday")
    assert r.code == 2 and "epoch seconds or an ISO-8601 time" in r.err


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "sample", "view()", "--size", "0"],
        ["segment", "sample", "view()", "--size", "-3"],
        ["segment", "members", "view()", "--limit", "-1"],
        ["segment", "export", "x", "--chunk-size", "0"],
        ["segment", "export", "x", "--chunk-size", "-5"],
        ["segment", "sample", "view()", "--size", "ten"],
        ["segment", "update", "x", "view()", "--version", "0"],
        ["--timeout", "-1", "stats"],
        ["health", "--wait", "-2"],
        ["health", "--wait", "nan"],
    ],
)
def test_bad_sizes_are_usage_errors(srv, argv):
    r = run_segctl(srv, *argv)
    assert r.code == 2, r
    assert "must be" in r.err or "expected an integer" in r.err
    assert r.out == ""


def test_connection_options_before_serve_apply(srv):
    r = run_segctl(
        None, "--address", "127.0.0.1:7777", "--token", "t0k", "serve", "--print-config"
    )
    assert r.code == 0, r.err
    config = {
        parts[0]: parts[1] if len(parts) > 1 else ""
        for parts in (line.split() for line in r.out.splitlines())
        if parts
    }
    assert config["address"] == "127.0.0.1:7777"
    assert config["token"] == "***"
    r = run_segctl(None, "serve", "--address", "127.0.0.1:7778", "--print-config")
    assert "127.0.0.1:7778" in r.out


def test_unknown_catalog_value_warns_and_still_counts(srv):
    with srv.client() as c:
        c.upsert_items([{"item_id": "i1", "category": "Outdoor/Tents"}])
    q = 'view(category = "Outdor")'
    r = run_segctl(srv, "segment", "count", q)
    assert (r.code, r.out) == (0, "0\n")
    assert r.err == (
        'segctl: warning: unknown category "Outdor" (did you mean "Outdoor"?)\n'
    )
    r = run_segctl(srv, "--json", "segment", "count", q)
    data = json.loads(r.out)
    assert data["count"] == 0 and data["warnings"][0]["suggestion"] == "Outdoor"
    r = run_segctl(srv, "segment", "explain", q)
    assert "unknown category" in r.err and r.code == 0
    r = run_segctl(srv, "segment", "members", q)
    assert "unknown category" in r.err
    r = run_segctl(srv, "segment", "count", 'view(category = "Outdoor")')
    assert r.err == ""


def test_attribute_case_hint(srv):
    r = run_segctl(srv, "segment", "count", 'GENDER = "m"')
    assert r.code == 1
    assert "unknown attribute 'GENDER'" in r.err
    assert "case-sensitive: did you mean 'gender'?" in r.err


def test_segctl_bench_names_itself_and_caches_per_user(monkeypatch, tmp_path):
    r = run_segctl(None, "bench", "--help")
    assert r.code == 0
    from segd.bench import dataset

    monkeypatch.delenv(dataset.CACHE_ENV, raising=False)
    default = dataset.default_cache_dir()
    package = Path(dataset.__file__).resolve().parent
    assert package not in default.resolve().parents and default.name == "bench"
    monkeypatch.setenv(dataset.CACHE_ENV, str(tmp_path))
    assert dataset.cache_dir(2000, 0) == tmp_path / "2k-seed0"
    proc = subprocess.run(
        [sys.executable, "-m", "segd.server.segctl", "bench", "--rounds", "x"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: segctl bench")
    assert "python -m" not in proc.stderr


def test_busy_port_gives_one_clear_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "segd.server.segctl", "--address",
             f"127.0.0.1:{port}", "serve", "--in-memory"],
            capture_output=True, text=True, env=subprocess_env(), timeout=60,
            cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    # only segd's own log lines: no raw gRPC core line ("E1129 ... add_port.cc ...")
    assert all(line.startswith("ts=") for line in lines), proc.stderr
    assert 'msg="cannot start"' in lines[-1]
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[-1]
    assert "GRPC_VERBOSITY" not in proc.stderr and "add_port" not in proc.stderr
