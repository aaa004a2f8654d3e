"""Structured logs: one ``key=value`` line per record (logfmt), easy to grep and to parse.

    ts=2025-06-01T10:00:00.123Z level=info logger=segd.server msg=ready address=127.0.0.1:50051

Pass fields with ``log.info("ready", extra=kv(address=..., contacts=...))``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, TextIO


def kv(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the fields appended to the line."""
    return {"fields": fields}


def _quote(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return (
            '"'
            + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            + '"'
        )
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        fields: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            # The traceback follows on its own lines, once, at the boundary that caught it.
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send the ``segd`` loggers to ``stream`` (stderr) in logfmt."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("segd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
