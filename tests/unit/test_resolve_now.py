"""`now` (Engine.segment, Engine.advance): datetimes, epoch seconds and ISO-8601 text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from segd import Engine
from segd.errors import InvalidInput, InvalidQuery
from segd.timeutil import resolve_now

T = datetime(2026, 1, 3, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "spelling",
    [
        T,
        int(T),
        datetime(2026, 1, 3, tzinfo=UTC),
        datetime(2026, 1, 3),
        "2026-01-03",
        "2026-01-03T00:00:00Z",
        "2026-01-03T03:00:00+03:00",
    ],
)
def test_spellings_of_one_moment(spelling) -> None:
    assert resolve_now(spelling) == T


@pytest.mark.parametrize("bad", ["garbage", "2026-13-01", "", True, -1, float("nan")])
def test_bad_now_is_refused_with_its_value(bad) -> None:
    with pytest.raises(InvalidQuery) as err:
        resolve_now(bad)
    assert err.value.reason.startswith("expected")


def test_advance_and_segment_take_iso_text() -> None:
    eng = Engine()
    eng.append_events(
        [
            {
                "customer_id": "a",
                "type": "view",
                "ts": "2026-01-01T00:00:00Z",
                "item": "i",
            }
        ]
    )
    eng.advance("2026-01-03T00:00:00Z")
    eng.create_segment("v", "view() in last 7 days", static=False)
    assert eng.members("v").count() == 1
    assert eng.segment("view() in last 7 days", now="2026-01-09T00:00:01Z").count() == 0
    with pytest.raises(InvalidInput) as err:
        eng.advance("not a time")
    assert str(err.value).count("now:") == 1
