"""What every segctl command shares: output streams, --json, the client, failures."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from segd.server.client import DEFAULT_ADDRESS, SegdClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or unreadable input: one line on stderr, exit 2."""


class CommandFailed(Exception):
    """The command ran but did not fully succeed (e.g. rejected rows): exit 1."""


def _console(stream: TextIO) -> Console:
    tty = hasattr(stream, "isatty") and stream.isatty()
    # Off a terminal rich assumes 80 columns and would wrap tables; pipes get long lines.
    return Console(
        file=stream, width=None if tty else 200, highlight=False, soft_wrap=False
    )


@dataclass
class Cli:
    """One invocation: parsed args, the two streams and a lazily opened client."""

    args: argparse.Namespace
    stdout: TextIO
    stderr: TextIO
    out: Console = field(init=False)
    err: Console = field(init=False)
    _client: SegdClient | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.out = _console(self.stdout)
        self.err = _console(self.stderr)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def option(self, name: str, env: str, default: Any = None) -> Any:
        value = getattr(self.args, name, None)
        return value if value is not None else os.environ.get(env, default)

    @property
    def client(self) -> SegdClient:
        if self._client is None:
            timeout = self.option("timeout", "SEGD_TIMEOUT", 30.0)
            self._client = SegdClient(
                self.option("address", "SEGD_ADDRESS", DEFAULT_ADDRESS),
                token=self.option("token", "SEGD_TOKEN"),
                tls_ca=self.option("tls_ca", "SEGD_TLS_CA"),
                timeout=float(timeout) if timeout else None,
                retries=2,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------ output

    def emit_json(self, data: Any) -> None:
        self.stdout.write(
            json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
        )

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def warn(self, warnings: Iterable[dict[str, str]]) -> None:
        """The query's warnings (unknown catalog values), one line each on stderr."""
        for w in warnings:
            self.stderr.write(f"segctl: warning: {w['message']}\n")

    def note(self, text: str) -> None:
        """A human remark on stderr (kept out of pipes)."""
        if not self.json:
            self.stderr.write(text + "\n")

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        right: Sequence[str] = (),
        title: str | None = None,
    ) -> None:
        t = Table(title=title, box=None, header_style="bold", pad_edge=False)
        for c in columns:
            t.add_column(c, justify="right" if c in right else "left", overflow="fold")
        for row in rows:
            # Text(): cell values are data, never rich markup ("[a-z_]" must print as is).
            t.add_row(*(Text("" if v is None else str(v)) for v in row))
        self.out.print(t)

    def kv_table(self, pairs: Iterable[tuple[str, Any]]) -> None:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in pairs:
            t.add_row(Text(k), Text("" if v is None else str(v)))
        self.out.print(t)


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """Options every client command takes, before or after the verb."""
    s = argparse.SUPPRESS
    p.add_argument(
        "--address",
        default=s,
        help=f"server HOST:PORT (env SEGD_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    p.add_argument("--token", default=s, help="bearer token (env SEGD_TOKEN)")
    p.add_argument(
        "--tls-ca",
        default=s,
        help="PEM CA file to trust; turns TLS on (env SEGD_TLS_CA)",
    )
    p.add_argument(
        "--timeout",
        type=non_negative_float,
        default=s,
        help="deadline per call in seconds, 0 = none (env SEGD_TIMEOUT; default 30)",
    )
    p.add_argument(
        "--json", action="store_true", default=s, help="machine-readable JSON on stdout"
    )


def positive_int(text: str) -> int:
    """argparse type of sizes (--size, --chunk-size): a usage error (exit 2) unless >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type of limits where 0 means "all" (--limit): exit 2 unless >= 0."""
    return _int_at_least(text, 0)


def non_negative_float(text: str) -> float:
    """argparse type of durations (--timeout, --wait): exit 2 unless a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def epoch_seconds(text: str) -> float:
    """argparse type of --now: epoch seconds (1735689600) or an ISO-8601 instant
    (2025-01-01, 2025-01-01T10:00:00Z; without an offset: UTC)."""
    from datetime import UTC, datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected epoch seconds or an ISO-8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def add_now_option(p: argparse.ArgumentParser) -> None:
    """--now for every command that evaluates a segment."""
    p.add_argument(
        "--now",
        type=epoch_seconds,
        default=None,
        metavar="TIME",
        help="evaluate as of this instant: epoch seconds or ISO-8601, e.g. "
        "2025-01-01T00:00:00Z (default: the server clock)",
    )


def human_int(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def stderr_is_tty(cli: Cli) -> bool:
    return (
        hasattr(cli.stderr, "isatty")
        and cli.stderr.isatty()
        and cli.stderr is sys.stderr
    )
