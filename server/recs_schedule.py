"""The server's recommendation model rebuilds: one at startup, then every period.

A rebuild is built aside and swapped in (segd.recs), so lookups never wait for it; a
failed rebuild is logged and the old model stays.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from segd.server.logfmt import kv

log = logging.getLogger("segd.server")


def rebuild_once(engine: Any) -> bool:
    """One rebuild, logged; False when it failed (the previous model stays)."""
    t0 = time.perf_counter()
    try:
        stats = engine.rebuild_recommendations()
    except Exception:
        log.exception("recommendation rebuild failed; keeping the previous model")
        return False
    log.info(
        "recommendations rebuilt",
        extra=kv(
            items=stats["items"],
            related_pairs=stats["related_pairs"],
            bytes=stats["bytes"],
            seconds=round(time.perf_counter() - t0, 3),
        ),
    )
    return True


def recs_schedule_loop(engine: Any, period_s: float, stop: threading.Event) -> None:
    """Rebuild now, then every `period_s` seconds until `stop` is set."""
    while not stop.is_set():
        rebuild_once(engine)
        if stop.wait(period_s):
            return
