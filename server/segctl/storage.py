"""``segctl snapshot`` (a snapshot now, through the server) and ``segctl repair`` (offline:
cut a corrupt write-ahead log at its first bad record). See docs/storage.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from segd.server.segctl.console import Cli, CommandFailed, add_connection_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "snapshot",
        help="take a snapshot of the server's data directory now",
        description="Write a snapshot now (AdminService.Snapshot); the log segments it "
        "covers are then deleted. Fails on a server running --in-memory.",
    )
    add_connection_options(p)
    p.set_defaults(func=cmd_snapshot)
    p = sub.add_parser(
        "repair",
        help="cut a corrupt write-ahead log at its first bad record (server stopped)",
        description="When start-up stops on a corrupt log record, truncate the log "
        "there: that record and everything after it are dropped. Asks first; the "
        "server must be stopped (the data directory is locked while it runs).",
    )
    p.add_argument(
        "--data-dir",
        required=True,
        help="the data directory of the stopped server",
    )
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation"
    )
    p.set_defaults(func=cmd_repair)


def cmd_snapshot(cli: Cli) -> int:
    info = cli.client.snapshot()
    if cli.json:
        cli.emit_json(info)
    else:
        cli.kv_table(
            [
                ("path", info["path"]),
                ("wal_seq", str(info["wal_seq"])),
                ("bytes", f"{info['bytes']:,}"),
                ("seconds", f"{info['seconds']:.3f}"),
            ]
        )
    return 0


def cmd_repair(cli: Cli) -> int:
    from segd import durability
    from segd.errors import SegdError

    path = Path(cli.args.data_dir)
    if not (path / durability.WAL_DIR).is_dir():
        raise CommandFailed(f"{path} is not a segd data directory (no wal/)")
    try:
        lock = durability.DirLock(path)
    except SegdError as exc:
        raise CommandFailed(str(exc)) from None
    try:
        point = durability.find_repair_point(path)
        if point is None:
            cli.line(f"the log under {path} reads clean: nothing to repair")
            return 0
        cli.line(
            f"corrupt record: {point.file} at offset {point.offset} ({point.reason})"
        )
        cli.line(
            f"repair truncates {point.file.name} there and deletes "
            f"{len(point.dropped_files)} later segment(s): {point.dropped_bytes:,} "
            "bytes of log, and every write they held, are dropped"
        )
        if not cli.args.yes:
            cli.stdout.write("truncate the log? [y/N] ")
            cli.stdout.flush()
            try:
                answer = input()
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                cli.line("nothing changed")
                return 1
        durability.repair(point)
        cli.line("log truncated; the server can start")
        return 0
    finally:
        lock.release()
