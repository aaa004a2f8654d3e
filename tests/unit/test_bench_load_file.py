"""bench/load_file.py measures a real load, with and without segd.pqdict and load6's
switches."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from segd import ingest, pqdict
from segd.bench import load_file
from segd.native import postings


def test_measure_loads_every_event(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pqdict, "MIN_DICTIONARY_BYTES", pqdict.MIN_DICTIONARY_BYTES)
    # measure() sets every switch: each is put back afterwards
    for switch in (
        "READ_AHEAD",
        "PARALLEL_COMMIT",
        "STAGE_AHEAD",
        "ADOPT_STAGED_MAPS",
        "KEY_INDEX",
        "SPARSE_SPLIT",
        "GROW_AHEAD",
        "NATIVE_AMOUNTS",
    ):
        monkeypatch.setattr(ingest, switch, getattr(ingest, switch))
    monkeypatch.setattr(postings, "PARTITIONED_APPEND", postings.PARTITIONED_APPEND)
    monkeypatch.setattr(pqdict, "PARALLEL_COLUMNS", pqdict.PARALLEL_COLUMNS)
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "customer_id": pa.array(
                [f"c{i % 37}" for i in range(500)]
            ).dictionary_encode(),
            "ts": pa.array([1_735_689_600 + i for i in range(500)], pa.int64()),
            "type": pa.array(["view", "order"] * 250),
        }
    )
    pq.write_table(table, path)
    for arrow_reads, inline in ((False, False), (True, False), (False, True)):
        r = load_file.measure(str(path), arrow_reads=arrow_reads, inline=inline)
        assert r["events"] == 500
        assert r["peak_bytes"] > 0
        assert r["rss_bytes"] > 0
    r = load_file.measure(
        str(path), serial_commit=True, no_stage_ahead=True, no_adopt=True
    )
    assert r["events"] == 500
    assert r["validate_main_cpu_s"] <= r["validate_cpu_s"] + 0.05
    assert load_file.main([str(path)]) == 0
    assert "events 500" in capsys.readouterr().out
    assert load_file.main([str(path), "--load5"]) == 0
    assert "events 500" in capsys.readouterr().out
    assert load_file.main([str(path), "--load8", "--digest"]) == 0
    out = capsys.readouterr().out
    assert "events 500" in out and "digest " in out
