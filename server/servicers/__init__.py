"""One servicer per proto service; each method is a few lines over ``engine.Engine``."""

from __future__ import annotations

import time

import grpc


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` value for the engine (None: no deadline)."""
    remaining = context.time_remaining()
    # Without a client deadline gRPC reports a remaining time of centuries.
    if remaining is None or remaining > 10_000_000:
        return None
    return time.monotonic() + remaining
