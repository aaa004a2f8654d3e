"""RFM analysis, the retention matrix with named segments, and transitions between cells.

Definitions (issue 11, docs/rfm.md), for a moment ``as_of`` and a window of ``window_days``:

- orders are distinct ``order_id`` values of ``order`` events (a line without an order id
  is an order of its own), revenue is the sum of ``amount``; the window is
  ``[as_of - window_days * 86400, as_of)``;
- ``recency_days = floor((as_of - last order) / 86400)``, ``frequency`` = orders in the
  window, ``monetary`` = revenue in the window (rounded to 1e-6, so that equal spending is
  equal whatever order its lines were summed in);
- scores 1..scale over the contacts with an order in the window (n of them): quantile F / M
  ``1 + floor(scale * L / n)`` (L: scored contacts with a strictly smaller value), R the same
  with G (strictly larger recency_days); thresholds: ``1 + #(cuts <= v)`` for F / M and
  ``scale - #(cuts <= recency_days)`` for R;
- the named segment uses the whole history before ``as_of``: the first rule whose inclusive
  ranges hold ``(orders, days)`` wins; rule lists may differ per value of one attribute.

How it is computed: one pass over the order log into per-contact accumulators
(``segd.native.rfm.rollup``), then passes over the buyers only: the quantile cut points
by selection (a radix select: each score is then ``1 + #(cuts compared with v)``, so
equal values get equal scores by construction), and one pass that scores, codes,
classifies and counts every buyer through lookup tables (``score_buyers``). Transitions
compare two computations over their buyers (``transitions``). No Python loop per contact.

State: ``RfmState`` holds the configuration, the latest computation, the transition history
and the daily counts. Every change goes through ``apply_config`` / ``apply_computed``
(pure functions of the state and their argument), so a write-ahead log can record the
argument and replay it; ``to_bytes`` / ``from_bytes`` serialise the whole state (msgpack).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from segd.errors import FailedPrecondition, InvalidInput, Violation
from segd.native import bitset
from segd.native import rfm as kernels
from segd.timeutil import DAY_S, MAX_EVENT_S

NO_CODE = 0xFFFFFFFF
NO_SEGMENT = 255
MAX_SEGMENTS = 254
METHODS = ("quantile", "thresholds")
CODE_RE = re.compile(r"R(\d+)F(\d+)M(\d+)")
INF_DAYS = 2**62
TABLE_COLUMNS = (
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "r",
    "f",
    "m",
    "code",
    "segment",
)
TRANSITION_COLUMNS = (
    "customer_id",
    "at",
    "from_code",
    "to_code",
    "from_segment",
    "to_segment",
)


class RfmRulesError(InvalidInput):
    """A rule list that leaves contacts without a segment or has rules that never match.

    ``gaps`` and ``unreachable`` are lists of dicts (which rule set, which region / rule);
    ``overlaps`` (allowed: the first match wins) is reported alongside.
    """

    def __init__(
        self,
        message: str,
        violations: list[Violation],
        gaps: list[dict],
        overlaps: list[dict],
        unreachable: list[dict],
    ) -> None:
        super().__init__(message, violations)
        self.gaps = gaps
        self.overlaps = overlaps
        self.unreachable = unreachable


class RfmNotComputed(FailedPrecondition):
    """An RFM condition or matrix was asked for before any ``rfm_compute``."""

    def __init__(
        self,
        message: str = "no RFM computation yet: run rfm_compute "
        "(segctl rfm compute) first",
    ) -> None:
        super().__init__(message)


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One row of the retention matrix: inclusive ranges of orders and days (None = open)."""

    segment: str
    orders: tuple[int, int | None]
    days: tuple[int, int | None]

    def to_dict(self) -> dict:
        return {
            "segment": self.segment,
            "orders": list(self.orders),
            "days": list(self.days),
        }

    def describe(self) -> str:
        return (
            f"{self.segment!r} (orders {_span(self.orders)}, days {_span(self.days)})"
        )


def _span(r: tuple[int, int | None]) -> str:
    lo, hi = r
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("Newcomers", (1, 1), (0, 40)),
    Rule("Drifting", (1, 1), (41, 75)),
    Rule("Promising", (1, 2), (0, 51)),
    Rule("Drifting", (1, 2), (52, 75)),
    Rule("Sleeping", (1, 2), (76, None)),
    Rule("Loyal", (3, None), (0, 51)),
    Rule("At risk", (3, None), (52, 112)),
    Rule("Lost", (3, None), (113, None)),
)


@dataclass(frozen=True)
class RfmConfig:
    """What a shop sets: window, scale, method, thresholds, rules, per-group rules, schedule."""

    window_days: int = 365
    scale: int = 5
    method: str = "quantile"
    thresholds: dict[str, tuple[float, ...]] | None = None
    rules: tuple[Rule, ...] = DEFAULT_RULES
    group_by: str | None = None
    group_rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    # daily recomputation by the server, UTC HH:MM (None: on demand only)
    recompute_at: str | None = "03:00"

    def to_dict(self) -> dict:
        return {
            "window_days": self.window_days,
            "scale": self.scale,
            "method": self.method,
            "thresholds": None
            if self.thresholds is None
            else {k: list(v) for k, v in self.thresholds.items()},
            "rules": [r.to_dict() for r in self.rules],
            "group_by": self.group_by,
            "group_rules": {
                g: [r.to_dict() for r in rules] for g, rules in self.group_rules.items()
            },
            "recompute_at": self.recompute_at,
        }

    def segment_names(self) -> list[str]:
        """Every segment name of every rule set, in first-appearance order."""
        names: list[str] = []
        for rules in (self.rules, *self.group_rules.values()):
            for r in rules:
                if r.segment not in names:
                    names.append(r.segment)
        return names


def _int(value: Any, where: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInput.at(where, f"expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InvalidInput.at(where, f"expected an integer {bound}, got {value}")
    return value


def check_scale(scale: Any, where: str = "scale") -> int:
    return _int(scale, where, 2, 10)


def check_window(window_days: Any, where: str = "window_days") -> int:
    return _int(window_days, where, 1, 36_500)


def check_method(method: Any, where: str = "method") -> str:
    if method not in METHODS:
        raise InvalidInput.at(
            where, f"expected one of {', '.join(METHODS)}, got {method!r}"
        )
    return method


def check_thresholds(
    thresholds: Any, scale: int, where: str = "thresholds"
) -> dict[str, tuple[float, ...]]:
    """``{"r": [...], "f": [...], "m": [...]}``: scale - 1 ascending cut points each."""
    if not isinstance(thresholds, dict):
        raise InvalidInput.at(
            where,
            f"expected {{'r': [...], 'f': [...], 'm': [...]}} with {scale - 1} "
            f"ascending cut points each, got {thresholds!r}",
        )
    out: dict[str, tuple[float, ...]] = {}
    keys = {str(k).lower(): v for k, v in thresholds.items()}
    for key in keys:
        if key not in ("r", "f", "m"):
            raise InvalidInput.at(
                f"{where}.{key}", "unknown letter (expected r, f and m)"
            )
    for letter in ("r", "f", "m"):
        here = f"{where}.{letter}"
        cuts = keys.get(letter)
        if not isinstance(cuts, list | tuple):
            raise InvalidInput.at(
                here, f"expected a list of {scale - 1} cut points, got {cuts!r}"
            )
        if len(cuts) != scale - 1:
            raise InvalidInput.at(
                here,
                f"expected scale - 1 = {scale - 1} cut points, got {len(cuts)}",
            )
        values: list[int | float] = []
        for i, c in enumerate(cuts):
            if isinstance(c, bool) or not isinstance(c, int | float):
                raise InvalidInput.at(f"{here}[{i}]", f"expected a number, got {c!r}")
            if not math.isfinite(c):
                raise InvalidInput.at(
                    f"{here}[{i}]", f"expected a finite number, got {c!r}"
                )
            if values and c < values[-1]:
                raise InvalidInput.at(
                    f"{here}[{i}]",
                    f"cut points must be ascending, got {c!r} after {values[-1]!r}",
                )
            values.append(c)
        out[letter] = tuple(values)
    return out


def _range(value: Any, where: str, lo_min: int) -> tuple[int, int | None]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidInput.at(
            where, f"expected [min, max] (max null = open), got {value!r}"
        )
    lo = _int(value[0], f"{where}[0]", lo_min)
    hi = None if value[1] is None else _int(value[1], f"{where}[1]", lo_min)
    if hi is not None and hi < lo:
        raise InvalidInput.at(where, f"empty range: min {lo} > max {hi}")
    return lo, hi


def parse_rules(value: Any, where: str) -> tuple[Rule, ...]:
    """A rule list from dicts ``{"segment", "orders": [lo, hi], "days": [lo, hi]}``."""
    if isinstance(value, list | tuple) and all(isinstance(r, Rule) for r in value):
        rules = tuple(value)
    else:
        if not isinstance(value, list | tuple) or not value:
            raise InvalidInput.at(
                where, f"expected a non-empty list of rules, got {value!r}"
            )
        out = []
        for i, r in enumerate(value):
            here = f"{where}[{i}]"
            if not isinstance(r, dict):
                raise InvalidInput.at(here, f"expected a rule object, got {r!r}")
            for k in r:
                if k not in ("segment", "orders", "days"):
                    raise InvalidInput.at(
                        f"{here}.{k}", "unknown key (expected segment, orders, days)"
                    )
            for k in ("segment", "orders", "days"):
                if k not in r:
                    raise InvalidInput.at(f"{here}.{k}", "missing")
            out.append(
                Rule(
                    r["segment"],
                    _range(r["orders"], f"{here}.orders", 1),
                    _range(r["days"], f"{here}.days", 0),
                )
            )
        rules = tuple(out)
    for i, r in enumerate(rules):
        name = r.segment
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput.at(
                f"{where}[{i}].segment", f"expected a segment name, got {name!r}"
            )
        if CODE_RE.fullmatch(name):
            raise InvalidInput.at(
                f"{where}[{i}].segment",
                f"{name!r} looks like an RFM code; segment names must not",
            )
    return rules


def check_rules(rules: Sequence[Rule]) -> dict[str, list[dict]]:
    """Gaps, overlaps and unreachable rules of one rule list (first match wins).

    The (orders >= 1, days >= 0) plane is cut at every rule bound into cells; each cell
    goes to its first matching rule. A cell no rule covers is a gap; a later rule of
    another segment that also covers a cell is an overlap (it loses there); a rule that
    wins no cell can never match.
    """
    o_cuts = sorted({1} | {b for r in rules for b in _bounds(r.orders)})
    d_cuts = sorted({0} | {b for r in rules for b in _bounds(r.days)})
    o_cells, d_cells = _cells(o_cuts), _cells(d_cuts)
    won = [False] * len(rules)
    gaps: list[dict] = []
    overlaps: dict[tuple[int, int], list] = {}
    for oc in o_cells:
        for dc in d_cells:
            hits = [
                i
                for i, r in enumerate(rules)
                if _covers(r.orders, oc) and _covers(r.days, dc)
            ]
            if not hits:
                gaps.append({"orders": _span(oc), "days": _span(dc)})
                continue
            won[hits[0]] = True
            for j in hits[1:]:
                if rules[j].segment != rules[hits[0]].segment:
                    overlaps.setdefault((hits[0], j), []).append(
                        f"orders {_span(oc)}, days {_span(dc)}"
                    )
    return {
        "gaps": gaps,
        "overlaps": [
            {
                "rule": i,
                "shadows": j,
                "where": "; ".join(cells),
                "message": f"rule {i} {rules[i].describe()} wins over rule {j} "
                f"{rules[j].describe()} at {'; '.join(cells)}",
            }
            for (i, j), cells in sorted(overlaps.items())
        ],
        "unreachable": [
            {
                "rule": i,
                "message": f"rule {i} {rules[i].describe()} can never match: "
                "earlier rules cover all of it",
            }
            for i, w in enumerate(won)
            if not w
        ],
    }


def _bounds(r: tuple[int, int | None]) -> list[int]:
    return [r[0]] if r[1] is None else [r[0], r[1] + 1]


def _cells(cuts: list[int]) -> list[tuple[int, int | None]]:
    """Consecutive cells [cut_i, cut_{i+1} - 1], the last one open."""
    return [(a, b - 1) for a, b in zip(cuts, cuts[1:], strict=False)] + [
        (cuts[-1], None)
    ]


def _covers(rule: tuple[int, int | None], cell: tuple[int, int | None]) -> bool:
    lo, hi = rule
    a, b = cell
    if a < lo:
        return False
    if hi is None:
        return True
    return b is not None and b <= hi


def parse_config(value: dict | RfmConfig, base: RfmConfig | None = None) -> RfmConfig:
    """A full or partial configuration dict over ``base`` (the current one), validated.

    Raises ``InvalidInput`` (a field) or ``RfmRulesError`` (gaps / unreachable rules).
    """
    base = base or RfmConfig()
    if isinstance(value, RfmConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise InvalidInput.at("config", f"expected an object, got {value!r}")
    known = set(RfmConfig().to_dict())
    for key in value:
        if key not in known:
            raise InvalidInput.at(
                str(key),
                f"unknown setting (expected one of {', '.join(sorted(known))})",
            )
    cfg = base
    if "window_days" in value:
        cfg = replace(cfg, window_days=check_window(value["window_days"]))
    if "scale" in value:
        cfg = replace(cfg, scale=check_scale(value["scale"]))
    if "method" in value:
        cfg = replace(cfg, method=check_method(value["method"]))
    if "thresholds" in value:
        t = value["thresholds"]
        cfg = replace(
            cfg, thresholds=None if t is None else check_thresholds(t, cfg.scale)
        )
    elif cfg.thresholds is not None and "scale" in value:
        cfg = replace(cfg, thresholds=check_thresholds(cfg.thresholds, cfg.scale))
    if cfg.method == "thresholds" and cfg.thresholds is None:
        raise InvalidInput.at(
            "thresholds", "method 'thresholds' needs thresholds {'r','f','m'}"
        )
    if "rules" in value:
        cfg = replace(cfg, rules=parse_rules(value["rules"], "rules"))
    if "group_by" in value:
        g = value["group_by"]
        if g is not None and (not isinstance(g, str) or not g):
            raise InvalidInput.at("group_by", f"expected an attribute name, got {g!r}")
        cfg = replace(cfg, group_by=g)
    if "group_rules" in value:
        gr = value["group_rules"] or {}
        if not isinstance(gr, dict):
            raise InvalidInput.at(
                "group_rules", f"expected {{value: [rules]}}, got {gr!r}"
            )
        cfg = replace(
            cfg,
            group_rules={
                str(k): parse_rules(v, f"group_rules[{k!r}]") for k, v in gr.items()
            },
        )
    if cfg.group_rules and not cfg.group_by:
        raise InvalidInput.at(
            "group_by",
            "group_rules need group_by (the attribute whose value picks them)",
        )
    if "recompute_at" in value:
        t = value["recompute_at"]
        if t is not None and (
            not isinstance(t, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", t)
        ):
            raise InvalidInput.at(
                "recompute_at", f"expected a UTC time HH:MM such as '03:00', got {t!r}"
            )
        cfg = replace(cfg, recompute_at=t)
    if len(cfg.segment_names()) > MAX_SEGMENTS:
        raise InvalidInput.at("rules", f"more than {MAX_SEGMENTS} segment names")
    validate_rule_sets(cfg)
    return cfg


def rules_report(cfg: RfmConfig) -> dict[str, list[dict]]:
    """``check_rules`` of every rule set, each finding tagged with its set."""
    out: dict[str, list[dict]] = {"gaps": [], "overlaps": [], "unreachable": []}
    sets = [("rules", cfg.rules)] + [
        (f"group_rules[{g!r}]", rules) for g, rules in cfg.group_rules.items()
    ]
    for where, rules in sets:
        for kind, items in check_rules(rules).items():
            out[kind].extend({"rule_set": where, **item} for item in items)
    return out


def validate_rule_sets(cfg: RfmConfig) -> dict[str, list[dict]]:
    report = rules_report(cfg)
    violations = [
        Violation(
            g["rule_set"],
            f"gap: no rule covers orders {g['orders']}, days {g['days']}",
        )
        for g in report["gaps"]
    ] + [
        Violation(f"{u['rule_set']}[{u['rule']}]", u["message"])
        for u in report["unreachable"]
    ]
    if violations:
        raise RfmRulesError(
            f"{len(violations)} problem(s) in the RFM rules: "
            + "; ".join(str(v) for v in violations[:5]),
            violations,
            report["gaps"],
            report["overlaps"],
            report["unreachable"],
        )
    return report


# -- codes -------------------------------------------------------------------------------


def pack_code(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """uint16 ``r << 8 | f << 4 | m`` (0: no code)."""
    return (
        (r.astype(np.uint16) << np.uint16(8))
        | (f.astype(np.uint16) << np.uint16(4))
        | m.astype(np.uint16)
    )


def code_text(packed: int) -> str | None:
    if packed == 0:
        return None
    return f"R{packed >> 8}F{(packed >> 4) & 15}M{packed & 15}"


def parse_code(text: str) -> int | None:
    """Packed code of ``R4F5M3`` (None if the text is not a code)."""
    m = CODE_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    r, f, mm = (int(x) for x in m.groups())
    if not (1 <= r <= 10 and 1 <= f <= 10 and 1 <= mm <= 10):
        return None
    return (r << 8) | (f << 4) | mm


_CODE_STRINGS = pa.array([code_text(i) for i in range(1 << 12)], pa.string())


def codes_to_arrow(packed: np.ndarray) -> pa.Array:
    return pc.take(_CODE_STRINGS, pa.array(packed.astype(np.int32)))


# -- one computation ---------------------------------------------------------------------


@dataclass
class RfmResult:
    """Per-contact results of one computation (arrays indexed by cid; ``n`` contacts).

    ``segment`` holds ids into ``segments`` (255: none). ``r``/``f``/``m`` are 0 where a
    contact has no order in the window; ``recency_days`` is -1 there.
    """

    as_of: float
    window_days: int
    scale: int
    method: str
    segments: list[str]
    recency_days: np.ndarray  # int32
    frequency: np.ndarray  # uint32
    monetary: np.ndarray  # float64
    r: np.ndarray  # uint8
    f: np.ndarray
    m: np.ndarray
    segment: np.ndarray  # uint8
    orders_all: np.ndarray  # uint32 (orders before as_of)
    _bitmaps: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n(self) -> int:
        return len(self.r)

    @property
    def code(self) -> np.ndarray:
        """Packed codes per contact (computed once; a benign race computes it twice)."""
        hit = self._bitmaps.get("_code")
        if hit is None:
            hit = self._bitmaps["_code"] = pack_code(self.r, self.f, self.m)
        return hit

    def scored(self) -> int:
        return int(np.count_nonzero(self.r))

    def histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """(contacts per packed code [4096], contacts per segment id [256]), computed
        once: the matrix and the daily counts read these, not the per-contact arrays."""
        with self._lock:
            hit = self._bitmaps.get("_hist")
            if hit is None:
                hit = self._bitmaps["_hist"] = (
                    kernels.small_histogram(self.code, 1 << 12),
                    kernels.small_histogram(self.segment, 256),
                )
            return hit

    def _values(self, kind: str) -> tuple[np.ndarray, int]:
        """The per-contact array of ``kind`` (r, f, m, code, segment) and its "none"."""
        if kind not in ("r", "f", "m", "code", "segment"):
            raise ValueError(f"unknown RFM field {kind!r}")
        values = self.code if kind == "code" else getattr(self, kind)
        return values, (NO_SEGMENT if kind == "segment" else 0)

    def present_keys(self, kind: str) -> list[int]:
        """The values of ``kind`` that at least one contact has (ascending, "none" left
        out), from a histogram: no bitmap is built."""
        key = f"_present_{kind}"
        hit = self._bitmaps.get(key)
        if hit is None:
            values, none = self._values(kind)
            if kind in ("code", "segment"):  # already counted for the matrix / history
                code_hist, seg_hist = self.histograms()
                counts = (code_hist if kind == "code" else seg_hist).copy()
            else:
                counts = np.bincount(values, minlength=none + 1)
            counts[none] = 0
            hit = self._bitmaps[key] = np.flatnonzero(counts).tolist()
        return list(hit)

    def members_of(self, kind: str, keys: list[int]) -> BitMap:
        """Contacts whose ``kind`` is one of ``keys``: one pass over the buyers' values
        (or every contact's, for a result built without them), cached per key set. A condition asks for a few keys, so this avoids
        building the bitmap of every value (``bitmaps``) on the first query after each
        ``rfm_compute``."""
        wanted = tuple(sorted(set(keys)))
        cache_key = ("members", kind, wanted)
        with self._lock:
            hit = self._bitmaps.get(cache_key)
        if hit is None:
            values, none = self._values(kind)
            top = int(np.iinfo(values.dtype).max)
            wanted_arr = np.asarray(
                [k for k in wanted if k != none and 0 <= k <= top], dtype=values.dtype
            )
            if len(wanted_arr) == 0:
                hit = BitMap()
            else:
                # A computation's buyers (kept by ``compute`` and ``compact``) are the
                # only contacts with a value other than "none": a gather of theirs
                # (~1 in 5 contacts, ascending), not a pass over everyone.
                cids = self._bitmaps.get("_buyers")
                sub = values if cids is None else values[cids]
                if len(wanted_arr) == 1:
                    mask = sub == wanted_arr[0]
                else:
                    lut = np.zeros(int(sub.max(initial=0)) + 1, dtype=bool)
                    lut[wanted_arr[wanted_arr < len(lut)]] = True
                    mask = lut[sub]
                got = (
                    np.flatnonzero(mask).astype(np.uint32)
                    if cids is None
                    else np.ascontiguousarray(cids[mask])
                )
                hit = bitset.cids_to_bitmap(got)
            with self._lock:
                self._bitmaps[cache_key] = hit
        return hit

    def bitmaps(self, kind: str) -> dict[Any, BitMap]:
        """Members per value of ``kind`` (r, f, m, code, segment), built on first use.

        Keys: scores (int) for r/f/m, packed codes for code, segment ids for segment.
        """
        with self._lock:
            hit = self._bitmaps.get(kind)
            if hit is None:
                values = {
                    "r": self.r,
                    "f": self.f,
                    "m": self.m,
                    "segment": self.segment,
                    "code": self.code if kind == "code" else None,
                }[kind]
                assert values is not None  # "code" is only looked up for kind code
                none = NO_SEGMENT if kind == "segment" else 0
                hit = self._bitmaps[kind] = _group_bitmaps(values, none)
            return hit

    def buyers(self) -> np.ndarray:
        """Ascending cids of the contacts with a segment or a score (uint32): everyone
        else has neither, so transitions compare only these (cached; ``compute`` sets
        it from its buyers)."""
        hit = self._bitmaps.get("_buyers")
        if hit is None:
            hit = self._bitmaps["_buyers"] = np.flatnonzero(
                (self.segment != NO_SEGMENT) | (self.r > 0)
            ).astype(np.uint32)
        return hit

    def compact(self) -> RfmResult:
        """What is kept once the computation is current (and what a log record holds):
        scores and segments. The window values (recency, frequency, monetary) only feed
        the table ``rfm_compute`` returns (read-only placeholders here); ``orders_all``
        becomes 1 for contacts with a segment (every contact with an order has one:
        rules have no gaps). The cached codes, histograms and buyers carry over."""
        out = RfmResult(
            as_of=self.as_of,
            window_days=self.window_days,
            scale=self.scale,
            method=self.method,
            segments=list(self.segments),
            recency_days=_placeholder(np.int32(-1), self.n),
            frequency=_placeholder(np.uint32(0), self.n),
            monetary=_placeholder(np.float64(0.0), self.n),
            r=self.r,
            f=self.f,
            m=self.m,
            segment=self.segment,
            orders_all=(self.segment != NO_SEGMENT).view(np.uint8),
        )
        for key in ("_code", "_hist", "_buyers"):
            if key in self._bitmaps:
                out._bitmaps[key] = self._bitmaps[key]
        return out

    def to_record(self) -> dict:
        """A msgpack-able dict of the compact form: only contacts with a segment or a
        score are listed (cid, r, f, m, segment as raw little-endian bytes)."""
        cids = self.buyers().astype("<u4")
        return {
            "as_of": self.as_of,
            "window_days": self.window_days,
            "scale": self.scale,
            "method": self.method,
            "segments": list(self.segments),
            "n": self.n,
            "cid": cids.tobytes(),
            **{k: getattr(self, k)[cids].tobytes() for k in ("r", "f", "m", "segment")},
        }

    @classmethod
    def from_record(cls, rec: dict) -> RfmResult:
        n = int(rec["n"])
        cids = np.frombuffer(rec["cid"], dtype="<u4").astype(np.int64)
        arrays = {}
        for k in ("r", "f", "m"):
            arrays[k] = np.zeros(n, dtype=np.uint8)
            arrays[k][cids] = np.frombuffer(rec[k], dtype=np.uint8)
        segment = np.full(n, NO_SEGMENT, dtype=np.uint8)
        segment[cids] = np.frombuffer(rec["segment"], dtype=np.uint8)
        return cls(
            as_of=float(rec["as_of"]),
            window_days=int(rec["window_days"]),
            scale=int(rec["scale"]),
            method=str(rec["method"]),
            segments=list(rec["segments"]),
            recency_days=_placeholder(np.int32(-1), n),
            frequency=_placeholder(np.uint32(0), n),
            monetary=_placeholder(np.float64(0.0), n),
            r=arrays["r"],
            f=arrays["f"],
            m=arrays["m"],
            segment=segment,
            orders_all=(segment != NO_SEGMENT).view(np.uint8),
        )


def _placeholder(value: np.generic, n: int) -> np.ndarray:
    """A read-only array of ``n`` copies of ``value`` that takes no memory (a window
    column a compact result does not keep; ``_merge_rfm`` copies before writing)."""
    return np.broadcast_to(value, (n,))


def _pack_array(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.str, "data": np.ascontiguousarray(a).tobytes()}


def _unpack_array(d: dict) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).copy()


def _group_bitmaps(values: np.ndarray, none: int) -> dict[int, BitMap]:
    """{value: BitMap of cids with it} for a small-valued array (a counting sort)."""
    if len(values) == 0:
        return {}
    order = np.argsort(values, kind="stable").astype(np.uint32)
    sorted_vals = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    out = {}
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        v = int(sorted_vals[a])
        if v != none:
            out[v] = BitMap(order[a:b])  # stable sort: ids ascending
    return out


def window_bounds(as_of: float, window_days: int) -> tuple[int, int, float]:
    """Whole-second row bounds: window rows are ``lo <= ts < hi``; the window start."""
    start = as_of - window_days * DAY_S
    clamp = lambda x: min(max(math.ceil(x), 0), MAX_EVENT_S + 1)  # noqa: E731
    return clamp(start), clamp(as_of), start


def _quantile_cuts(values: np.ndarray, scale: int, larger: bool) -> np.ndarray:
    """Cut points such that ``1 + #(cuts < v)`` (or ``> v`` with ``larger``) equals
    ``1 + floor(scale * L / n)`` (L = #values < v, or #values > v).

    ``floor(scale * L / n) >= k - 1`` iff ``L >= t_k = ceil((k - 1) n / scale)``, and at
    least t values are below v iff the t-th smallest is below v. The order statistics
    come from a radix selection (``kernels.select_positions``), not a sort.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    pos = _cut_positions(n, scale, larger)
    return kernels.select_positions(np.ascontiguousarray(values, np.float64), pos)


def _cut_positions(n: int, scale: int, larger: bool) -> list[int]:
    ts = [((k - 1) * n + scale - 1) // scale for k in range(2, scale + 1)]
    return [n - t for t in ts] if larger else [t - 1 for t in ts]


def _quantile_cuts_int(values: np.ndarray, scale: int, larger: bool) -> np.ndarray:
    """``_quantile_cuts`` for small non-negative integers (recency days, order counts):
    the k-th smallest value read off a histogram, O(n + max)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    top = int(values.max())
    if values.dtype == np.uint32 and top < 1 << 16:  # no cast to intp first
        cum = np.cumsum(kernels.small_histogram(values, top + 1))
    else:
        cum = np.cumsum(np.bincount(values))
    # the value at 0-based sorted position p is the first v with cum[v] > p
    pos = np.asarray(_cut_positions(n, scale, larger))
    return np.searchsorted(cum, pos, side="right").astype(np.float64)


class Workspace:
    """Buffers ``compute`` keeps between calls (one per ``RfmState``).

    ``acc``: the per-contact accumulators (``kernels.ACC_BYTES`` each), and ``bits``, a
    bitset of the buyers, both all zero between calls (``take_buyers`` zeroes each
    buyer's once copied out), so a computation costs
    O(order rows + buyers) instead of a pass, and on a fresh buffer a page fault per
    4 KiB, over every contact. ``owner``/``state``: each order id's first contact and
    whether it was seen in the window, stamped with a generation that changes per call,
    so they are never reset either. ``clean`` is False while a computation is under way:
    one that did not finish leaves ``acc`` to be zeroed by the next.
    """

    def __init__(self) -> None:
        self.acc = np.zeros(0, dtype=np.uint8)
        self.bits = np.zeros(0, dtype=np.uint64)
        self.owner = np.zeros(0, dtype=np.uint32)
        self.state = np.zeros(0, dtype=np.uint32)
        self.generation = 0
        self.clean = True
        self.lock = threading.Lock()
        # aggregate_buyers' outputs (room for every contact; only the buyers' part is
        # ever written, so only that much is resident): buyers, their records, the
        # positions of the mixed ones and their bitset, the quantile cuts' values.
        self.buyers = np.zeros(0, dtype=np.uint32)
        self.dense = np.zeros(0, dtype=kernels.acc_dtype())
        self.mixed_pos = np.zeros(0, dtype=np.uint32)
        self.mixed = np.zeros(0, dtype=np.uint64)
        self.days = np.zeros(0, dtype=np.uint32)
        self.freq = np.zeros(0, dtype=np.uint32)
        self.mon = np.zeros(0, dtype=np.float64)

    def ready(self, n_contacts: int, n_codes: int) -> Workspace:
        """Room for ``n_contacts`` and ``n_codes`` (grown by a quarter beyond the need,
        so a base that grows by a few contacts does not reallocate each time), all
        accumulators zero, and a new generation."""
        acc_bytes = max(n_contacts, 1) * kernels.ACC_BYTES
        if not self.clean:
            self.acc.fill(0)
            self.bits.fill(0)
            self.mixed.fill(0)
            self.clean = True
        if len(self.acc) < acc_bytes:
            self.acc = np.zeros(acc_bytes + acc_bytes // 4, dtype=np.uint8)
        words = (n_contacts + 63) // 64
        if len(self.bits) < words:
            self.bits = np.zeros(words + words // 4, dtype=np.uint64)
        if len(self.state) < n_codes:
            size = n_codes + n_codes // 4
            self.owner = np.empty(size, dtype=np.uint32)
            self.state = np.zeros(size, dtype=np.uint32)
            self.generation = 0
        self.generation += 1
        if self.generation > kernels.MAX_GENERATION:
            self.state.fill(0)
            self.generation = 1
        return self

    def ready_buyers(self, n_contacts: int) -> None:
        """Room for ``aggregate_buyers``' outputs over ``n_contacts`` (the mixed bitset
        all zero: ``patch_mixed`` clears what it set, ``ready`` after a failure)."""
        if len(self.buyers) < n_contacts:
            size = max(n_contacts + n_contacts // 4, 1)
            self.buyers = np.empty(size, dtype=np.uint32)
            self.dense = np.empty(size, dtype=kernels.acc_dtype())
            self.mixed_pos = np.empty(size, dtype=np.uint32)
            self.days = np.empty(size, dtype=np.uint32)
            self.freq = np.empty(size, dtype=np.uint32)
            self.mon = np.empty(size, dtype=np.float64)
        words = (n_contacts + 63) // 64
        if len(self.mixed) < max(words, 1):
            self.mixed = np.zeros(max(words + words // 4, 1), dtype=np.uint64)


def compute(
    store: Any,
    as_of: float,
    window_days: int,
    scale: int,
    method: str,
    thresholds: dict[str, tuple[float, ...]] | None,
    config: RfmConfig,
    workspace: Workspace | None = None,
    *,
    values: bool = True,
    use_aggregates: bool = True,
) -> RfmResult:
    """Compute RFM and named segments for every contact (see module docstring).

    The buyers' window totals come first from the per-contact aggregates kept on
    ingest (``aggregate_buyers``: a buyer whose orders all lie in the window), and only
    the other buyers are rolled up from the order rows (``rollup`` restricted to them,
    ``patch_mixed``; every buyer so when ``use_aggregates`` is False or many rows lie
    after `as_of`). Then passes over the buyers only (ascending): their
    totals out as dense records, their window values for the quantile
    cuts (``buyer_values``), then scores, codes, named segments and histograms
    (``score_buyers``, through lookup tables). Only the per-contact outputs are sized by
    the base. ``workspace`` keeps the accumulators and the order id state between calls
    (a fresh one when None or busy in another thread).
    ``values=False`` leaves the window values out of the result (``recency_days``,
    ``frequency``, ``monetary``, ``orders_all`` are then read-only placeholders): what
    ``rfm_compute(table=False)`` and the matrix need.
    """
    ws = workspace if workspace is not None else Workspace()
    if not ws.lock.acquire(blocking=False):
        ws = Workspace()  # another thread is computing: a fresh one of our own
        ws.lock.acquire()
    try:
        return _compute(
            store, as_of, window_days, scale, method, thresholds, config, ws, values,
            use_aggregates,
        )  # fmt: skip
    finally:
        ws.lock.release()


def _buyer_records(
    store: Any, as_of: float, window_days: int, ws: Workspace, use_aggregates: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The buyers (ascending cids), their records (``acc_dtype()``, revenue rounded)
    and the scored ones' recency days, frequency and monetary value (the inputs of the
    quantile cuts, in no particular order). The records and values may be views of
    ``ws``'s buffers: valid while the caller holds ``ws.lock``."""
    n = store.n_contacts
    lo_s, hi_s, start = window_bounds(as_of, window_days)
    log = store.logs.get("order")
    if log is None or log.n == 0 or n == 0:
        none = np.zeros(0, dtype=np.uint32)
        return none, np.zeros(0, kernels.acc_dtype()), none, none, np.zeros(0)
    n_codes = len(store.dim_maps["order_id"])
    r0, r1 = log.window(lo_s, hi_s)
    amount = log.amount
    codes = log.dim("order_id")
    agg = store.aggregates
    ws.ready(n, n_codes)
    ws.clean = False

    def roll(want: np.ndarray | None = None, first_row: int = 0) -> tuple:
        n_rolled = kernels.rollup(
            log.cid, log.ts, amount, codes, r0, r1, n, n_codes, ws.acc, ws.owner,
            ws.state, ws.generation, ws.bits, want, first_row,
        )  # fmt: skip
        return kernels.take_buyers(ws.acc, n, ws.bits, n_rolled)

    # Orders at or after as_of (a look at the past) make their contacts mixed and the
    # rollup start at row 0: with many, the plain rollup of every contact is cheaper.
    many_after = log.n - r1 > ROLLUP_ALL_AFTER * log.n
    if (
        not use_aggregates
        or many_after
        or min(len(getattr(agg, a)) for a in _AGG_ARRAYS) < n
    ):
        buyers, dense = roll()
        days = np.empty(len(buyers), dtype=np.uint32)
        freq = np.empty(len(buyers), dtype=np.uint32)
        mon = np.empty(len(buyers), dtype=np.float64)
        k = kernels.buyer_values(dense, float(as_of), float(start), days, freq, mon)
        ws.clean = True
        return buyers, dense, days[:k], freq[:k], mon[:k]
    # Buyers whose orders all lie in the window are answered by the per-contact
    # aggregates kept on ingest; only the others (mixed) are rolled up from the rows:
    # from the window start when none has an order at or after as_of, else from row 0.
    ws.ready_buyers(n)
    nb, n_mixed, n_after, k = kernels.aggregate_buyers(
        agg.orders_count, agg.first_order_s, agg.last_order_s, agg.revenue, n, lo_s,
        hi_s, float(as_of), ws.buyers, ws.dense, ws.mixed_pos, ws.mixed, ws.days,
        ws.freq, ws.mon,
    )  # fmt: skip
    buyers, dense = ws.buyers[:nb].copy(), ws.dense[:nb]
    if n_mixed:
        rolled, rolled_dense = roll(ws.mixed, 0 if n_after else r0)
        k = kernels.patch_mixed(
            dense, buyers, ws.mixed_pos[:n_mixed], agg.orders_count[:n],
            agg.last_order_s[:n],
            rolled, rolled_dense, ws.mixed, float(as_of), float(start), k, ws.days,
            ws.freq, ws.mon,
        )  # fmt: skip
    ws.clean = True
    return buyers, dense, ws.days[:k], ws.freq[:k], ws.mon[:k]


_AGG_ARRAYS = ("orders_count", "first_order_s", "last_order_s", "revenue")
# Share of the order rows at or after as_of beyond which ``compute`` rolls every
# contact up from the rows instead of starting from the aggregates (measured at 1M with
# as_of 100 days back, 27% of the rows after it: 42 ms vs 37 ms).
ROLLUP_ALL_AFTER = 0.125


def _compute(
    store: Any,
    as_of: float,
    window_days: int,
    scale: int,
    method: str,
    thresholds: dict[str, tuple[float, ...]] | None,
    config: RfmConfig,
    ws: Workspace,
    values: bool,
    use_aggregates: bool,
) -> RfmResult:
    n = store.n_contacts
    start = window_bounds(as_of, window_days)[2]
    rule_table = _rule_table(store, config, n)
    buyers, dense, days, freq, mon = _buyer_records(
        store, as_of, window_days, ws, use_aggregates
    )
    k = len(days)
    if method == "quantile":
        r_cuts = _quantile_cuts_int(days[:k], scale, larger=True)
        f_cuts = _quantile_cuts_int(freq[:k], scale, larger=False)
        m_cuts = _quantile_cuts(mon[:k], scale, larger=False)
        r_mode, fm_mode = 1, 0
    else:
        assert thresholds is not None
        r_cuts, f_cuts, m_cuts = (
            np.asarray(thresholds[key], dtype=np.float64) for key in ("r", "f", "m")
        )
        r_mode, fm_mode = 3, 2
    # r, f, m, segment and code of every contact carved from one zeroed block (one
    # large allocation: huge pages, and zero pages the buyers never touch).
    block = np.zeros(max(n, 1) * 6, dtype=np.uint8)
    r, f, m, segment = (block[i * n : (i + 1) * n] for i in range(4))
    segment.fill(NO_SEGMENT)
    code = block[4 * n : 6 * n].view(np.uint16)
    code_hist = np.zeros(1 << 12, dtype=np.int64)
    seg_hist = np.zeros(256, dtype=np.int64)
    if values:
        recency = np.full(n, -1, dtype=np.int32)
        frequency = np.zeros(n, dtype=np.uint32)
        monetary = np.zeros(n, dtype=np.float64)
        orders_all = np.zeros(n, dtype=np.uint32)
        value_arrays: tuple | None = (recency, frequency, monetary, orders_all)
    else:
        recency = _placeholder(np.int32(-1), n)
        frequency = _placeholder(np.uint32(0), n)
        monetary = _placeholder(np.float64(0.0), n)
        value_arrays = None
    kernels.score_buyers(
        dense,
        buyers,
        float(as_of),
        float(start),
        np.ascontiguousarray(r_cuts, dtype=np.float64),
        np.ascontiguousarray(f_cuts, dtype=np.float64),
        np.ascontiguousarray(m_cuts, dtype=np.float64),
        r_mode,
        fm_mode,
        scale,
        _score_lut(r_cuts, r_mode, scale, window_days + 1),
        _score_lut(f_cuts, fm_mode, scale, int(freq[:k].max(initial=0)) + 1),
        rule_table.lut,
        rule_table.rules,
        rule_table.rule_segment,
        rule_table.rule_count,
        rule_table.group_of_code,
        rule_table.group_codes,
        rule_table.grouped,
        r,
        f,
        m,
        segment,
        code,
        code_hist,
        seg_hist,
        value_arrays,
    )
    if not values:
        # every contact with an order before as_of has a segment (rules have no gaps)
        orders_all = (segment != NO_SEGMENT).view(np.uint8)
    result = RfmResult(
        as_of=float(as_of),
        window_days=window_days,
        scale=scale,
        method=method,
        segments=rule_table.names,
        recency_days=recency,
        frequency=frequency,  # 0 without an order in the window
        monetary=monetary,
        r=r,
        f=f,
        m=m,
        segment=segment,
        orders_all=orders_all,
    )
    result._bitmaps["_code"] = code
    result._bitmaps["_hist"] = (code_hist, seg_hist)
    # Every buyer has a segment (rules have no gaps; only buyers get one), so the
    # histogram says so without a pass; keep the definition exact otherwise.
    if n - int(seg_hist[NO_SEGMENT]) != len(buyers):
        kept = (segment[buyers] != NO_SEGMENT) | (r[buyers] > 0)
        buyers = buyers[kept]
    result._bitmaps["_buyers"] = buyers
    return result


SEGMENT_LUT_MAX = 1 << 20  # entries; rules with wider finite bounds are walked instead


def _score_lut(cuts: np.ndarray, mode: int, scale: int, size: int) -> np.ndarray:
    """``lut[v]`` = the score of the integer value v (the comparisons of
    ``score_buyers``' modes, made once per value instead of once per contact)."""
    v = np.arange(min(size, 1 << 16), dtype=np.float64)[:, None]
    c = np.asarray(cuts, dtype=np.float64)[None, :]
    if mode == 0:
        hits = (c < v).sum(axis=1)
    elif mode == 1:
        hits = (c > v).sum(axis=1)
    else:
        hits = (c <= v).sum(axis=1)
    return (scale - hits if mode == 3 else 1 + hits).astype(np.uint8)


def _segment_lut(sets: list[tuple[Rule, ...]], names: list[str]) -> np.ndarray:
    """``lut[s, min(orders, O), min(days, D)]`` = the segment id of rule set s (first
    match wins; 255: none). O and D are one past the largest finite bound of any rule,
    where every rule's answer stops changing. Empty (shape (0, 1, 1)) when it would
    exceed ``SEGMENT_LUT_MAX`` entries."""
    o_top = max(b for rules in sets for r in rules for b in _bounds(r.orders))
    d_top = max(b for rules in sets for r in rules for b in _bounds(r.days))
    if len(sets) * (o_top + 1) * (d_top + 1) > SEGMENT_LUT_MAX:
        return np.zeros((0, 1, 1), dtype=np.uint8)
    lut = np.full((len(sets), o_top + 1, d_top + 1), NO_SEGMENT, dtype=np.uint8)
    for s, rules in enumerate(sets):
        for rule in reversed(rules):  # earlier rules paint over later ones
            o_hi = None if rule.orders[1] is None else rule.orders[1] + 1
            d_hi = None if rule.days[1] is None else rule.days[1] + 1
            lut[s, rule.orders[0] : o_hi, rule.days[0] : d_hi] = names.index(
                rule.segment
            )
    return lut


@dataclass
class _RuleTable:
    names: list[str]
    lut: np.ndarray  # _segment_lut
    rules: np.ndarray  # [set, rule, (orders_lo, orders_hi, days_lo, days_hi)]
    rule_segment: np.ndarray  # [set, rule] -> segment id
    rule_count: np.ndarray  # rules per set
    group_of_code: np.ndarray  # group attribute code -> rule set
    group_codes: np.ndarray  # per contact
    grouped: bool


def _rule_table(store: Any, config: RfmConfig, n: int) -> _RuleTable:
    """The configured rule sets as the arrays ``score_buyers`` reads."""
    names = config.segment_names()
    sets = [config.rules, *config.group_rules.values()]
    width = max(len(s) for s in sets)
    table = np.zeros((len(sets), width, 4), dtype=np.int64)
    seg_ids = np.full((len(sets), width), NO_SEGMENT, dtype=np.uint8)
    counts = np.zeros(len(sets), dtype=np.int64)
    for s, rules in enumerate(sets):
        counts[s] = len(rules)
        for j, rule in enumerate(rules):
            table[s, j] = (
                rule.orders[0],
                INF_DAYS if rule.orders[1] is None else rule.orders[1],
                rule.days[0],
                INF_DAYS if rule.days[1] is None else rule.days[1],
            )
            seg_ids[s, j] = names.index(rule.segment)
    grouped = False
    group_of_code = np.zeros(0, dtype=np.uint8)
    group_codes = np.zeros(1, dtype=np.uint32)
    if config.group_by and config.group_rules:
        col = store.contacts.column(config.group_by)
        codes = getattr(col, "codes", None)
        dictionary = getattr(col, "dictionary", None)
        if codes is not None and dictionary is not None:
            group_of_code = np.zeros(len(dictionary), dtype=np.uint8)
            for s, value in enumerate(config.group_rules, start=1):
                code = dictionary.lookup_one(value)
                if code >= 0:
                    group_of_code[code] = s
            group_codes = np.ascontiguousarray(codes[:n], np.uint32)
            grouped = len(group_codes) >= n
    return _RuleTable(
        names,
        _segment_lut(sets, names),
        table,
        seg_ids,
        counts,
        group_of_code,
        group_codes,
        grouped,
    )


def result_table(result: RfmResult, contacts: Any) -> pa.Table:
    """The issue's table: one row per contact with an order before as_of, cid order."""
    cids = np.flatnonzero(result.orders_all > 0).astype(np.uint32)
    scored = result.r[cids] > 0
    null = ~scored
    if len(cids):
        ids = contacts.ids.decode(cids)
    else:
        ids = pa.array([], pa.string())
    seg_names = pa.array(list(result.segments) + [None], pa.string())
    seg_idx = result.segment[cids].astype(np.int32)
    seg_idx[seg_idx == NO_SEGMENT] = len(result.segments)
    code = pack_code(result.r[cids], result.f[cids], result.m[cids])
    code_arr = codes_to_arrow(code)

    def masked(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, typ, mask=null)

    return pa.table(
        {
            "customer_id": pa.array(ids).cast(pa.string()),
            "recency_days": masked(result.recency_days[cids], pa.int32()),
            "frequency": masked(result.frequency[cids].astype(np.int64), pa.int64()),
            "monetary": masked(result.monetary[cids], pa.float64()),
            "r": masked(result.r[cids].astype(np.int8), pa.int8()),
            "f": masked(result.f[cids].astype(np.int8), pa.int8()),
            "m": masked(result.m[cids].astype(np.int8), pa.int8()),
            "code": code_arr,
            "segment": pc.take(seg_names, pa.array(seg_idx)),
        }
    )


def matrix_table(result: RfmResult, by: str) -> pa.Table:
    """Counts per cell (``rf``, ``rfm`` or ``segment``) with the share of the base.

    Shares are of the contacts with a row: scored contacts for rf / rfm, contacts with an
    order before as_of for segment. Read off the computation's histograms (4096 codes,
    256 segments), so the cost does not depend on the number of contacts.
    """
    code_hist, seg_hist = result.histograms()
    if by == "segment":
        counts = seg_hist[: len(result.segments)]
        total = int(counts.sum())
        return pa.table(
            {
                "segment": pa.array(result.segments, pa.string()),
                "count": pa.array(counts.astype(np.int64)),
                "share": pa.array(counts / total if total else np.zeros(len(counts))),
            }
        )
    if by not in ("rf", "rfm"):
        raise InvalidInput.at("by", f"expected rf, rfm or segment, got {by!r}")
    s = result.scale
    cube = code_hist.reshape(16, 16, 16)[1 : s + 1, 1 : s + 1, 1 : s + 1]
    r, f, m = np.meshgrid(*(np.arange(1, s + 1),) * 3, indexing="ij")
    if by == "rf":
        counts = cube.sum(axis=2).ravel()
        total = int(counts.sum())
        return pa.table(
            {
                "r": pa.array(r[:, :, 0].ravel().astype(np.int8)),
                "f": pa.array(f[:, :, 0].ravel().astype(np.int8)),
                "count": pa.array(counts.astype(np.int64)),
                "share": pa.array(counts / total if total else np.zeros(len(counts))),
            }
        )
    counts = cube.ravel()
    total = int(counts.sum())
    return pa.table(
        {
            "r": pa.array(r.ravel().astype(np.int8)),
            "f": pa.array(f.ravel().astype(np.int8)),
            "m": pa.array(m.ravel().astype(np.int8)),
            "count": pa.array(counts.astype(np.int64)),
            "share": pa.array(counts / total if total else np.zeros(len(counts))),
        }
    )


# -- the state: config, latest computation, transitions, daily counts --------------------


TransitionListener = Callable[[pa.Table], None]


_TRANSITION_DTYPES = {
    "cid": np.uint32,
    "at": np.float64,
    "from_code": np.uint16,
    "to_code": np.uint16,
    "from_seg": np.uint8,
    "to_seg": np.uint8,
}


class _Transitions:
    """Columnar transition history (append-only, in ``at`` order).

    Each computation appends a chunk; the columns are concatenated once when next read
    (and kept as one chunk), so recording costs O(new rows), not O(history).
    """

    COLUMNS = tuple(_TRANSITION_DTYPES)

    def __init__(self) -> None:
        self._chunks: list[dict[str, np.ndarray]] = []
        self._n = 0
        self._joined: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._n

    def extend(self, rows: dict[str, np.ndarray]) -> None:
        k = len(rows["cid"])
        if k == 0:
            return
        self._chunks.append(
            {c: np.asarray(rows[c], t) for c, t in _TRANSITION_DTYPES.items()}
        )
        self._n += k
        self._joined = None

    def column(self, name: str) -> np.ndarray:
        if self._joined is None:
            if not self._chunks:
                joined = {c: np.zeros(0, t) for c, t in _TRANSITION_DTYPES.items()}
            elif len(self._chunks) == 1:
                joined = self._chunks[0]
            else:
                joined = {
                    c: np.concatenate([ch[c] for ch in self._chunks])
                    for c in _TRANSITION_DTYPES
                }
            self._chunks = [joined] if self._n else []
            self._joined = joined
        return self._joined[name]

    cid = property(lambda self: self.column("cid"))
    at = property(lambda self: self.column("at"))
    from_code = property(lambda self: self.column("from_code"))
    to_code = property(lambda self: self.column("to_code"))
    from_seg = property(lambda self: self.column("from_seg"))
    to_seg = property(lambda self: self.column("to_seg"))


class RfmState:
    """Everything RFM keeps (see module docstring); mutated only by ``apply_*``."""

    def __init__(self) -> None:
        self.config = RfmConfig()
        self.latest: RfmResult | None = None
        # Segment names ever used, append-only: transition rows keep ids into it.
        self.segment_names: list[str] = []
        self.transitions = _Transitions()
        # "YYYY-MM-DD" -> {"as_of", "segments": {name: n}, "codes": {code: n}}
        self.daily: dict[str, dict] = {}
        self.listeners: list[TransitionListener] = []
        # compute()'s buffers, kept between computations (not state: never serialised)
        self.workspace = Workspace()

    # -- mutations (each a pure function of the state and its argument) -----------------
    def apply_config(self, config: RfmConfig) -> None:
        self.config = config

    def apply_computed(self, result: RfmResult) -> dict[str, np.ndarray]:
        """Make ``result`` current: record transitions against the previous computation
        and the day's counts. Returns the new transition rows (columns as in
        ``_Transitions``)."""
        # Map the computation's segment ids onto the state's stable ids (255 stays 255).
        lut = np.full(256, NO_SEGMENT, dtype=np.uint8)
        lut[: len(result.segments)] = [self._segment_id(s) for s in result.segments]
        prev = self.latest
        prev_lut = np.full(256, NO_SEGMENT, dtype=np.uint8)
        if prev is not None:
            prev_lut[: len(prev.segments)] = [
                self._segment_id(s) for s in prev.segments
            ]
            old = (prev.buyers(), prev.code, prev.segment)
        else:
            old = (
                np.zeros(0, np.uint32),
                np.zeros(0, np.uint16),
                np.zeros(0, np.uint8),
            )
        # Only contacts with a code or a segment in either computation can change.
        cid, from_code, to_code, from_seg, to_seg = kernels.transitions(
            old[0],
            result.buyers(),
            old[1],
            old[2],
            prev_lut,
            result.code,
            result.segment,
            lut,
        )
        rows: dict[str, np.ndarray] = {
            "cid": cid,
            "at": np.full(len(cid), result.as_of, dtype=np.float64),
            "from_code": from_code,
            "to_code": to_code,
            "from_seg": from_seg,
            "to_seg": to_seg,
        }
        self.transitions.extend(rows)
        self.latest = result
        day = datetime.fromtimestamp(result.as_of, UTC).strftime("%Y-%m-%d")
        code_counts, seg_counts = result.histograms()
        self.daily[day] = {
            "as_of": result.as_of,
            "segments": {
                name: int(seg_counts[i]) for i, name in enumerate(result.segments)
            },
            "codes": {
                code_text(int(c)): int(code_counts[c])
                for c in np.flatnonzero(code_counts[1:]) + 1
            },
        }
        return rows

    def _segment_id(self, name: str) -> int:
        if name not in self.segment_names:
            if len(self.segment_names) >= MAX_SEGMENTS:
                raise InvalidInput.at("rules", "too many segment names over time")
            self.segment_names.append(name)
        return self.segment_names.index(name)

    # -- reads ---------------------------------------------------------------------------
    def require_latest(self) -> RfmResult:
        if self.latest is None:
            raise RfmNotComputed()
        return self.latest

    def segment_name(self, sid: int) -> str | None:
        return None if sid == NO_SEGMENT else self.segment_names[sid]

    def transitions_mask(
        self,
        since: float | None,
        until: float | None,
        to: str | None,
        from_: str | None,
    ) -> np.ndarray:
        """Rows of the history matching the filters (``to``/``from_``: a segment name
        or a code; ``to`` keeps only rows that *entered* it, i.e. came from elsewhere)."""
        t = self.transitions
        keep = np.ones(len(t), dtype=bool)
        if since is not None:
            keep &= t.at >= since
        if until is not None:
            keep &= t.at < until
        if to is not None:
            kind, value = self._target(to, "to")
            if kind == "code":
                keep &= (t.to_code == value) & (t.from_code != value)
            else:
                keep &= (t.to_seg == value) & (t.from_seg != value)
        if from_ is not None:
            kind, value = self._target(from_, "from_")
            keep &= (t.from_code == value) if kind == "code" else (t.from_seg == value)
        return keep

    def _target(self, text: str, where: str) -> tuple[str, int]:
        if not isinstance(text, str):
            raise InvalidInput.at(
                where, f"expected a segment name or code, got {text!r}"
            )
        code = parse_code(text)
        if code is not None:
            return "code", code
        if text in self.segment_names:
            return "segment", self.segment_names.index(text)
        known = self.segment_names or self.config.segment_names()
        if text in known:
            return (
                "segment",
                254,
            )  # a configured name never entered yet: matches nothing
        import difflib

        close = difflib.get_close_matches(text, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidInput.at(
            where, f"unknown RFM segment {text!r}{hint}; codes look like R4F5M3"
        )

    def transitions_table(self, mask: np.ndarray, contacts: Any) -> pa.Table:
        t = self.transitions
        idx = np.flatnonzero(mask)
        cids = t.cid[idx]
        names = pa.array(list(self.segment_names) + [None], pa.string())

        def seg(col: np.ndarray) -> pa.Array:
            s = col[idx].astype(np.int32)
            s[s >= len(self.segment_names)] = len(self.segment_names)
            return pc.take(names, pa.array(s))

        ids = contacts.ids.decode(cids) if len(cids) else pa.array([], pa.string())
        return pa.table(
            {
                "customer_id": pa.array(ids).cast(pa.string()),
                "at": pa.array(
                    (t.at[idx] * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC")
                ),
                "from_code": codes_to_arrow(t.from_code[idx]),
                "to_code": codes_to_arrow(t.to_code[idx]),
                "from_segment": seg(t.from_seg),
                "to_segment": seg(t.to_seg),
            }
        )

    def history_table(
        self, since: str | None = None, until: str | None = None
    ) -> pa.Table:
        """Daily counts: one row per (day, kind, name), kind ``segment`` or ``code``."""
        day, kind, name, count = [], [], [], []
        for d in sorted(self.daily):
            if (since and d < since) or (until and d >= until):
                continue
            for k in ("segments", "codes"):
                for nm, c in self.daily[d][k].items():
                    day.append(d)
                    kind.append(k[:-1])
                    name.append(nm)
                    count.append(c)
        return pa.table(
            {
                "day": pa.array(day, pa.string()),
                "kind": pa.array(kind, pa.string()),
                "name": pa.array(name, pa.string()),
                "count": pa.array(count, pa.int64()),
            }
        )

    # -- publishing ----------------------------------------------------------------------
    def subscribe(self, listener: TransitionListener) -> Callable[[], None]:
        """Call ``listener(table)`` with each computation's new ``rfm_transition`` events;
        returns the function that unsubscribes."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    # -- serialisation -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        t = self.transitions
        return msgpack.packb(
            {
                "version": 1,
                "config": self.config.to_dict(),
                "latest": None if self.latest is None else self.latest.to_record(),
                "segment_names": self.segment_names,
                "transitions": {k: _pack_array(getattr(t, k)) for k in t.COLUMNS},
                "daily": self.daily,
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RfmState:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if raw.get("version") != 1:
            raise InvalidInput.at(
                "rfm_state", f"unknown version {raw.get('version')!r}"
            )
        state = cls()
        state.config = parse_config(raw["config"], RfmConfig())
        state.latest = (
            None if raw["latest"] is None else RfmResult.from_record(raw["latest"])
        )
        state.segment_names = list(raw["segment_names"])
        state.transitions.extend(
            {k: _unpack_array(raw["transitions"][k]) for k in _Transitions.COLUMNS}
        )
        state.daily = raw["daily"]
        return state


def resolve_params(
    config: RfmConfig,
    window_days: Any,
    scale: Any,
    method: Any,
    thresholds: Any,
) -> tuple[int, int, str, dict | None]:
    """Arguments over the configuration (None = the configured value), validated."""
    window_days = check_window(
        config.window_days if window_days is None else window_days
    )
    scale = check_scale(config.scale if scale is None else scale)
    method = check_method(config.method if method is None else method)
    if thresholds is None and method == "thresholds":
        thresholds = config.thresholds
    if method == "thresholds":
        if thresholds is None:
            raise InvalidInput.at(
                "thresholds",
                f"method 'thresholds' needs thresholds {{'r','f','m'}} with "
                f"{scale - 1} cut points each",
            )
        thresholds = check_thresholds(thresholds, scale)
    elif thresholds is not None:
        raise InvalidInput.at(
            "thresholds", "thresholds are only used with method='thresholds'"
        )
    return window_days, scale, method, thresholds


def values_matching(values: Iterable[str], op: str, value: Any) -> list[str]:
    """Which of a small vocabulary of strings satisfy ``s op value`` (NULL never does)."""
    vals = list(values)
    if op in ("=", "!="):
        hit = [v for v in vals if v == value]
        return hit if op == "=" else [v for v in vals if v != value]
    if op in ("in", "not_in"):
        wanted = set(value)
        return [v for v in vals if (v in wanted) == (op == "in")]
    if op == "between":
        return [v for v in vals if value[0] <= v <= value[1]]
    if op == "prefix":
        return [v for v in vals if v.startswith(value)]
    if op == "contains":
        return [v for v in vals if value in v]
    cmp = {
        "<": lambda a: a < value,
        "<=": lambda a: a <= value,
        ">": lambda a: a > value,
        ">=": lambda a: a >= value,
    }[op]
    return [v for v in vals if cmp(v)]
