"""segctl entry point: ``main(argv, stdout, stderr) -> int`` (tests call it in-process).

Exit codes: 0 ok, 1 the request failed (the server said no, or could not be reached),
2 usage error (bad flags, unreadable input file). Errors are one line on stderr; set
``SEGCTL_DEBUG=1`` for a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import NoReturn, TextIO

from segd.server.client import SegdRpcError
from segd.server.segctl import (
    admin,
    contacts,
    data,
    recs,
    rfm,
    segments,
    serve,
    storage,
)
from segd.server.segctl.console import (
    EXIT_FAILED,
    EXIT_USAGE,
    Cli,
    CommandFailed,
    UsageError,
    add_connection_options,
)

HINTS = {
    "UNAVAILABLE": "is the server running? (segctl serve, or --address / SEGD_ADDRESS)",
    "UNAUTHENTICATED": "pass --token or set SEGD_TOKEN",
}


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse writing to the streams given to ``main`` and never calling sys.exit."""

    streams: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)

    def _print_message(self, message: str, file: object | None = None) -> None:
        if message:
            out, err = Parser.streams
            (err if file is sys.stderr else out).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            Parser.streams[1].write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    p = Parser(
        prog="segctl",
        description="Admin CLI of segd, the in-memory customer segment engine.",
        epilog="Connection options (--address, --token, --tls-ca, --timeout, --json) "
        "work before or after the command. Exit codes: 0 ok, 1 failed, 2 usage.",
    )
    add_connection_options(p)
    sub = p.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    data.register(sub)
    segments.register(sub)
    contacts.register(sub)
    rfm.register(sub)
    recs.register(sub)
    admin.register(sub)
    serve.register(sub)
    storage.register(sub)
    sub.add_parser(
        "bench", help="run the benchmark suite (forwards its arguments)", add_help=False
    )
    return p


def _bench(argv: list[str], stderr: TextIO) -> int:
    """Forward ``segctl bench ...`` to ``segd.bench.__main__.main(argv)`` when it exists."""
    try:
        module = importlib.import_module("segd.bench.__main__")
    except ModuleNotFoundError as exc:
        if exc.name not in ("segd.bench", "segd.bench.__main__"):
            raise
        stderr.write(
            "segctl: error: the benchmark suite is not installed (bench/__main__.py)\n"
        )
        return EXIT_USAGE
    try:
        return int(module.main(argv, prog="segctl bench") or 0)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _rpc_error_line(err: SegdRpcError) -> str:
    line = f"segctl: error: {err.code.name}: {err.message}"
    if err.error_id:
        line += f" (error id {err.error_id})"
    hint = HINTS.get(err.code.name)
    return f"{line}\n  hint: {hint}" if hint else line


def main(
    argv: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if argv[:1] == ["bench"]:
        return _bench(argv[1:], stderr)
    Parser.streams = (stdout, stderr)
    try:
        args = build_parser().parse_args(argv)
    except _Exit as e:
        return e.code
    cli = Cli(args, stdout, stderr)
    try:
        return int(args.func(cli) or 0)
    except SegdRpcError as err:
        stderr.write(_rpc_error_line(err) + "\n")
        return EXIT_FAILED
    except UsageError as err:
        stderr.write(f"segctl: error: {err}\n")
        return EXIT_USAGE
    except CommandFailed as err:
        stderr.write(f"segctl: error: {err}\n")
        return EXIT_FAILED
    except BrokenPipeError:  # `segctl ... | head`: the reader is gone, that is fine
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        stderr.write("segctl: interrupted\n")
        return 130
    except (
        Exception
    ) as err:  # a bug or an environment problem: one line, not a traceback
        if os.environ.get("SEGCTL_DEBUG"):
            traceback.print_exc(file=stderr)
        stderr.write(
            f"segctl: error: {type(err).__name__}: {err} (SEGCTL_DEBUG=1 for details)\n"
        )
        return EXIT_FAILED
    finally:
        cli.close()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run() -> None:
    if "serve" in sys.argv[1:] and "--print-config" not in sys.argv:
        from segd.hugepages import reexec_with_hugepages

        reexec_with_hugepages()  # once, before any thread (segd.hugepages)
    sys.exit(main())


if __name__ == "__main__":
    run()
