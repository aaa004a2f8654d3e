"""``segctl segment ...``: count, members, sample, explain, create, update, list, show,
delete, export, retarget, history, changes."""

from __future__ import annotations

import argparse
import codecs
import json
import time
from typing import Any

from segd.server.client import warning_to_dict
from segd.server.segctl import export as exports
from segd.server.segctl.console import (
    Cli,
    UsageError,
    add_connection_options,
    add_now_option,
    human_int,
    non_negative_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser(
        "segment",
        aliases=["segments"],
        help="ask and manage segments",
        description="Ask who matches a segment; manage saved segments.",
    )
    verbs = seg.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        add_connection_options(p)
        p.set_defaults(func=func)
        return p

    def query_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "query",
            metavar="DSL",
            help="segment text, e.g. 'gender = \"m\" and age >= 35' "
            "(or a saved segment: 'in segment \"vip\"')",
        )
        add_now_option(p)

    p = verb("count", "count the contacts matching a segment", cmd_count)
    query_arg(p)
    p = verb("members", "list matching customer_ids (one per line)", cmd_members)
    query_arg(p)
    p.add_argument(
        "--limit",
        type=non_negative_int,
        default=100,
        help="at most this many; 0 = all (default %(default)s)",
    )
    p = verb("sample", "a random sample of matching customer_ids", cmd_sample)
    query_arg(p)
    p.add_argument(
        "--size", type=positive_int, default=10, help="at least 1 (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    p = verb(
        "explain",
        "the query's condition tree: members of each part in the whole base, and "
        "with --customer that contact's verdict and evidence per condition",
        cmd_explain,
    )
    query_arg(p)
    p.add_argument(
        "--customer",
        metavar="CUSTOMER_ID",
        help="also explain why this contact is or is not a member",
    )
    p.add_argument(
        "--timings", action="store_true", help="add each condition's milliseconds"
    )
    p = verb("create", "save a named segment", cmd_create)
    p.add_argument("name")
    p.add_argument("query", metavar="DSL")
    p.add_argument(
        "--static",
        action="store_true",
        help="freeze the members now (default: dynamic, re-evaluated on use)",
    )
    add_now_option(p)
    p = verb("update", "replace a saved segment's query", cmd_update)
    p.add_argument("name")
    p.add_argument("query", metavar="DSL")
    p.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="fail with ABORTED unless the stored version is this one",
    )
    add_now_option(p)
    p = verb("list", "list saved segments", cmd_list)
    p.add_argument(
        "--counts", action="store_true", help="also count each segment's members"
    )
    add_now_option(p)
    p = verb("show", "show one saved segment", cmd_show)
    p.add_argument("name")
    add_now_option(p)
    p = verb("delete", "delete a saved segment", cmd_delete)
    p.add_argument("name")
    p = verb("export", "export a saved segment's members to a file", cmd_export)
    p.add_argument("name")
    p.add_argument(
        "--format",
        "-f",
        choices=exports.FORMATS,
        default=None,
        help="csv, json, jsonl, xml, xlsx or parquet (default: from -o's extension, "
        "else csv)",
    )
    p.add_argument(
        "--columns",
        "-c",
        default=None,
        metavar="COL,COL",
        help="contact attribute columns after customer_id (csv and parquet)",
    )
    p.add_argument(
        "--output",
        "-o",
        default="-",
        help="file to write; '-' = stdout (not for xlsx, parquet) (default %(default)s)",
    )
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=10_000,
        help="ids per streamed message (default %(default)s)",
    )
    add_now_option(p)
    p = verb(
        "history",
        "a segment's members at the end of each UTC day (dynamic segments)",
        cmd_history,
    )
    p.add_argument("name")
    p.add_argument(
        "--png", metavar="FILE", help="draw a line chart (needs matplotlib: segd[plot])"
    )
    p = verb(
        "changes",
        "membership changes (entered / exited) of dynamic segments, in log order",
        cmd_changes,
    )
    p.add_argument("name", nargs="?", default=None, help="one segment (default: all)")
    p.add_argument(
        "--from-position",
        type=non_negative_int,
        default=0,
        help="first log position to show (resume: last position + 1)",
    )
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep waiting for new changes"
    )
    p = verb(
        "retarget",
        "hashed emails / phones of a segment's members a channel cannot reach",
        cmd_retarget,
    )
    p.add_argument("name")
    p.add_argument(
        "--channel",
        required=True,
        choices=("email", "sms", "push"),
        help="export the members this channel cannot reach (no address or no consent)",
    )
    p.add_argument(
        "--identifiers",
        default="email,phone",
        metavar="ID,ID",
        help="what to hash: email, phone (default %(default)s)",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=("lines", "csv"),
        default=None,
        help="lines (one hash per line) or csv (email_sha256,phone_sha256 per contact)"
        " (default: csv for -o *.csv, else lines)",
    )
    p.add_argument(
        "--output", "-o", default="-", help="file to write; '-' = stdout (default -)"
    )
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=10_000,
        help="members read per step (default %(default)s)",
    )
    add_now_option(p)


def cmd_count(cli: Cli) -> int:
    res = cli.client.count_result(cli.args.query, now=cli.args.now)
    if cli.json:
        out: dict[str, Any] = {"count": res.count}
        if res.warnings:
            out["warnings"] = res.warnings
        cli.emit_json(out)
    else:
        cli.warn(res.warnings)
        cli.line(str(res.count))
    return 0


def cmd_members(cli: Cli) -> int:
    a = cli.args
    ids: list[str] = []
    token, total = "", 0
    warnings: list[dict[str, str]] = []
    while True:
        want = 10_000 if a.limit == 0 else min(10_000, a.limit - len(ids))
        if want <= 0:
            break
        page = cli.client.members_page(
            a.query, page_size=want, page_token=token, now=a.now
        )
        ids.extend(page.customer_ids)
        token, total = page.next_page_token, page.total_size
        if not warnings:
            warnings = [warning_to_dict(w) for w in page.warnings]
        if not token:
            break
    if cli.json:
        out: dict[str, Any] = {"customer_ids": ids, "total": total}
        if warnings:
            out["warnings"] = warnings
        cli.emit_json(out)
        return 0
    cli.warn(warnings)
    for cid in ids:
        cli.line(cid)
    if len(ids) < total:
        cli.note(
            f"({human_int(len(ids))} of {human_int(total)} shown; --limit 0 for all, "
            "or `segctl segment export`)"
        )
    return 0


def cmd_sample(cli: Cli) -> int:
    a = cli.args
    res = cli.client.sample_result(a.query, size=a.size, seed=a.seed, now=a.now)
    if cli.json:
        out: dict[str, Any] = {"customer_ids": res.customer_ids}
        if res.warnings:
            out["warnings"] = res.warnings
        cli.emit_json(out)
    else:
        cli.warn(res.warnings)
        for cid in res.customer_ids:
            cli.line(cid)
    return 0


def _tree_rows(tree: dict, with_contact: bool, timings: bool) -> list[list[str]]:
    """The tree as table rows: the condition drawn as a tree (and / or / not and
    segment references with their parts below), its members in the base, and with a
    contact its verdict and evidence. Iterative: segment references nest deeply."""
    rows: list[list[str]] = []
    stack: list[tuple[dict, str, str]] = [(tree, "", "")]
    while stack:
        node, lead, rest = stack.pop()
        junction = node["kind"] in ("and", "or", "not")
        row = [lead + (node["operator"] if junction else node["condition"])]
        row.append(human_int(node["count"]))
        if with_contact:
            matched = node.get("matched")
            row.append("" if matched is None else ("yes" if matched else "no"))
            row.append((node.get("evidence") or {}).get("summary", ""))
        if timings:
            row.append(f"{node['duration_ms']:.3f}")
        rows.append(row)
        children = node.get("children", [])
        for i in range(len(children) - 1, -1, -1):
            last = i == len(children) - 1
            stack.append(
                (
                    children[i],
                    rest + ("└─ " if last else "├─ "),
                    rest + ("   " if last else "│  "),
                )
            )
    return rows


def cmd_explain(cli: Cli) -> int:
    a = cli.args
    res = cli.client.explain(a.query, customer_id=a.customer, now=a.now)
    if cli.json:
        cli.emit_json(res)
        return 0
    cli.warn(res["warnings"])
    with_contact = "customer_id" in res
    columns = ["condition", "in base"]
    if with_contact:
        columns += [res["customer_id"], "evidence"]
    if a.timings:
        columns.append("ms")
    rows = _tree_rows(res["tree"], with_contact, a.timings)
    cli.table(columns, rows, right=["in base", "ms"])
    summary = (
        f"{human_int(res['count'])} of {human_int(res['contacts'])} contacts match"
    )
    if with_contact:
        verdict = "a member" if res["member"] else "not a member"
        summary += f"; {res['customer_id']} is {verdict}"
    cli.line(f"{summary} ({res['duration_ms']:.1f} ms)")
    cli.line(
        f"in base: contacts in the whole base matching that condition as of "
        f"{res['now']}"
    )
    return 0


def _show_segment(cli: Cli, seg: dict) -> None:
    if cli.json:
        cli.emit_json(seg)
        return
    cli.kv_table(
        [
            ("name", seg["name"]),
            ("kind", seg["kind"]),
            ("version", seg["version"]),
            ("count", human_int(seg["count"])),
            ("dsl", seg["dsl"]),
            ("created", _iso(seg["created_ms"])),
            ("updated", _iso(seg["updated_ms"])),
        ]
    )


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else ""


def cmd_create(cli: Cli) -> int:
    a = cli.args
    _show_segment(
        cli, cli.client.create_segment(a.name, a.query, static=a.static, now=a.now)
    )
    return 0


def cmd_update(cli: Cli) -> int:
    a = cli.args
    _show_segment(
        cli,
        cli.client.update_segment(a.name, a.query, version=a.version, now=a.now),
    )
    return 0


def cmd_show(cli: Cli) -> int:
    _show_segment(cli, cli.client.get_segment(cli.args.name, now=cli.args.now))
    return 0


def cmd_list(cli: Cli) -> int:
    segs = cli.client.list_segments(include_counts=cli.args.counts, now=cli.args.now)
    if cli.json:
        cli.emit_json(segs)
        return 0
    cols = (
        ["name", "kind", "version"] + (["count"] if cli.args.counts else []) + ["dsl"]
    )
    rows = [
        [s["name"], s["kind"], s["version"]]
        + ([human_int(s["count"])] if cli.args.counts else [])
        + [s["dsl"]]
        for s in segs
    ]
    cli.table(cols, rows, right=["version", "count"])
    if not segs:
        cli.note("(no saved segments)")
    return 0


def cmd_delete(cli: Cli) -> int:
    cli.client.delete_segment(cli.args.name)
    if cli.json:
        cli.emit_json({"deleted": cli.args.name})
    else:
        cli.line(f"deleted segment {cli.args.name!r}")
    return 0


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _open_output(path: str, binary: bool) -> Any:
    try:
        return open(
            path,
            "wb" if binary else "w",
            encoding=None if binary else "utf-8",
            newline=None if binary else "",
        )
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc


def _write_file(cli: Cli, pieces: Any, output: str) -> None:
    """Write a server-made file's byte pieces to ``output`` (``-``: stdout as text).
    The first piece is fetched before the file is created, so an error (an unknown
    segment or column) leaves no file behind."""
    first = next(pieces, b"")
    if output == "-":
        decoder = codecs.getincrementaldecoder("utf-8")()
        cli.stdout.write(decoder.decode(first))
        for piece in pieces:
            cli.stdout.write(decoder.decode(piece))
        cli.stdout.write(decoder.decode(b"", final=True))
        return
    with _open_output(output, binary=True) as out:
        out.write(first)
        for piece in pieces:
            out.write(piece)


def cmd_export(cli: Cli) -> int:
    a = cli.args
    fmt = a.format or exports.format_from_path(a.output) or "csv"
    columns = _names(a.columns)
    if fmt in ("xlsx", "parquet") and a.output == "-":
        raise UsageError(f"{fmt} needs a file: -o FILE.{fmt}")
    if columns and fmt not in exports.COLUMN_FORMATS:
        raise UsageError(f"--columns needs --format csv or parquet, not {fmt}")
    if fmt == "parquet" or columns:
        return _export_file(cli, fmt, columns)
    start = time.perf_counter()
    chunks = cli.client.export(
        segment=a.name,
        chunk_size=a.chunk_size,
        now=a.now,
        on_warning=lambda w: cli.warn([w]),
    )
    first = next(chunks, [])  # fails before a file is created if the segment is missing
    binary = fmt == "xlsx"
    if a.output == "-":
        stream: Any = cli.stdout
        close = False
    else:
        try:
            stream = open(
                a.output,
                "wb" if binary else "w",
                encoding=None if binary else "utf-8",
                newline=None if binary else "",
            )
        except OSError as exc:
            raise UsageError(f"cannot write {a.output}: {exc.strerror}") from exc
        close = True
    try:
        writer = exports.WRITERS[fmt](stream, a.name)
        writer.write(first)
        for chunk in chunks:
            writer.write(chunk)
        writer.close()
    finally:
        if close:
            stream.close()
    rows = writer.rows
    summary = {"segment": a.name, "format": fmt, "output": a.output, "rows": rows}
    return _report_export(
        cli, summary, start, f"{human_int(rows)} customer_ids", f" of {a.name!r}"
    )


def _report_export(
    cli: Cli, summary: dict[str, Any], start: float, what: str, whose: str
) -> int:
    """The end of every export verb: a JSON summary (`--json` with a file), else one
    line naming the file, else (output on stdout) a note on stderr."""
    a = cli.args
    seconds = time.perf_counter() - start
    fmt = summary["format"]
    if cli.json and a.output != "-":
        cli.emit_json({**summary, "seconds": round(seconds, 3)})
    elif a.output != "-":
        cli.line(f"exported {what}{whose} to {a.output} ({fmt}) in {seconds:.2f} s")
    else:
        cli.note(f"exported {what} ({fmt})")
    return 0


def cmd_history(cli: Cli) -> int:
    a = cli.args
    days = cli.client.segment_history(a.name)
    if cli.json:
        cli.emit_json(days)
    else:
        cli.table(
            ["day", "members"],
            [[d["day"], human_int(d["count"])] for d in days],
            right=["members"],
        )
        if not days:
            cli.note("(no history: the segment has not been kept live yet)")
    if a.png:
        from segd.server.segctl.rfm import _pyplot

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot([d["day"] for d in days], [d["count"] for d in days], marker="o")
        ax.set_ylabel("members")
        ax.set_title(f"segment {a.name}: members per day")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)
        plt.close(fig)
        cli.note(f"wrote {a.png}")
    return 0


def cmd_changes(cli: Cli) -> int:
    a = cli.args
    rows = cli.client.segment_changes(
        a.name, from_position=a.from_position, follow=a.follow
    )
    for row in rows:
        if cli.json:  # one JSON object per line: a followed stream never ends
            cli.line(json.dumps(row, ensure_ascii=False))
        else:
            cli.line(
                f"{row['position']}\t{_iso(row['at_ms'])}\t{row['segment']}\t"
                f"{row['change']}\t{row['customer_id']}\t{row['cause']}"
            )
    return 0


def _export_file(cli: Cli, fmt: str, columns: list[str]) -> int:
    """csv / parquet with profile columns: the server writes the file, we store it."""
    a = cli.args
    start = time.perf_counter()
    counts = [0, 0]
    pieces = cli.client.export_file(
        segment=a.name,
        format=fmt,
        columns=columns,
        chunk_size=a.chunk_size,
        now=a.now,
        on_warning=lambda w: cli.warn([w]),
        on_rows=lambda rows, total: counts.__setitem__(slice(None), [rows, total]),
    )
    _write_file(cli, pieces, a.output)
    names = ", ".join(["customer_id", *columns])
    summary = {
        "segment": a.name,
        "format": fmt,
        "columns": ["customer_id", *columns],
        "output": a.output,
        "rows": counts[0],
    }
    return _report_export(
        cli, summary, start, f"{human_int(counts[0])} rows ({names})", f" of {a.name!r}"
    )


def cmd_retarget(cli: Cli) -> int:
    a = cli.args
    fmt = a.format or ("csv" if a.output.lower().endswith(".csv") else "lines")
    identifiers = _names(a.identifiers)
    start = time.perf_counter()
    counts = [0, 0]
    pieces = cli.client.export_hashes(
        segment=a.name,
        channel=a.channel,
        identifiers=identifiers,
        format=fmt,
        chunk_size=a.chunk_size,
        now=a.now,
        on_warning=lambda w: cli.warn([w]),
        on_rows=lambda rows, total: counts.__setitem__(slice(None), [rows, total]),
    )
    _write_file(cli, pieces, a.output)
    seconds = time.perf_counter() - start
    rows, members = counts
    what = "hashes" if fmt == "lines" else "contacts"
    text = (
        f"exported {human_int(rows)} {what} of members of {a.name!r} that "
        f"{a.channel} cannot reach (the segment has {human_int(members)} members)"
    )
    if cli.json and a.output != "-":
        cli.emit_json(
            {
                "segment": a.name,
                "channel": a.channel,
                "format": fmt,
                "identifiers": identifiers,
                "output": a.output,
                "rows": rows,
                "members": members,
                "seconds": round(seconds, 3),
            }
        )
    elif a.output != "-":
        cli.line(f"{text} to {a.output} ({fmt}) in {seconds:.2f} s")
    else:
        cli.note(text)
    return 0
