"""segd engine: the in-memory store, the segment language and the evaluator (Python layer).

The hot loops live in ``native/`` (Cython); this package validates input, orchestrates the
native kernels and owns the saved segments. See ``docs/engine-api.md``.
"""

from __future__ import annotations

from segd._version import __version__

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
