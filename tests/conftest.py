"""Hypothesis profiles for every test directory (property, differential, unit).

``dev`` (30 examples) keeps the local loop fast; ``ci`` (150) digs deeper. Chosen by
``HYPOTHESIS_PROFILE``, else ``ci`` when ``CI=true``, else ``dev``. No deadline: timing
on shared CI runners is noise, not a property.
"""

from __future__ import annotations

import os

from hypothesis import settings

# Before anything imports grpc (segd/__init__.py does the same): snapshot writers are
# forked, and gRPC's fork handlers corrupt such children (see segd.snapshot).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=150, deadline=None)


def _profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI", "").lower() == "true" else "dev"


settings.load_profile(_profile())
