"""``segctl serve``: run the server in the foreground (the flags of ``python -m segd.server``)."""

from __future__ import annotations

import argparse

from segd.server.main import add_serve_arguments, serve, settings_from_args
from segd.server.segctl.console import Cli


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the segd server",
        description="Run the segd gRPC server until SIGTERM / SIGINT. Logs one "
        "'msg=ready' line (address, port, contacts, events, load time) when it starts "
        "serving; health is NOT_SERVING until then.",
    )
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(cli: Cli) -> int:
    settings = settings_from_args(cli.args)
    if cli.args.print_config:
        cli.kv_table(settings.describe().items())
        return 0
    return serve(settings, cli.stderr)
