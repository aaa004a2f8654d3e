"""``segctl segment ...``: count, members, sample, explain, create, update, list, show,
delete, export."""

from __future__ import annotations

import argparse
import time
from typing import Any

from segd.server.segctl import export as exports
from segd.server.segctl.console import (
    Cli,
    UsageError,
    add_connection_options,
    human_int,
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
        p.add_argument(
            "--now",
            type=float,
            default=None,
            help="evaluate as of this epoch second (default: the server clock)",
        )

    p = verb("count", "count the contacts matching a segment", cmd_count)
    query_arg(p)
    p = verb("members", "list matching customer_ids (one per line)", cmd_members)
    query_arg(p)
    p.add_argument(
        "--limit",
        type=int,
        default=100,
        help="at most this many; 0 = all (default %(default)s)",
    )
    p = verb("sample", "a random sample of matching customer_ids", cmd_sample)
    query_arg(p)
    p.add_argument("--size", type=int, default=10, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    p = verb("explain", "the plan with per-condition counts and timings", cmd_explain)
    query_arg(p)
    p.add_argument(
        "--customer",
        metavar="CUSTOMER_ID",
        help="also explain why this contact is or is not a member",
    )
    p = verb("create", "save a named segment", cmd_create)
    p.add_argument("name")
    p.add_argument("query", metavar="DSL")
    p.add_argument(
        "--static",
        action="store_true",
        help="freeze the members now (default: dynamic, re-evaluated on use)",
    )
    p = verb("update", "replace a saved segment's query", cmd_update)
    p.add_argument("name")
    p.add_argument("query", metavar="DSL")
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="fail with ABORTED unless the stored version is this one",
    )
    p = verb("list", "list saved segments", cmd_list)
    p.add_argument(
        "--counts", action="store_true", help="also count each segment's members"
    )
    p = verb("show", "show one saved segment", cmd_show)
    p.add_argument("name")
    p = verb("delete", "delete a saved segment", cmd_delete)
    p.add_argument("name")
    p = verb("export", "export a saved segment's members to a file", cmd_export)
    p.add_argument("name")
    p.add_argument(
        "--format",
        "-f",
        choices=exports.FORMATS,
        default=None,
        help="csv, json, jsonl, xml or xlsx (default: from -o's extension, else csv)",
    )
    p.add_argument(
        "--output",
        "-o",
        default="-",
        help="file to write; '-' = stdout (not for xlsx) (default %(default)s)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        help="ids per streamed message (default %(default)s)",
    )


def cmd_count(cli: Cli) -> int:
    n = cli.client.count(cli.args.query, now=cli.args.now)
    if cli.json:
        cli.emit_json({"count": n})
    else:
        cli.line(str(n))
    return 0


def cmd_members(cli: Cli) -> int:
    a = cli.args
    if a.limit < 0:
        raise UsageError("--limit must be >= 0")
    ids: list[str] = []
    token, total = "", 0
    while True:
        want = 10_000 if a.limit == 0 else min(10_000, a.limit - len(ids))
        if want <= 0:
            break
        page = cli.client.members_page(
            a.query, page_size=want, page_token=token, now=a.now
        )
        ids.extend(page.customer_ids)
        token, total = page.next_page_token, page.total_size
        if not token:
            break
    if cli.json:
        cli.emit_json({"customer_ids": ids, "total": total})
        return 0
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
    ids = cli.client.sample(a.query, size=a.size, seed=a.seed, now=a.now)
    if cli.json:
        cli.emit_json({"customer_ids": ids})
    else:
        for cid in ids:
            cli.line(cid)
    return 0


def _shown(value: object) -> str:
    """A detail value as people read it (gRPC's Struct turns every number into a float)."""
    if value is None:
        return "NULL"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def _evidence(d: dict) -> str:
    """Why a condition holds for the contact, in a few words (the engine's details)."""
    if "attribute" in d:
        return f"{d['attribute']} = {_shown(d.get('value'))}"
    if "aggregate" in d:
        return f"{d['aggregate']} = {_shown(d.get('value'))}"
    if "event" in d:
        n = int(d.get("event_count") or 0)
        text = f"{n} {d['event']} event{'s' if n != 1 else ''} in the window"
        if d.get("sum") is not None:
            text += f", sum {d['sum']:g}"
        times = d.get("times") or []
        if times:
            text += f", last {times[-1]}"
        return text
    if "segment" in d:
        return f"{'static' if d.get('static') else 'dynamic'} segment {d['segment']!r}"
    return ""


def _tree_rows(node: dict, depth: int, rows: list, with_match: bool) -> None:
    label = ("  " * depth) + (node.get("condition") or node.get("kind") or "?")
    row = [label, human_int(node.get("count")), f"{node.get('duration_ms', 0.0):.3f}"]
    if with_match:
        matched = node.get("matched")
        row.append("" if matched is None else ("yes" if matched else "no"))
        row.append(_evidence(node.get("details") or {}))
    rows.append(row)
    for child in node.get("children", []):
        _tree_rows(child, depth + 1, rows, with_match)


def cmd_explain(cli: Cli) -> int:
    a = cli.args
    res = cli.client.explain(a.query, customer_id=a.customer, now=a.now)
    if cli.json:
        cli.emit_json(res)
        return 0
    rows: list = []
    _tree_rows(res["plan"], 0, rows, False)
    cli.table(["condition", "contacts", "ms"], rows, right=["contacts", "ms"])
    cli.line(
        f"total: {human_int(res['count'])} contacts in {res['duration_ms']:.3f} ms"
    )
    if "contact" in res:
        rows = []
        _tree_rows(res["contact"], 0, rows, True)
        cli.line("")
        cli.table(
            ["condition", "matched", "evidence"],
            [[r[0], r[3], r[4]] for r in rows],
            title=f"customer {a.customer}",
        )
        cli.line(
            f"{a.customer}: {'member' if res['contact_matched'] else 'not a member'}"
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
    _show_segment(cli, cli.client.create_segment(a.name, a.query, static=a.static))
    return 0


def cmd_update(cli: Cli) -> int:
    a = cli.args
    _show_segment(cli, cli.client.update_segment(a.name, a.query, version=a.version))
    return 0


def cmd_show(cli: Cli) -> int:
    _show_segment(cli, cli.client.get_segment(cli.args.name))
    return 0


def cmd_list(cli: Cli) -> int:
    segs = cli.client.list_segments(include_counts=cli.args.counts)
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


def cmd_export(cli: Cli) -> int:
    a = cli.args
    fmt = a.format or exports.format_from_path(a.output) or "csv"
    if fmt == "xlsx" and a.output == "-":
        raise UsageError("xlsx needs a file: -o FILE.xlsx")
    start = time.perf_counter()
    chunks = cli.client.export(segment=a.name, chunk_size=a.chunk_size)
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
    seconds = time.perf_counter() - start
    summary = {
        "segment": a.name,
        "format": fmt,
        "output": a.output,
        "rows": writer.rows,
        "seconds": round(seconds, 3),
    }
    if cli.json and a.output != "-":
        cli.emit_json(summary)
    elif a.output != "-":
        cli.line(
            f"exported {human_int(writer.rows)} customer_ids of {a.name!r} to "
            f"{a.output} ({fmt}) in {seconds:.2f} s"
        )
    else:
        cli.note(f"exported {human_int(writer.rows)} customer_ids ({fmt})")
    return 0
