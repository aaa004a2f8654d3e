"""Transparent huge pages for the engine's memory (Linux, glibc).

Why: at 10M contacts a column is 10-500 MB, and a query reads it at random (a gather per
candidate contact, a contact's slot in an event log's index). On 4 KiB pages such a read
also misses the TLB, and the page walk is a second miss. numpy asks the kernel for huge
pages on its own big allocations, but glibc serves many of them from its heap, which it
does not advise. Which columns end up on huge pages then depends on the process's
allocation history: in one 10M process, 0-100% of each column did (BENCHMARKS.md,
session 12).

glibc 2.35 and later read the tunable ``glibc.malloc.hugetlb=1`` at process start. With
it, malloc advises transparent huge pages on all the memory it takes from the system.
A tunable cannot be set once the process runs. The server's entry points
(``python -m segd.server``, ``segctl serve``) therefore start themselves again, once,
with it set (``reexec_with_hugepages``). The side by side's segd worker is started with
it too.

Set ``SEGD_HUGEPAGES=0`` to keep the process as it was started. Nothing happens when the
kernel's THP mode is ``never``, when the C library is not glibc 2.35+, or when
``GLIBC_TUNABLES`` already names ``glibc.malloc.hugetlb``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "SEGD_HUGEPAGES"
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``); None when it has
    none (not Linux, or THP compiled out)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on; None for another C library."""
    try:
        got = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not got or not got.startswith("glibc "):
        return None
    try:
        major, minor = got.split()[1].split(".")[:2]
        return int(major), int(minor)
    except (IndexError, ValueError):
        return None


def _names_tunable(env: Mapping[str, str]) -> bool:
    return any(
        part.split("=", 1)[0] == TUNABLE
        for part in env.get("GLIBC_TUNABLES", "").split(":")
    )


def applicable(env: Mapping[str, str] | None = None) -> bool:
    """Whether a process started with `env` (default: this one's) would gain from the
    tunable: not opted out, not set already, glibc 2.35+, THP not ``never``."""
    env = os.environ if env is None else env
    if env.get(OPT_OUT, "1") == "0" or _names_tunable(env):
        return False
    version = glibc_version()
    if version is None or version < (2, 35):
        return False
    return thp_mode() in ("always", "madvise")


def with_hugepages(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) with ``glibc.malloc.hugetlb=1`` added
    to ``GLIBC_TUNABLES`` where ``applicable``, for a child process."""
    env = dict(os.environ if env is None else env)
    if applicable(env):
        old = env.get("GLIBC_TUNABLES", "")
        env["GLIBC_TUNABLES"] = f"{old}:{TUNABLE}=1" if old else f"{TUNABLE}=1"
    return env


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started with malloc's huge pages on (as far as its
    environment tells: the tunable is read once, at start)."""
    env = os.environ if env is None else env
    return any(
        part == f"{TUNABLE}=1" for part in env.get("GLIBC_TUNABLES", "").split(":")
    )


def reexec_with_hugepages() -> None:
    """Replace this process by the same command line with the tunable set, when
    ``applicable`` (same PID, same open files; the new process does not do it again).
    Call it first thing in a program's entry point, before threads or servers exist.
    Returns (and the program runs as started) when not applicable or when exec fails."""
    if not applicable():
        return
    env = with_hugepages()
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        return  # keep running without: huge pages change speed, never answers
