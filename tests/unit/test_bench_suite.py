"""The benchmark suite runs end to end at a tiny scale, so it cannot rot (issue 5).

``python -m segd.bench`` at 2000 contacts, one round: both engine workers start, load the
same Parquet files, every query gives the same members on segd and DuckDB, and the JSON
record has the keys docs/benchmarks.md promises. With chdb installed, the same with
ClickHouse as a third engine (skipped without it).
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from segd.bench.__main__ import main
from segd.bench.queries import REFERENCE, select, suite
from segd.bench.side_by_side.runner import members_digest
from segd.datagen import DEFAULT_NOW

QUERY_KEYS = {
    "name",
    "segd_ms",
    "duckdb_ms",
    "ratio",
    "segd_count",
    "duckdb_count",
    "chdb_ms",
    "chdb_count",
    "chdb_ratio",
    "match",
}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    argv = [
        "--contacts",
        "2000",
        "--rounds",
        "1",
        "--threads",
        "2",
        "--json",
        "--cache-dir",
        str(root / "cache"),
        "--results-dir",
        str(root / "results"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, json.loads(out.getvalue()), root


def test_exit_code_zero_when_every_query_matches(record):
    code, rec, _ = record
    assert code == 0
    assert rec["ok"] is True


def test_every_query_matches_on_both_engines(record):
    _, rec, _ = record
    ran = {q["name"] for q in rec["queries"]}
    expected = {q.name for q in suite(DEFAULT_NOW) if not q.skip}
    assert ran == expected
    for q in rec["queries"]:
        assert q["match"], f"{q['name']}: {q.get('error')}"
        assert q["segd_count"] == q["duckdb_count"]
        assert q["segd_hash"] == q["duckdb_hash"]


def test_json_has_the_required_keys(record):
    _, rec, _ = record
    assert {"contacts", "events", "queries", "load", "memory", "machine"} <= set(rec)
    assert rec["contacts"] >= 2000 and rec["events"] > 0
    for q in rec["queries"]:
        assert QUERY_KEYS <= set(q)
        assert q["segd_ms"] > 0 and q["duckdb_ms"] > 0
        # the record rounds the ratio to 2 decimals (0.1634 -> 0.16): allow that half
        # step on top of 1% for the ms rounding, or a ratio below 1 fails by rounding
        assert q["ratio"] == pytest.approx(
            q["duckdb_ms"] / q["segd_ms"], rel=0.01, abs=0.005
        )
    assert {"segd_s", "duckdb_s", "events_per_s"} <= set(rec["load"])
    assert {"segd_bytes_per_event", "segd_bytes_per_contact"} <= set(rec["memory"])
    assert rec["memory"]["segd_rss_bytes"] > 0
    assert {"cpu", "cores", "ram_bytes", "python", "numpy", "duckdb", "pyarrow"} <= set(
        rec["machine"]
    )


def test_rfm_cell_is_scored_by_every_engine_from_the_orders(record):
    """The RFM cell runs on every engine (segd: rfm_compute + rfm.code; DuckDB: the
    docs/rfm.md definition in SQL) and nothing is skipped any more."""
    _, rec, _ = record
    assert rec["skipped"] == []
    (cell,) = [q for q in rec["queries"] if q["name"] == "rfm_cell"]
    assert cell["match"] and cell["segd_count"] == cell["duckdb_count"] > 0


def test_two_thread_throughput_of_the_reference_segment(record):
    _, rec, _ = record
    tp = rec["threads"]["reference_throughput"]
    assert tp["single"]["threads"] == 1 and tp["multi"]["threads"] == 2
    assert tp["single"]["queries"] >= 1 and tp["multi"]["queries"] >= 2


def test_results_file_and_cache_are_written(record):
    _, rec, root = record
    files = list((root / "results").glob("*-2k.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["queries"] == rec["queries"]
    assert (root / "cache" / "2k-seed0" / "events.parquet").exists()


def test_members_digest_is_order_independent():
    assert members_digest(["b", "a", "c"]) == members_digest(["c", "b", "a"])
    assert members_digest([])[0] == 0
    assert members_digest(["a"]) != members_digest(["b"])


def test_unknown_query_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--queries", "nope"])
    assert exc.value.code == 2
    assert "unknown query 'nope'" in capsys.readouterr().err


def test_select_keeps_the_requested_order():
    qs = select(suite(DEFAULT_NOW), ["stress_or", REFERENCE])
    assert [q.name for q in qs] == ["stress_or", REFERENCE]


def test_a_mismatch_fails_loudly_naming_the_query(record):
    """A query whose SQL disagrees with its DSL must fail the run, by name."""
    from segd.bench import report
    from segd.bench.dataset import cached_dataset
    from segd.bench.queries import Query
    from segd.bench.side_by_side import runner

    _, _, root = record
    ds = cached_dataset(2000, 0, root / "cache")
    wrong = Query(
        "wrong_on_purpose",
        "men, but SQL asks for women",
        'gender = "m"',
        "SELECT customer_id FROM contacts WHERE gender = 'f'",
    )
    opts = runner.Options(rounds=1, profile=False)
    raw = runner.run(ds, [wrong], opts, lambda msg: None, lambda *a: None)
    rec = report.build_record(raw, ds, opts, {"usable_cores": 2}, "test", [])
    assert rec["ok"] is False
    [line] = report.failures(rec)
    assert line.startswith("query 'wrong_on_purpose': segd ")
    assert "only in segd e.g." in line


@pytest.fixture(scope="module")
def segd_alone(record):
    """``--engines segd`` on the same cached 2k dataset: segd runs without DuckDB."""
    _, _, root = record
    argv = [
        "--contacts",
        "2000",
        "--rounds",
        "2",
        "--engines",
        "segd",
        "--json",
        "--no-profile",
        "--cache-dir",
        str(root / "cache"),
        "--results-dir",
        str(root / "results-segd"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, json.loads(out.getvalue())


def test_engines_segd_runs_segd_alone(segd_alone, record):
    code, rec = segd_alone
    _, both, _ = record
    assert code == 0 and rec["ok"] is True
    assert rec["engines"] == ["segd"]
    assert set(rec["engine_labels"]) == {"segd"}
    assert both["engines"] == ["segd", "duckdb"]
    by_name = {q["name"]: q for q in both["queries"]}
    for q in rec["queries"]:
        # DuckDB's keys stay, with nulls; nothing was compared
        assert q["segd_ms"] > 0 and len(q["segd_ms_samples"]) == 1
        assert q["duckdb_ms"] is None and q["duckdb_count"] is None
        assert q["ratio"] is None and q["match"] is None
        assert q["duckdb_ms_samples"] == [] and set(q["reps"]) == {"segd"}
        # segd's members are still counted and hashed (same data, same answer)
        assert q["segd_count"] == by_name[q["name"]]["segd_count"]
        assert q["segd_hash"] == by_name[q["name"]]["segd_hash"]
    load, mem = rec["load"], rec["memory"]
    assert load["segd_s"] > 0 and load["events_per_s"] > 0
    assert load["duckdb_s"] is None and load["duckdb_events_per_s"] is None
    assert load["duckdb_by_table_s"] is None
    assert mem["segd_rss_bytes"] > 0
    assert mem["segd_index_bytes_per_event"] > 0
    assert mem["segd_bytes_per_contact_without_attributes"] > 0
    for key in ("duckdb_rss_bytes", "duckdb_peak_rss_bytes", "duckdb_memory_bytes"):
        assert mem[key] is None
    assert rec["threads"]["duckdb"] is None
    ratio_targets = [t for t in rec["targets"] if "ratio" in t["target"]]
    assert len(ratio_targets) == 2
    assert all(t["met"] is None and t["measured"] is None for t in ratio_targets)


def test_engines_segd_markdown_shows_dashes_for_duckdb(segd_alone):
    from segd.bench import report

    _, rec = segd_alone
    md = report.render_markdown(rec)
    ref = next(line for line in md.splitlines() if line.startswith("| reference |"))
    cells = [c.strip() for c in ref.strip("|").split("|")]
    # query, segd ms, DuckDB ms, ratio, contacts/s, members, match
    assert cells[2] == "-" and cells[3] == "-" and cells[6] == "-"
    assert cells[1] != "-"
    assert "| load (DuckDB) | - |" in md


@pytest.mark.parametrize(
    ("value", "message"),
    [("duckdb", "must include segd"), ("segd,sqlite", "unknown engine 'sqlite'")],
)
def test_bad_engines_are_usage_errors(capsys, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["--engines", value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_every_record_has_the_clickhouse_keys(record):
    """ClickHouse's keys are always there (null when it did not run)."""
    _, rec, _ = record
    assert rec["engines"] == ["segd", "duckdb"]
    for q in rec["queries"]:
        assert {"chdb_ms", "chdb_count", "chdb_ratio", "chdb_hash"} <= set(q)
        assert q["chdb_ms"] is None and q["chdb_count"] is None
        assert q["chdb_ratio"] is None and q["chdb_ms_samples"] == []
        assert q["chsql"]  # every runnable query has its ClickHouse SQL
    assert rec["load"]["chdb_s"] is None and rec["memory"]["chdb_rss_bytes"] is None
    assert rec["memory"]["duckdb_storage"] == "memory"  # auto: a file from 5M on


@pytest.fixture(scope="module")
def three_engines(record):
    """segd, DuckDB (in a database file) and ClickHouse on the cached 2k dataset."""
    pytest.importorskip("chdb", reason="chdb (ClickHouse in process) not installed")
    _, _, root = record
    argv = [
        "--contacts",
        "2000",
        "--rounds",
        "1",
        "--engines",
        "segd,duckdb,chdb",
        "--duckdb-storage",
        "file",
        "--json",
        "--no-profile",
        "--cache-dir",
        str(root / "cache"),
        "--results-dir",
        str(root / "results-three"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, json.loads(out.getvalue())


def test_three_engines_give_identical_members(three_engines, record):
    code, rec = three_engines
    _, both, _ = record
    assert code == 0 and rec["ok"] is True
    assert rec["engines"] == ["segd", "duckdb", "chdb"]
    assert set(rec["engine_labels"]) == {"segd", "duckdb", "chdb"}
    assert rec["engine_labels"]["chdb"].startswith("ClickHouse ")
    by_name = {q["name"]: q for q in both["queries"]}
    expected = {q.name for q in suite(DEFAULT_NOW) if not q.skip}
    assert {q["name"] for q in rec["queries"]} == expected
    for q in rec["queries"]:
        assert q["match"] is True, f"{q['name']}: {q.get('error')}"
        assert q["segd_count"] == q["duckdb_count"] == q["chdb_count"]
        assert q["segd_hash"] == q["duckdb_hash"] == q["chdb_hash"]
        assert q["segd_hash"] == by_name[q["name"]]["segd_hash"]
        assert q["chdb_ms"] > 0 and len(q["chdb_ms_samples"]) == 1
        assert q["chdb_ratio"] == pytest.approx(
            q["chdb_ms"] / q["segd_ms"], rel=0.01, abs=0.005
        )
        assert set(q["reps"]) == {"segd", "duckdb", "chdb"}
    assert rec["load"]["chdb_s"] > 0 and rec["load"]["chdb_events_per_s"] > 0
    assert rec["memory"]["duckdb_storage"] == "file"
    assert rec["memory"]["chdb_rss_bytes"] is not None
    assert rec["threads"]["chdb"] >= 1
    names = [t["target"] for t in rec["targets"]]
    assert "slowest ratio vs ClickHouse" in names


def test_three_engines_markdown_has_clickhouse_columns(three_engines):
    from segd.bench import report

    _, rec = three_engines
    md = report.render_markdown(rec)
    header = next(line for line in md.splitlines() if line.startswith("| query |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:6] == ["query", "segd ms", "DuckDB ms", "ratio", "ClickHouse ms",
                         "CH ratio"]  # fmt: skip
    assert "| load (ClickHouse) |" in md


def test_a_clickhouse_mismatch_names_clickhouse(record):
    """SQL that agrees with segd on DuckDB but not on ClickHouse fails the run."""
    pytest.importorskip("chdb", reason="chdb (ClickHouse in process) not installed")
    from segd.bench import report
    from segd.bench.dataset import cached_dataset
    from segd.bench.queries import Query
    from segd.bench.side_by_side import runner

    _, _, root = record
    ds = cached_dataset(2000, 0, root / "cache")
    wrong = Query(
        "wrong_on_clickhouse",
        "men; the ClickHouse SQL asks for women",
        'gender = "m"',
        "SELECT customer_id FROM contacts WHERE gender = 'm'",
        chsql="SELECT customer_id FROM contacts WHERE gender = 'f'",
    )
    opts = runner.Options(rounds=1, profile=False, engines=("segd", "duckdb", "chdb"))
    raw = runner.run(ds, [wrong], opts, lambda msg: None, lambda *a: None)
    rec = report.build_record(raw, ds, opts, {"usable_cores": 2}, "test", [])
    assert rec["ok"] is False
    [line] = report.failures(rec)
    assert "ClickHouse" in line and "DuckDB" not in line
    [q] = rec["queries"]
    assert q["segd_count"] == q["duckdb_count"] != q["chdb_count"]


def test_duckdb_storage_auto_switches_to_a_file_at_5m():
    from segd.bench.side_by_side.runner import DUCKDB_FILE_AT, Options

    assert DUCKDB_FILE_AT == 5_000_000
    auto = Options()
    assert not auto.duckdb_file(4_999_999) and auto.duckdb_file(5_000_000)
    assert Options(duckdb_storage="file").duckdb_file(10)
    assert not Options(duckdb_storage="memory").duckdb_file(10_000_000)
