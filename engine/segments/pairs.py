"""Evaluate a compiled plan for (contact, moment) pairs.

Live segments ask two kinds of small questions that a whole-base run answers badly:
after a write, "do these few touched contacts match now?", and while the clock moves,
"does contact c match at the exact second s when one of its events leaves a window?".
Both are a list of pairs ``(cids[i], nows[i])``; the answer is one boolean per pair,
``cids[i]`` in ``Engine.segment(query, now=nows[i])``.

``evaluate_pairs`` is the entry point callers use. ``evaluate_pairs_reference`` is the
plain definition — one restricted ``plan.run`` per distinct moment — kept as the oracle
that the fast path is tested against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyroaring import BitMap

from segd.segments.context import Context
from segd.store import Store


def _validated(cids: Any, nows: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.ascontiguousarray(cids, dtype=np.uint32)
    t = np.ascontiguousarray(nows, dtype=np.float64)
    if c.ndim != 1 or t.shape != c.shape:
        raise ValueError(
            f"cids and nows must be 1-d arrays of one length (got {c.shape} and {t.shape})"
        )
    return c, t


def evaluate_pairs_reference(
    plan: Any, store: Store, cids: Any, nows: Any
) -> np.ndarray:
    """``out[i]`` is whether contact ``cids[i]`` matches `plan` at ``nows[i]`` (epoch
    seconds). Pairs may come in any order and repeat. The plan is re-bound to each
    distinct moment (``segd.live.rebind``) and left bound to an unspecified one: callers
    that run it afterwards re-bind it first."""
    from segd.live import rebind

    c, t = _validated(cids, nows)
    out = np.zeros(len(c), dtype=bool)
    if not len(c):
        return out
    order = np.argsort(t, kind="stable")
    ts = t[order]
    bounds = np.flatnonzero(np.diff(ts)) + 1
    for lo, hi in zip(
        np.r_[0, bounds].tolist(), np.r_[bounds, len(ts)].tolist(), strict=True
    ):
        now = float(ts[lo])
        rows = order[lo:hi]
        rebind(plan, now)
        got = plan.run(Context(store, now, None), BitMap(c[rows]))
        if got:
            members = np.asarray(got.to_array(), dtype=np.uint32)
            out[rows] = np.isin(c[rows], members)
    return out


def evaluate_pairs(plan: Any, store: Store, cids: Any, nows: Any) -> np.ndarray:
    """As ``evaluate_pairs_reference``, by the fastest path available."""
    return evaluate_pairs_reference(plan, store, cids, nows)
