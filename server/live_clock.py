"""The server's engine clock: ``Engine.advance`` from the wall clock every second.

Dynamic segments are exact at the engine clock (segd.live); the server moves that clock
to the current whole second once a second, so time-driven entries and exits ("viewed in
the last 7 days" running out) happen within a second of their moment, logged at the
moment itself. A clock that was driven ahead of the wall clock (tests, backfills) is
left alone until the wall clock catches up.

The steps come just after each whole second (``TICK_AFTER_S``), not a second after the
previous step (which drifted through the second): a saved segment asked on the server's
clock is then its live members within milliseconds of the second starting, and the
callers of those milliseconds wait for the step (``Engine._await_clock_step``) instead
of evaluating the segment in full.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from segd.server.logfmt import kv

log = logging.getLogger("segd.server")
TICK_AFTER_S = 0.001  # a step this long after the whole second it moves the clock to


def tick(engine: Any, now_s: float) -> bool:
    """Advance the engine clock to `now_s` if that moves it forward; True if it did."""
    clock = engine.clock
    if clock is not None and now_s <= clock:
        return False
    engine.advance(now_s)
    return True


def live_clock_loop(
    engine: Any,
    stop: threading.Event,
    tick_s: float = 1.0,
    clock: Callable[[], float] | None = None,
) -> None:
    """Until `stop`: advance the engine clock to the current whole second every
    `tick_s`, just after the whole seconds that are multiples of it. Errors are logged
    (a failed log write) and retried on the next tick."""
    wall = clock or time.time
    failing = False
    while True:
        try:
            tick(engine, float(math.floor(wall())))
            failing = False
        except Exception as exc:  # noqa: BLE001 - logged once, retried next second
            if not failing:
                log.error("engine clock not advanced", extra=kv(error=str(exc)))
            failing = True
        if stop.wait(next_tick_in(wall(), tick_s)):
            return


def next_tick_in(now: float, tick_s: float = 1.0) -> float:
    """Seconds from `now` to the next tick: ``TICK_AFTER_S`` after the next multiple of
    `tick_s` (a whole multiple when `now` is already within ``TICK_AFTER_S`` of one)."""
    return tick_s - (now - TICK_AFTER_S) % tick_s
