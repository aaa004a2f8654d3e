"""Time in segd: event times are UTC seconds (uint32), attribute times UTC milliseconds.

The one module for time. Names carry the unit: ``*_s`` engine seconds (events, ``now``),
``*_ms`` wire / attribute milliseconds. One ISO-8601 parser (``parse_iso``), one duration
parser (``duration_s``), and the converters of Arrow columns (``to_epoch_ms``,
``to_event_seconds``), so every interface floors, rounds and refuses the same way.

Documented ranges (docs/data-model.md): event times 1970-01-01T00:00:01Z .. 2106-02-07
(uint32 seconds); attribute times strictly within +-2^62 ms of the epoch.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segd.errors import InvalidQuery, ValueRejected
from segd.native import MAX_SEC

DAY_S = 86_400
HOUR_S = 3_600
MAX_EVENT_S: int = MAX_SEC  # event times are uint32 seconds (sec_t): 1970..2106
MAX_ABS_MS = 2**62  # attribute times: |ms| < 2^62 (documented in docs/data-model.md)
DURATION_RE = re.compile(r"([0-9]+)([dh])")  # a duration: a count of days or hours
MAX_NOW_S = 253_402_300_799  # 9999-12-31T23:59:59Z: the last `now` a date can print
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_HAS_ZONE = r"(Z|z|[+-]\d\d:?\d\d)$"
# The ISO-8601 forms segd accepts: a date, or a date-time to the microsecond with an
# optional Z / +HH:MM offset (no offset = UTC).
ISO_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
ISO_RE = re.compile(ISO_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_iso(text: str) -> datetime | None:
    """The UTC instant of ISO-8601 text in segd's form (``ISO_PATTERN``), else None.

    A date is midnight UTC; a date-time without an offset is UTC. The segment language
    (``segd.segments.ast``) uses this parser too, so a time means the same everywhere."""
    if not isinstance(text, str):
        return None
    if not ISO_RE.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_to_ms(text: str, where: str = "time") -> int:
    """ISO-8601 text -> UTC milliseconds (InvalidQuery naming `where` when it is not)."""
    moment = parse_iso(text)
    if moment is None:
        raise InvalidQuery.at(
            where, f"expected an ISO-8601 date such as '2025-01-31', got {text!r}"
        )
    return datetime_to_ms(moment)


def datetime_to_ms(moment: datetime) -> int:
    """A datetime (naive = UTC) -> UTC milliseconds, exactly (no float rounding)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    return (delta.days * DAY_S + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> datetime:
    """UTC milliseconds -> an aware datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def ms_to_iso(ms: int) -> str:
    """UTC ms -> the AST's ISO form: ``2025-01-01`` at midnight, else ``...T10:30:00Z``."""
    t = ms_to_datetime(ms)
    if ms % (DAY_S * 1000) == 0:
        return t.strftime("%Y-%m-%d")
    if ms % 1000 == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def resolve_now(now: datetime | float | int | str | None) -> float:
    """`now` of an evaluation as epoch seconds: a datetime (naive = UTC), a number, ISO-8601
    text (as ``segctl --now`` takes it), or the wall clock (None)."""
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
    if isinstance(now, str):
        moment = parse_iso(now)
        if moment is not None:
            return resolve_now(moment)
    raise InvalidQuery.at(
        "now",
        f"expected a datetime, epoch seconds or an ISO-8601 time, got {now!r}",
    )


def duration_s(text: str, where: str) -> int:
    """``"7d"`` -> 604800; units d (days) and h (hours)."""
    m = DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise InvalidQuery.at(
            where, f"expected a duration such as '7d' or '12h', got {text!r}"
        )
    return int(m.group(1)) * (DAY_S if m.group(2) == "d" else HOUR_S)


def duration_hours(text: str) -> int:
    """Hours in a canonical duration such as ``"7d"`` or ``"12h"``."""
    return duration_s(text, "duration") // HOUR_S


def parse_instant_s(text: str, where: str) -> float:
    """ISO-8601 date or date-time (no zone = UTC) to epoch seconds."""
    moment = parse_iso(text)
    if moment is None:
        raise InvalidQuery.at(
            where, f"expected an ISO-8601 date such as '2025-01-31', got {text!r}"
        )
    return moment.timestamp()


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
    """Arrow timestamps / dates / ISO-8601 text -> (int64 UTC ms, valid uint8).

    Plain numbers are refused: an epoch number does not say its unit (seconds? ms?) and a
    ``birth_date`` of ``19870412`` would silently be 1970. Raises ``ValueRejected``
    naming the first value that does not parse or lies outside +-2^62 ms.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ts = _cast_or_locate(_normalise_iso(arr), pa.timestamp("ms", tz="UTC"), arr)
    elif pa.types.is_timestamp(t) or pa.types.is_date(t):
        ts = _range_checked_cast(arr)
    elif pa.types.is_null(t):
        return np.zeros(len(arr), np.int64), np.zeros(len(arr), np.uint8)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        raise ValueRejected(
            f"expected a time (a timestamp, a date or ISO-8601 text), got {t}: a plain "
            "number does not say whether it counts seconds or milliseconds"
        )
    else:
        raise ValueRejected(
            f"expected a time (a timestamp, a date or ISO-8601 text), got {t}"
        )
    valid = np.asarray(pc.is_valid(ts)).astype(np.uint8)
    values = np.asarray(pc.fill_null(pc.cast(ts, pa.int64()), 0), dtype=np.int64)
    out_of_range = (values <= -MAX_ABS_MS) | (values >= MAX_ABS_MS)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise ValueRejected(_out_of_range(arr, row), row)
    return values, valid


def _out_of_range(arr: pa.Array, row: int) -> str:
    return f"{_shown(arr, row)} is outside the attribute time range (|ms| < 2^62 from 1970)"


def _shown(arr: pa.Array, row: int) -> str:
    """One value for an error message, at most 80 characters. A time Python's datetime
    cannot hold (past year 9999) is shown as its raw count and unit."""
    try:
        text = repr(arr[row].as_py())
    except (ValueError, OverflowError, pa.ArrowException):
        t = arr.type
        unit = getattr(t, "unit", "days" if pa.types.is_date(t) else "")
        raw = arr.cast(pa.int64() if not pa.types.is_date(t) else pa.int64())
        text = f"{raw[row].as_py()} {unit} since 1970".strip()
    return text if len(text) <= 80 else text[:77] + "..."


def _range_checked_cast(arr: pa.Array) -> pa.Array:
    """Timestamps / dates -> timestamp[ms, UTC], flooring sub-millisecond units; a value
    whose milliseconds overflow int64 is refused by row (Arrow would wrap it)."""
    t = arr.type
    if pa.types.is_date(t):
        days = np.asarray(
            pc.fill_null(
                arr.cast(pa.int32() if pa.types.is_date32(t) else pa.int64()), 0
            )
        ).astype(np.int64)
        bad = np.abs(days) >= MAX_ABS_MS // (DAY_S * 1000)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueRejected(_out_of_range(arr, row), row)
        ms = pa.array(
            days * (DAY_S * 1000), pa.int64(), mask=~np.asarray(pc.is_valid(arr))
        )
        return ms.cast(pa.timestamp("ms", tz="UTC"))
    per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[t.unit]
    raw = np.asarray(pc.fill_null(arr.cast(pa.int64()), 0), dtype=np.int64)
    if per_ms is None:  # seconds: multiply without overflow
        bad = np.abs(raw) >= MAX_ABS_MS // 1000
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueRejected(_out_of_range(arr, row), row)
        ms = raw * 1000
    else:
        ms = np.floor_divide(raw, per_ms)
    return pa.array(ms, pa.int64(), mask=~np.asarray(pc.is_valid(arr))).cast(
        pa.timestamp("ms", tz="UTC")
    )


def to_event_seconds(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Event `ts` column -> uint32 UTC seconds (floored). Integers are epoch seconds.

    Raises ``ValueRejected`` naming the row of a NULL, unparsable text or a time outside
    1970-01-01T00:00:01Z..2106-02-07 (uint32 seconds).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_timestamp(t):
        # Integer floor division, no float round trip (exact for every unit).
        per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        as_int = arr.cast(pa.int64())
        if arr.null_count:
            as_int = pc.fill_null(as_int, 0)
        raw = np.asarray(as_int, dtype=np.int64)
        secs = raw // per_s if per_s > 1 else raw
        if (
            arr.null_count == 0
            and len(secs)
            and secs.min() >= 1
            and secs.max() <= MAX_EVENT_S
        ):
            return secs.astype(np.uint32)
        secs = secs.astype(np.float64)
        if arr.null_count:
            secs[~np.asarray(pc.is_valid(arr))] = np.nan
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        secs = np.floor(np.asarray(pc.cast(arr, pa.float64()).fill_null(np.nan)))
    else:
        ms, valid = to_epoch_ms(arr)
        secs = np.where(valid.astype(bool), np.floor_divide(ms, 1000), np.nan)
    bad = ~((secs >= 1) & (secs <= MAX_EVENT_S))  # NaN compares False: NULLs land here
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        if not arr[row].is_valid:
            raise ValueRejected("ts is NULL", row)
        raise ValueRejected(
            f"ts {_shown(arr, row)} is outside 1970-01-01T00:00:01Z..2106-02-07 "
            "(event times are uint32 seconds)",
            row,
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
        raise ValueRejected(
            f"cannot parse {_shown(original, lo)} as an ISO-8601 time", lo
        ) from None
