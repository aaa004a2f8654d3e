"""Turn the runner's raw results into the JSON record, rich tables and markdown.

The JSON is the source of truth (``bench/results/<date>-<scale>.json``); the terminal
tables and the markdown for BENCHMARKS.md are both rendered from it.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

from segd.bench.dataset import Dataset, scale_label
from segd.bench.queries import REFERENCE
from segd.bench.side_by_side.runner import QueryResult, median

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = {
    "median_ratio": 10.0,  # segd >= 10x faster than DuckDB on the median of the suite
    "min_ratio": 1.0,  # and never slower on any query
    "reference_contacts_per_s": 100e6,  # at 10M contacts
    "load_events_per_s": 2e6,
    "index_bytes_per_event": 16.0,  # postings + contact-major index
    "bytes_per_contact": 64.0,  # id map + aggregates, attribute payload not counted
    "min_chdb_ratio": 5.0,  # issue 15: no query below 5x ClickHouse
}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _ratio(other_s: float | None, segd_s: float | None) -> float | None:
    """other engine's time / segd's, rounded (None when either did not run)."""
    return round(other_s / segd_s, 2) if segd_s and other_s else None


def _query_record(res: QueryResult, contacts: int) -> dict:
    segd_s, duck_s = median(res.segd_s), median(res.duckdb_s)
    ch_s = median(res.chdb_s)
    ratio = duck_s / segd_s if segd_s and duck_s else None
    rec = {
        "name": res.query.name,
        "title": res.query.title,
        "segd_ms": _ms(segd_s),
        "duckdb_ms": _ms(duck_s),
        "ratio": None if ratio is None else round(ratio, 2),
        "segd_count": res.segd_count,
        "duckdb_count": res.duckdb_count,
        "chdb_ms": _ms(ch_s),
        "chdb_count": res.chdb_count,
        "chdb_ratio": _ratio(ch_s, segd_s),
        "match": res.match,
        "segd_contacts_per_s": round(contacts / segd_s) if segd_s else None,
        "segd_hash": res.segd_hash,
        "duckdb_hash": res.duckdb_hash,
        "chdb_hash": res.chdb_hash,
        "segd_ms_samples": [_ms(s) for s in res.segd_s],
        "duckdb_ms_samples": [_ms(s) for s in res.duckdb_s],
        "chdb_ms_samples": [_ms(s) for s in res.chdb_s],
        # the worker's CPU time per call (all its threads), median over the samples
        **{
            f"{eng}_cpu_ms": _ms(median(res.cpu_s.get(eng, [])))
            for eng in ("segd", "duckdb", "chdb")
        },
        "reps": res.reps,
        "dsl": res.query.dsl.strip(),
        "sql": res.query.sql.strip(),
        "chsql": res.query.chsql.strip(),
    }
    if res.query.note:
        rec["note"] = res.query.note
    if res.error:
        rec["error"] = res.error
    if res.profile:
        rec["segd_profile"] = res.profile
    return rec


def _throughput(raw: dict | None, contacts: int) -> dict | None:
    if not raw:
        return None
    out = {}
    for key in ("single", "multi"):
        r = raw[key]
        qps = r["queries"] / r["seconds"]
        out[key] = {
            "threads": r["threads"],
            "queries": r["queries"],
            "seconds": round(r["seconds"], 3),
            "qps": round(qps, 2),
            "contacts_per_s": round(qps * contacts),
        }
    out["scaling"] = round(out["multi"]["qps"] / out["single"]["qps"], 2)
    return out


def _targets(rec: dict) -> list[dict]:
    ratios = [q["ratio"] for q in rec["queries"] if q["ratio"] is not None]
    ref = next((q for q in rec["queries"] if q["name"] == REFERENCE), None)
    out = []

    def add(name, measured, target, met, note=""):
        out.append(
            {"target": name, "measured": measured, "goal": target, "met": met}
            | ({"note": note} if note else {})
        )

    if "duckdb" not in rec["engines"]:
        for name, goal in (
            ("median ratio (DuckDB ms / segd ms)", ">= 10"),
            ("slowest ratio (never slower)", ">= 1"),
        ):
            add(name, None, goal, None, "DuckDB not run (--engines segd)")
    elif ratios:
        med = statistics.median(ratios)
        subset = "" if rec["full_suite"] else "a subset of the suite ran"
        add(
            "median ratio (DuckDB ms / segd ms)",
            round(med, 2),
            ">= 10",
            None if subset else med >= 10,
            subset,
        )
        add(
            "slowest ratio (never slower)",
            min(ratios),
            ">= 1",
            None if subset else min(ratios) >= 1,
            subset,
        )
    ch_ratios = [q["chdb_ratio"] for q in rec["queries"] if q["chdb_ratio"] is not None]
    if "chdb" in rec["engines"] and ch_ratios:
        subset = "" if rec["full_suite"] else "a subset of the suite ran"
        add(
            "median ratio vs ClickHouse (chdb ms / segd ms)",
            round(statistics.median(ch_ratios), 2),
            "-",
            None,
            subset,
        )
        add(
            "slowest ratio vs ClickHouse",
            min(ch_ratios),
            ">= 5",
            None if subset else min(ch_ratios) >= TARGETS["min_chdb_ratio"],
            subset,
        )
    if ref and ref["segd_contacts_per_s"]:
        cps = ref["segd_contacts_per_s"]
        at_10m = rec["contacts"] >= 10_000_000
        add(
            "reference segment contacts/s",
            cps,
            ">= 100M at 10M contacts",
            cps >= TARGETS["reference_contacts_per_s"] if at_10m else None,
            "" if at_10m else f"measured at {rec['scale']}; the target is for 10M",
        )
    eps = rec["load"]["events_per_s"]
    add("bulk load events/s", eps, ">= 2M", eps >= TARGETS["load_events_per_s"])
    ibpe = rec["memory"]["segd_index_bytes_per_event"]
    if ibpe is not None:
        add(
            "index bytes per event (postings + contact-major)",
            round(ibpe, 2),
            "<= 16",
            ibpe <= TARGETS["index_bytes_per_event"],
        )
    bpc = rec["memory"]["segd_bytes_per_contact_without_attributes"]
    if bpc is not None:
        add(
            "bytes per contact (id map + aggregates; + attribute payload)",
            round(bpc, 2),
            "<= 64",
            bpc <= TARGETS["bytes_per_contact"],
        )
    return out


def _per_contact_without_attributes(stats: dict) -> float | None:
    mem, n = stats.get("memory_bytes") or {}, stats.get("contacts")
    if not n or "idmap" not in mem or "aggregates" not in mem:
        return None
    return (mem["idmap"] + mem["aggregates"]) / n


def build_record(
    raw: dict, ds: Dataset, opts, machine: dict, command: str, load_end: list[float]
) -> dict:
    """The JSON record of one run (see docs/benchmarks.md for the keys)."""
    engines = raw.get("engines", ["segd", "duckdb"])
    segd_stats, duck_stats = raw["stats"]["segd"], raw["stats"].get("duckdb") or {}
    ch_stats = raw["stats"].get("chdb") or {}
    contacts, events = segd_stats["contacts"], segd_stats["events"]
    loads = raw["loads"]
    duck = loads.get("duckdb")  # None: DuckDB did not run (--engines segd)
    ch = loads.get("chdb")  # None: ClickHouse did not run
    segd_load = sum(loads["segd"]["seconds"].values())
    duck_load = sum(duck["seconds"].values()) if duck else None
    segd_events_s = loads["segd"]["seconds"]["events"]
    duck_events_s = duck["seconds"]["events"] if duck else None
    rec = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "scale": scale_label(ds.contacts),
        "seed": ds.seed,
        "now": ds.now.isoformat(),
        "contacts": contacts,
        "profile_rows": ds.contacts,
        "events": events,
        "items": ds.items,
        "rounds": opts.rounds,
        "full_suite": raw["full_suite"],
        "engines": engines,
        "engine_labels": raw["labels"],
        "queries": [_query_record(r, contacts) for r in raw["results"]],
        "skipped": [{"name": q.name, "reason": q.skip} for q in raw["skipped"]],
        "load": {
            "segd_s": round(segd_load, 3),
            "duckdb_s": None if duck_load is None else round(duck_load, 3),
            "events_per_s": round(events / segd_events_s) if segd_events_s else None,
            "duckdb_events_per_s": round(duck["events"] / duck_events_s)
            if duck_events_s
            else None,
            "segd_by_table_s": {
                k: round(v, 3) for k, v in loads["segd"]["seconds"].items()
            },
            "duckdb_by_table_s": {k: round(v, 3) for k, v in duck["seconds"].items()}
            if duck
            else None,
            "chdb_s": round(sum(ch["seconds"].values()), 3) if ch else None,
            "chdb_events_per_s": round(ch["events"] / ch["seconds"]["events"])
            if ch and ch["seconds"]["events"]
            else None,
            "chdb_by_table_s": {k: round(v, 3) for k, v in ch["seconds"].items()}
            if ch
            else None,
        },
        "memory": {
            "segd_bytes_per_event": segd_stats["bytes_per_event"],
            "segd_index_bytes_per_event": segd_stats.get("index_bytes_per_event"),
            "segd_bytes_per_contact": segd_stats["bytes_per_contact"],
            "segd_bytes_per_contact_without_attributes": (
                _per_contact_without_attributes(segd_stats)
            ),
            "segd_accounted_bytes": segd_stats["memory_bytes"],
            "segd_rss_bytes": loads["segd"]["rss_bytes"],
            "segd_peak_rss_bytes": loads["segd"]["peak_rss_bytes"],
            "duckdb_rss_bytes": duck["rss_bytes"] if duck else None,
            "duckdb_peak_rss_bytes": duck["peak_rss_bytes"] if duck else None,
            "duckdb_memory_bytes": duck_stats.get("duckdb_memory_bytes"),
            "duckdb_storage": duck_stats.get("duckdb_storage"),
            "chdb_rss_bytes": ch["rss_bytes"] if ch else None,
            "chdb_peak_rss_bytes": ch["peak_rss_bytes"] if ch else None,
            "chdb_table_bytes": ch_stats.get("chdb_table_bytes"),
        },
        "threads": {
            "segd": opts.threads,
            "duckdb": (opts.duckdb_threads or machine["usable_cores"])
            if duck
            else None,
            "chdb": (getattr(opts, "chdb_threads", None) or machine["usable_cores"])
            if ch
            else None,
            "reference_throughput": _throughput(raw["throughput"], contacts),
        },
        "machine": machine | {"load_average_end": load_end},
    }
    rec["targets"] = _targets(rec)
    # match is None when segd ran alone: nothing to compare, not a failure
    rec["ok"] = all(q["match"] is not False for q in rec["queries"])
    return rec


def write_record(rec: dict, directory: Path | None = None) -> Path:
    out = directory or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rec['date'][:10]}-{rec['scale']}.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return path


def failures(rec: dict) -> list[str]:
    """One line per query whose members differ between the engines (or that failed)."""
    return [
        f"query {q['name']!r}: " + q.get("error", "members differ")
        for q in rec["queries"]
        if q["match"] is False
    ]


# -- rendering --------------------------------------------------------------------------


def _fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:,.1f}{unit}"
    return f"{x:,.0f}"


def _fmt_bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:,.1f} {unit}"
    return f"{x:,.0f} B"


def _fmt_num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}x"


def _with_chdb(rec: dict) -> bool:
    return "chdb" in rec.get("engines", ())


def query_header(rec: dict) -> list[str]:
    """The query table's columns; ClickHouse's two only when it ran."""
    if not _with_chdb(rec):
        return QUERY_HEADER
    return [*QUERY_HEADER[:4], "ClickHouse ms", "CH ratio", *QUERY_HEADER[4:]]


def query_rows(rec: dict) -> list[list[str]]:
    rows = []
    chdb = _with_chdb(rec)
    for q in rec["queries"]:
        ch = [_fmt_ms(q.get("chdb_ms")), _fmt_ratio(q.get("chdb_ratio"))]
        rows.append(
            [
                q["name"],
                _fmt_ms(q["segd_ms"]),
                _fmt_ms(q["duckdb_ms"]),
                _fmt_ratio(q["ratio"]),
                *(ch if chdb else []),
                _fmt_rate(q["segd_contacts_per_s"]),
                f"{q['segd_count']:,}" if q["segd_count"] is not None else "-",
                {True: "yes", False: "NO", None: "-"}[q["match"]],
            ]
        )
    for s in rec["skipped"]:
        rows.append([s["name"], *["-"] * (len(query_header(rec)) - 2), "skipped"])
    return rows


def skipped_lines(rec: dict) -> list[str]:
    return [f"{s['name']} skipped: {s['reason']}" for s in rec["skipped"]]


QUERY_HEADER = [
    "query",
    "segd ms",
    "DuckDB ms",
    "ratio",
    "segd contacts/s",
    "members",
    "match",
]


def summary_rows(rec: dict) -> list[list[str]]:
    load, mem, m = rec["load"], rec["memory"], rec["machine"]
    rows = [
        ["contacts / events", f"{rec['contacts']:,} / {rec['events']:,}"],
        [
            "load (segd)",
            f"{load['segd_s']:.2f} s, events {_fmt_rate(load['events_per_s'])}/s",
        ],
        [
            "load (DuckDB)",
            "-"
            if load["duckdb_s"] is None
            else f"{load['duckdb_s']:.2f} s, events "
            f"{_fmt_rate(load['duckdb_events_per_s'])}/s",
        ],
    ]
    chdb = _with_chdb(rec)
    if chdb:
        rows.append(
            [
                "load (ClickHouse)",
                f"{load['chdb_s']:.2f} s, events "
                f"{_fmt_rate(load['chdb_events_per_s'])}/s",
            ]
        )
    ch_rss = f", ClickHouse {_fmt_bytes(mem.get('chdb_rss_bytes'))}" if chdb else ""
    ch_peak = (
        f", ClickHouse {_fmt_bytes(mem.get('chdb_peak_rss_bytes'))}" if chdb else ""
    )
    storage = mem.get("duckdb_storage")
    rows += [
        [
            "RSS delta after load",
            f"segd {_fmt_bytes(mem['segd_rss_bytes'])}, "
            f"DuckDB {_fmt_bytes(mem['duckdb_rss_bytes'])}"
            + (f" ({storage})" if storage else "")
            + ch_rss,
        ],
        [
            "peak RSS during load",
            f"segd {_fmt_bytes(mem['segd_peak_rss_bytes'])}, "
            f"DuckDB {_fmt_bytes(mem['duckdb_peak_rss_bytes'])}" + ch_peak,
        ],
        [
            "segd accounting",
            f"{mem['segd_bytes_per_event']:.1f} B/event "
            f"({_fmt_num(mem.get('segd_index_bytes_per_event'))} in indexes), "
            f"{mem['segd_bytes_per_contact']:.1f} B/contact "
            f"({_fmt_num(mem.get('segd_bytes_per_contact_without_attributes'))} "
            f"without attributes), total "
            f"{_fmt_bytes(mem['segd_accounted_bytes'].get('total'))}",
        ],
    ]
    tp = rec["threads"]["reference_throughput"]
    if tp:
        rows.append(
            [
                "reference, segd threads",
                f"1 thread {tp['single']['qps']:.1f} q/s "
                f"({_fmt_rate(tp['single']['contacts_per_s'])} contacts/s); "
                f"{tp['multi']['threads']} threads {tp['multi']['qps']:.1f} q/s "
                f"({_fmt_rate(tp['multi']['contacts_per_s'])} contacts/s), "
                f"x{tp['scaling']:.2f}",
            ]
        )
    rows += [
        [
            "threads",
            f"segd {rec['threads']['segd']}, DuckDB {rec['threads']['duckdb'] or '-'}"
            + (f", ClickHouse {rec['threads'].get('chdb') or '-'}" if chdb else ""),
        ],
        [
            "machine",
            f"{m['cpu']}, {m['usable_cores']} cores, {_fmt_bytes(m['ram_bytes'])} RAM",
        ],
        [
            "versions",
            f"Python {m['python']}, numpy {m['numpy']}, pyarrow {m['pyarrow']}, "
            f"duckdb {m['duckdb']}, pyroaring {m['pyroaring']}"
            + (f", chdb {m.get('chdb')}" if chdb else ""),
        ],
        [
            "engines",
            ", ".join(rec.get("engines", [])),
        ],
        [
            "revision",
            f"{m['revision']['commit']}"
            + (" (engine/native modified)" if m["revision"]["engine_dirty"] else ""),
        ],
        [
            "load average",
            f"start {m['load_average_start']}, end {m['load_average_end']}",
        ],
    ]
    return rows


def target_rows(rec: dict) -> list[list[str]]:
    def met(x):
        return {True: "met", False: "NOT met", None: "n/a"}[x]

    return [
        [
            t["target"],
            "-"
            if t["measured"] is None
            else _fmt_rate(t["measured"])
            if isinstance(t["measured"], (int, float)) and t["measured"] >= 1e4
            else str(t["measured"]),
            t["goal"],
            met(t["met"]) + (f" ({t['note']})" if t.get("note") else ""),
        ]
        for t in rec["targets"]
    ]


def render_rich(rec: dict, console) -> None:
    from rich.table import Table

    others = [
        {"duckdb": "DuckDB", "chdb": "ClickHouse"}[e]
        for e in rec.get("engines", ())
        if e != "segd"
    ]
    vs = f" vs {' and '.join(others)}" if others else " alone"
    title = (
        f"segd{vs} — {rec['scale']} contacts, median of "
        f"{max(rec['rounds'] - 1, 1)} rounds"
    )
    table = Table(title=title)
    for i, h in enumerate(query_header(rec)):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in query_rows(rec):
        style = "red" if row[-1] == "NO" else ("dim" if row[-1] == "skipped" else None)
        table.add_row(*row, style=style)
    console.print(table)
    for line in skipped_lines(rec):
        console.print(line)
    for name, header, rows in (
        ("run", ["", ""], summary_rows(rec)),
        ("targets", ["target", "measured", "goal", ""], target_rows(rec)),
    ):
        t = Table(title=name, show_header=name == "targets")
        for h in header:
            t.add_column(h)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    for q in rec["queries"]:
        if q.get("note"):
            console.print(f"[dim]note {q['name']}: {q['note']}[/dim]")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(rec: dict) -> str:
    """Markdown to paste into BENCHMARKS.md: command, date, tables, targets."""
    parts = [
        f"`{rec['command']}` — {rec['date']}, {rec['contacts']:,} contacts, "
        f"{rec['events']:,} events, median of {max(rec['rounds'] - 1, 1)} rounds "
        f"(after 1 warm-up)",
        "",
        _md_table(query_header(rec), query_rows(rec)),
        "",
        *[f"{line}  " for line in skipped_lines(rec)],
        "",
        _md_table(["", ""], summary_rows(rec)),
        "",
        _md_table(["target", "measured", "goal", ""], target_rows(rec)),
    ]
    notes = [f"- `{q['name']}`: {q['note']}" for q in rec["queries"] if q.get("note")]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"
