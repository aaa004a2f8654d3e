"""segd engine: the in-memory store, the segment language and the evaluator (Python layer).

The hot loops live in ``native/`` (Cython); this package validates input, orchestrates the
native kernels and owns the saved segments. See ``docs/engine-api.md``.
"""

from __future__ import annotations

import os as _os
import sys as _sys

from segd._version import __version__

# Snapshots are written by a forked child (segd.snapshot). gRPC's fork support (its C
# core's at-fork handlers, on by default) left such a child with a corrupt heap when gRPC
# threads were busy at the fork (a segfault in 1 snapshot out of 3 under a live server).
# The child never uses gRPC, so segd turns that support off unless the user chose. gRPC
# reads the variable when it is imported: if it was imported before segd without it,
# snapshots are written in-process instead (_GRPC_FORK_SAFE, see segd.snapshot).
_FALSE = ("0", "false", "no", "off")
if "grpc" in _sys.modules:
    _GRPC_FORK_SAFE = _os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() in _FALSE
else:
    _os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    _GRPC_FORK_SAFE = _os.environ["GRPC_ENABLE_FORK_SUPPORT"].lower() in _FALSE

__all__ = ["Engine", "parse", "format", "__version__"]


def __getattr__(
    name: str,
):  # lazy: `import segd.errors` must not build the whole engine
    if name == "Engine":
        from segd.core import Engine

        return Engine
    if name in ("parse", "format"):
        from segd.segments import dsl

        return getattr(dsl, name)
    raise AttributeError(f"module 'segd' has no attribute {name!r}")
