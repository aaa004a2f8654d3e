"""The gRPC load tester (`python -m segd.bench grpc`) against a real server on loopback:
its Count phase with clients as threads and spread over client processes."""

from __future__ import annotations

import json

import pytest

from segd.bench import grpc_load


@pytest.mark.parametrize("processes", [1, 2])
def test_count_phase_with_threads_and_client_processes(
    server_process, tmp_path, capsys, processes: int
) -> None:
    proc = server_process("--demo", "300", "--in-memory")
    code = grpc_load.main(
        [
            "--address",
            f"127.0.0.1:{proc.port}",
            "--clients",
            "4",
            "--client-processes",
            str(processes),
            "--seconds",
            "0.5",
            "--overhead-seconds",
            "0.2",
            "--skip-ingest",
            "--json",
            "--results-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    count = rec["count"]
    assert count["errors"] == []
    assert count["client_processes"] == processes
    assert count["calls"] > 0 and count["qps"] > 0
    assert len(count["count"]) == 1  # every client saw the same member count
    assert 0 < count["p50_ms"] <= count["p99_ms"]
    stalls = count["machine_stalls"]  # the probe covered the phase
    assert stalls["seconds"] >= 0.5
    assert stalls["stalls"] >= 0 and stalls["longest_ms"] <= stalls["total_ms"] + 0.1


def test_client_processes_out_of_range_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        grpc_load.main(["--clients", "2", "--client-processes", "3"])
    assert exc.value.code == 2
    assert "--client-processes" in capsys.readouterr().err
