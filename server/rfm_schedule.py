"""The server's daily RFM recomputation (``recompute_at`` of the RFM configuration, UTC).

A computation is due when the latest scheduled moment (today's ``recompute_at``, or
yesterday's before that time) is later than the current computation's ``as_of``. Nothing
runs before the first computation (made on demand: ``segctl rfm compute``), so a fresh
server does not score an empty base; after that, a server that was down at the scheduled
time catches up when it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from segd.server.logfmt import kv

log = logging.getLogger("segd.server")


def last_due(now_s: float, recompute_at: str | None) -> float | None:
    """The latest scheduled moment at or before `now_s` (None: no schedule)."""
    if not recompute_at:
        return None
    hour, minute = (int(x) for x in recompute_at.split(":"))
    now = datetime.fromtimestamp(now_s, UTC)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due > now:
        due -= timedelta(days=1)
    return due.timestamp()


def run_if_due(engine: Any, now_s: float) -> bool:
    """Recompute when the schedule says so; True if it did."""
    latest = engine.rfm_state.latest
    due = last_due(now_s, engine.rfm_state.config.recompute_at)
    if latest is None or due is None or latest.as_of >= due:
        return False
    t0 = datetime.now(UTC)
    engine.rfm_compute(as_of=float(int(now_s)), table=False)
    status = engine.rfm_status()
    log.info(
        "rfm recomputed",
        extra=kv(
            as_of=status.get("as_of"),
            scored=status.get("scored"),
            seconds=round((datetime.now(UTC) - t0).total_seconds(), 3),
        ),
    )
    return True


def rfm_schedule_loop(
    engine: Any,
    stop: threading.Event,
    tick_s: float = 30.0,
    clock: Callable[[], float] | None = None,
) -> None:
    """Until `stop`: every `tick_s`, recompute if due (errors are logged, not raised)."""
    now = clock or (lambda: datetime.now(UTC).timestamp())
    while True:
        try:
            run_if_due(engine, now())
        except Exception as exc:  # noqa: BLE001 (a failed run must not kill the loop)
            log.error("rfm recompute failed", extra=kv(error=str(exc)))
        if stop.wait(tick_s):
            return
