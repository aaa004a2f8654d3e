"""Operator + value -> the shapes the kernels take: value intervals and code masks.

Attribute conditions, catalog filters inside event conditions, and aggregate conditions all
compare a column with a value. Compiling ``op``/``value`` once, here, keeps the semantics
(NULL never matches, ``between`` inclusive, ``!=`` excludes NULL) identical everywhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd.errors import InvalidQuery, quoted
from segd.timeutil import parse_instant_s

INF = float("inf")
LIST_OPS = {"in", "not_in", "between", "contains_any", "contains_all"}


def _number(value, kind: str, where: str) -> float:
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidQuery.at(where, f"expected true or false, got {value!r}")
        return float(value)
    if kind == "timestamp":
        if not isinstance(value, str):
            raise InvalidQuery.at(
                where, f"expected an ISO-8601 date such as '2025-01-31', got {value!r}"
            )
        return parse_instant_s(value, where) * 1000.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidQuery.at(where, f"expected a number, got {value!r}")
    return float(value)


def numeric_intervals(
    kind: str, op: str, value, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Closed float64 intervals whose union is the set of values satisfying ``x op value``.

    Works for int, float, bool and timestamp (ms) columns: strict bounds use the next
    representable float, which for integers stored as floats is exact.
    """
    down = lambda x: np.nextafter(x, -INF)  # noqa: E731
    up = lambda x: np.nextafter(x, INF)  # noqa: E731
    if op in ("in", "not_in"):
        points = sorted(
            {_number(v, kind, f"{where}[{i}]") for i, v in enumerate(value)}
        )
        if op == "in":
            return np.array(points), np.array(points)
        lo, hi, prev = [], [], -INF
        for p in points:
            if prev == -INF or up(prev) <= down(p):
                lo.append(-INF if prev == -INF else up(prev))
                hi.append(down(p))
            prev = p
        lo.append(up(prev) if prev != -INF else -INF)
        hi.append(INF)
        return np.array(lo), np.array(hi)
    if op == "between":
        a, b = (_number(v, kind, f"{where}[{i}]") for i, v in enumerate(value))
        return np.array([a]), np.array([b])
    v = _number(value, kind, where)
    table = {
        "=": ([v], [v]),
        "!=": ([-INF, up(v)], [down(v), INF]),
        "<": ([-INF], [down(v)]),
        "<=": ([-INF], [v]),
        ">": ([up(v)], [INF]),
        ">=": ([v], [INF]),
    }
    if op not in table:
        raise InvalidQuery.at(
            where, f"operator {op!r} does not apply to a {kind} value"
        )
    lo, hi = table[op]
    return np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)


def integer_range(op: str, value, where: str) -> list[tuple[float, float]]:
    """``x op value`` over integers x as inclusive integer ranges (for days and years)."""
    lo, hi = numeric_intervals("float", op, value, where)
    out = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=False):
        a2 = -INF if a == -INF else float(np.ceil(a))
        b2 = INF if b == INF else float(np.floor(b))
        if a2 <= b2:
            out.append((a2, b2))
    return out


def in_intervals(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Vectorised ``values in union of [lo, hi]`` (bool array); NaN matches nothing."""
    hit = np.zeros(len(values), dtype=bool)
    for a, b in zip(lo.tolist(), hi.tolist(), strict=False):
        hit |= (values >= a) & (values <= b)
    return hit


def _strings(value, where: str) -> list[str]:
    """``value`` (a string or a list of them) as a list; anything else is InvalidQuery."""
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
        if not isinstance(v, str):
            path = f"{where}[{i}]" if isinstance(value, list) else where
            raise InvalidQuery.at(
                path,
                f"expected a string (the field holds text), got "
                f"{type(v).__name__} {quoted(v)}",
            )
    return values


check_strings = _strings


# dictionary_mask results kept: (id(dictionary), op, value, subtree) -> (dictionary,
# its size then, read-only mask). Every query compiles its text conditions again, and a
# pyarrow compute over the dictionary per condition was a fixed cost of ~0.1 ms each.
MAX_CACHED_DICTIONARY_MASKS = 256
_masks: OrderedDict[tuple, tuple[object, int, np.ndarray]] = OrderedDict()
_masks_lock = threading.Lock()


def dictionary_mask(
    dictionary, op: str, value, where: str, *, subtree: bool = False
) -> np.ndarray:
    """uint8 mask over a dictionary's codes: which stored strings satisfy ``s op value``
    (read-only).

    With `subtree` (category paths), ``=``/``in`` also take every descendant path
    (``Pets`` covers ``Pets/Cats/Dry food``) and ``!=``/``not_in`` exclude them.

    Memoised per (dictionary object, op, value, subtree) while the dictionary keeps its
    size: dictionaries only grow (a code keeps its string), so an unchanged size means
    an unchanged answer, and a grown one computes again. The cache holds a reference to
    each dictionary it keys, so an ``id`` is never reused while its entry lives.
    """
    try:
        frozen = tuple(value) if isinstance(value, list) else value
        key = (id(dictionary), op, frozen, subtree)
        hash(key)
    except TypeError:  # not a valid value: the computation below says what is wrong
        return _dictionary_mask(dictionary, op, value, where, subtree=subtree)
    size = len(dictionary)
    with _masks_lock:
        hit = _masks.get(key)
        if hit is not None and hit[0] is dictionary and hit[1] == size:
            _masks.move_to_end(key)
            return hit[2]
    mask = _dictionary_mask(dictionary, op, value, where, subtree=subtree)
    mask.flags.writeable = False
    with _masks_lock:
        _masks[key] = (dictionary, size, mask)
        while len(_masks) > MAX_CACHED_DICTIONARY_MASKS:
            _masks.popitem(last=False)
    return mask


def _dictionary_mask(
    dictionary, op: str, value, where: str, *, subtree: bool = False
) -> np.ndarray:
    n = len(dictionary)
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    strings = dictionary.to_arrow()
    if op in ("=", "!=", "in", "not_in"):
        targets = _strings(value, where)
        if subtree:
            hit = np.zeros(n, dtype=bool)
            for t in targets:
                hit |= np.asarray(pc.equal(strings, t))
                hit |= np.asarray(pc.starts_with(strings, t + "/"))
        else:
            hit = np.asarray(
                pc.is_in(strings, value_set=pa.array(targets, pa.large_string()))
            )
        if op in ("!=", "not_in"):
            hit = ~hit
        return hit.astype(np.uint8)
    if op == "prefix":
        return np.asarray(pc.starts_with(strings, _strings(value, where)[0])).astype(
            np.uint8
        )
    if op == "contains":
        pattern = _strings(value, where)[0]
        return np.asarray(pc.match_substring(strings, pattern)).astype(np.uint8)
    raise InvalidQuery.at(where, f"operator {op!r} does not apply to a text value")
