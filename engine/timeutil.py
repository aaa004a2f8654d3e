"""Time in segd: event times are UTC seconds (uint32), attribute times UTC milliseconds.

One place converts what users write (ISO-8601 text, epoch numbers, Arrow timestamps,
``datetime``) so that every interface floors and rounds the same way.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd.errors import InvalidQuery

DAY_S = 86_400
MAX_EVENT_S = 2**32 - 1  # event times are uint32 seconds: 1970..2106
MAX_NOW_S = 253_402_300_799  # 9999-12-31T23:59:59Z: the last `now` a date can print
_DURATION = re.compile(r"^(\d+)([dh])$")
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_HAS_ZONE = r"(Z|z|[+-]\d\d:?\d\d)$"


def resolve_now(now: datetime | float | int | None) -> float:
    """`now` of an evaluation as epoch seconds: a datetime (naive = UTC), a number, or the clock."""
    if now is None:
        # The current second: event times are whole seconds, and repeated requests within
        # a second then ask the same question (and hit the engine's result cache).
        return float(math.floor(datetime.now(UTC).timestamp()))
    if isinstance(now, datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return now.timestamp()
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        if not 0 <= now <= MAX_NOW_S:  # also NaN: every date computation can print it
            raise InvalidQuery.at(
                "now",
                f"expected epoch seconds in 0..{MAX_NOW_S} (1970..9999), got {now!r}",
            )
        return float(now)
    raise InvalidQuery.at("now", f"expected a datetime or epoch seconds, got {now!r}")


def duration_s(text: str, where: str) -> int:
    """``"7d"`` -> 604800; units d (days) and h (hours)."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if not m:
        raise InvalidQuery.at(
            where, f"expected a duration such as '7d' or '12h', got {text!r}"
        )
    return int(m.group(1)) * (DAY_S if m.group(2) == "d" else 3600)


def parse_instant_s(text: str, where: str) -> float:
    """ISO-8601 date or date-time (no zone = UTC) to epoch seconds."""
    try:
        if re.match(_DATE_ONLY, text):
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
        dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise InvalidQuery.at(
            where, f"expected an ISO-8601 date such as '2025-01-31', got {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def period_bounds_s(period: dict | None, now_s: float, where: str) -> tuple[int, int]:
    """A period of the AST as whole-second bounds ``[lo, hi)`` of event time.

    Event times are whole seconds, so ``t >= from`` equals ``t >= ceil(from)`` and
    ``t < to`` equals ``t < ceil(to)``: both bounds round up.
    """
    if not period:
        return 0, MAX_EVENT_S + 1
    if "last" in period:
        lo, hi = now_s - duration_s(period["last"], f"{where}.last"), now_s
    elif "ago" in period:
        older, newer = period["ago"]
        lo = now_s - duration_s(older, f"{where}.ago[0]")
        hi = now_s - duration_s(newer, f"{where}.ago[1]")
    else:
        lo = parse_instant_s(period["from"], f"{where}.from") if "from" in period else 0
        hi = (
            parse_instant_s(period["to"], f"{where}.to")
            if "to" in period
            else MAX_EVENT_S + 1
        )
    clamp = lambda x: min(max(math.ceil(x), 0), MAX_EVENT_S + 1)  # noqa: E731
    return clamp(lo), clamp(hi)


def full_years_cutoff_ms(now_s: float, years: int) -> int:
    """First millisecond of the day after the latest birth date that is `years` old at now.

    ``age >= a`` holds exactly for ``birth_ms < full_years_cutoff_ms(now, a)``, with age in
    full years (the birthday of this year counted once reached; Feb 29 turns over on Mar 1).
    """
    today = datetime.fromtimestamp(now_s, UTC).date()
    year = today.year - years
    if year < 1:
        return -(2**62)
    if year > 9999:
        return 2**62
    try:
        cutoff = date(year, today.month, today.day)
    except (
        ValueError
    ):  # Feb 29 in a non-leap year: no birth date between Feb 28 and Mar 1
        cutoff = date(year, 2, 28)
    nxt = cutoff + timedelta(days=1)
    return int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC).timestamp() * 1000)


def _normalise_iso(arr: pa.Array) -> pa.Array:
    """Give every ISO string a zone (UTC when none) so Arrow's parser accepts it."""
    date_only = pc.match_substring_regex(arr, _DATE_ONLY)
    has_zone = pc.match_substring_regex(arr, _HAS_ZONE)
    with_zone = pc.if_else(has_zone, arr, pc.binary_join_element_wise(arr, "Z", ""))
    return pc.if_else(
        date_only, pc.binary_join_element_wise(arr, "T00:00:00Z", ""), with_zone
    )


def to_epoch_ms(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Arrow timestamps / dates / ISO strings / epoch ms numbers -> (int64 ms, valid uint8).

    Raises ValueError("row N: ...") naming the first value that does not parse.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ts = _cast_or_locate(_normalise_iso(arr), pa.timestamp("ms", tz="UTC"), arr)
    elif pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts = pc.cast(
            arr,
            pa.timestamp("ms", tz="UTC")
            if not pa.types.is_date(t)
            else pa.timestamp("ms"),
            safe=False,
        )
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        ts = pc.cast(pc.cast(arr, pa.float64()), pa.int64(), safe=False)
    elif pa.types.is_null(t):
        return np.zeros(len(arr), np.int64), np.zeros(len(arr), np.uint8)
    else:
        raise ValueError(
            f"expected a timestamp, date, ISO-8601 text or epoch number, got {t}"
        )
    valid = np.asarray(pc.is_valid(ts)).astype(np.uint8)
    values = np.asarray(pc.fill_null(pc.cast(ts, pa.int64()), 0), dtype=np.int64)
    return values, valid


def to_event_seconds(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Event `ts` column -> uint32 UTC seconds (floored). Integers are epoch seconds.

    Raises ValueError("row N: ...") for NULLs, unparsable text or times outside 1970..2106.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_timestamp(t) and arr.null_count == 0:
        # Fast path (bulk loads): integer floor division, no float round trip.
        per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        raw = np.asarray(arr.cast(pa.int64()), dtype=np.int64)
        secs = raw // per_s if per_s > 1 else raw
        if len(secs) and secs.min() >= 1 and secs.max() <= MAX_EVENT_S:
            return secs.astype(np.uint32)
        secs = secs.astype(np.float64)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        secs = np.floor(np.asarray(pc.cast(arr, pa.float64()).fill_null(np.nan)))
    else:
        ms, valid = to_epoch_ms(arr)
        secs = np.where(valid.astype(bool), np.floor_divide(ms, 1000), np.nan)
    bad = ~(
        (secs >= 1) & (secs <= MAX_EVENT_S)
    )  # NaN compares False: NULLs land here too
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = arr[row].as_py()
        if value is None:
            raise ValueError(f"row {row}: ts is NULL")
        raise ValueError(
            f"row {row}: ts {value!r} is outside 1970-01-01T00:00:01Z..2106-02-07 "
            "(event times are uint32 seconds)"
        )
    return secs.astype(np.uint32)


def _cast_or_locate(arr: pa.Array, to: pa.DataType, original: pa.Array) -> pa.Array:
    """Cast, and when Arrow refuses, find the first bad row by bisection (O(log n) casts)."""
    try:
        return pc.cast(arr, to)
    except pa.ArrowInvalid:
        lo, hi = 0, len(arr)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                pc.cast(arr.slice(lo, mid - lo), to)
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        raise ValueError(
            f"row {lo}: cannot parse {original[lo].as_py()!r} as an ISO-8601 time"
        ) from None
