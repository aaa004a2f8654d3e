"""A machine-stall probe for load tests: a separate process that sleeps 1 ms at a time
and notes every wake-up that came much later than asked.

On a shared virtual machine the whole machine is sometimes held up for tens of
milliseconds at a time (measured on the 2-core VM of issue 15: ~30 ms every ~2.1 s for
minutes on end, seen alike by a bare gRPC server and by this probe, and then not at all);
a p99 latency measured then is the machine's. The probe runs in its own process, so the
client's GIL and the server's do not hold it up; on 2 busy cores the scheduler wakes a
sleeper within a few milliseconds, so a wake-up later than ``LATE_S`` means nothing
could run.

    python -m segd.bench.stall_probe --seconds 10      # prints one JSON record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence

TICK_S = 0.001
LATE_S = 0.015  # a wake-up this much after the previous one is a stall


def probe(seconds: float, tick_s: float = TICK_S, late_s: float = LATE_S) -> dict:
    """Sleep `tick_s` at a time for `seconds`; the stalls seen (wake-ups later than
    `late_s` after the previous one): how many, the longest and their sum, in ms."""
    stalls: list[float] = []
    end = time.perf_counter() + seconds
    prev = time.perf_counter()
    while prev < end:
        time.sleep(tick_s)
        now = time.perf_counter()
        if now - prev > late_s:
            stalls.append(now - prev)
        prev = now
    return summary(stalls, seconds)


def summary(stalls: Sequence[float], seconds: float) -> dict:
    return {
        "seconds": seconds,
        "stalls": len(stalls),
        "longest_ms": round(max(stalls, default=0.0) * 1e3, 1),
        "total_ms": round(sum(stalls) * 1e3, 1),
    }


class StallProbe:
    """The probe in a child process for the duration of a ``with`` block.

    ``result`` is the probe's record once the block has ended (None if the probe could
    not run: it is a diagnostic, never a reason for a benchmark to fail)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.result: dict | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> StallProbe:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "segd.bench.stall_probe",
                "--seconds",
                str(self.seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            out, _ = proc.communicate(timeout=self.seconds + 30)
            self.result = json.loads(out) if proc.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.communicate()
            self.result = None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segd.bench.stall_probe")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if not args.seconds > 0:
        p.error("--seconds must be > 0")
    print(json.dumps(probe(args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
