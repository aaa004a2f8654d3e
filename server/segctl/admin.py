"""``segctl stats`` and ``segctl health``."""

from __future__ import annotations

import argparse

from segd.server.client import SegdRpcError
from segd.server.segctl.console import (
    Cli,
    add_connection_options,
    human_int,
    non_negative_float,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="what the server holds: contacts, events, memory",
        description="Contacts, events, memory per index, uptime, version.",
    )
    add_connection_options(p)
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser(
        "health",
        help="is the server SERVING? (exit 0 if so, else 1)",
        description="gRPC health check; needs no token.",
    )
    p.add_argument(
        "--service",
        default="",
        help="a service name such as segd.v1.SegmentService (default: the server)",
    )
    p.add_argument(
        "--wait",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="keep asking until SERVING or this many seconds pass",
    )
    add_connection_options(p)
    p.set_defaults(func=cmd_health)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _duration(ms: int) -> str:
    s = ms // 1000
    return f"{s // 86400}d {s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def cmd_stats(cli: Cli) -> int:
    s = cli.client.stats()
    if cli.json:
        cli.emit_json(s)
        return 0
    cli.kv_table(
        [
            ("contacts", human_int(s["contacts"])),
            ("events", human_int(s["events"])),
            ("items", human_int(s["items"])),
            ("segments", human_int(s["segments"])),
            ("memory", _mib(s["memory_total_bytes"])),
            ("bytes/event", f"{s['bytes_per_event']:.1f}"),
            ("bytes/contact", f"{s['bytes_per_contact']:.1f}"),
            ("uptime", _duration(s["uptime_ms"])),
            (
                "storage",
                s.get("storage") or "memory"
                if not s.get("fsync")
                else f"{s['storage']} (fsync {s['fsync']}, log record {s['wal_seq']})",
            ),
            ("version", f"{s['version']} (engine {s['engine_version'] or '?'})"),
        ]
    )
    if s["memory_bytes"]:
        cli.line("")
        rows = sorted(s["memory_bytes"].items(), key=lambda kv: -kv[1])
        cli.table(
            ["index", "memory"], [[k, _mib(v)] for k, v in rows], right=["memory"]
        )
    if s["event_types"]:
        cli.line("")
        rows = sorted(s["event_types"].items(), key=lambda kv: -kv[1])
        cli.table(
            ["event type", "events"],
            [[k, human_int(v)] for k, v in rows],
            right=["events"],
        )
    return 0


def cmd_health(cli: Cli) -> int:
    a = cli.args
    if a.wait > 0:
        try:
            cli.client.wait_ready(a.wait)
            status = "SERVING"
        except SegdRpcError:
            status = _status(cli, a.service)
    else:
        status = _status(cli, a.service)
    if cli.json:
        cli.emit_json({"status": status, "service": a.service})
    else:
        cli.line(status)
    return 0 if status == "SERVING" else 1


def _status(cli: Cli, service: str) -> str:
    try:
        return cli.client.health(service)
    except SegdRpcError as err:
        if err.code.name == "NOT_FOUND":
            return "SERVICE_UNKNOWN"
        if err.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            return "UNREACHABLE"
        raise
