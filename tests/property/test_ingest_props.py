"""Property tests of the ingest path: one defect anywhere in a batch is named by its row
and column (also across the chunks of a bulk load) and changes nothing; event ids
deduplicate exactly like a Python set, however the events are split into batches.

Oracles are plain Python: the position of the planted defect, and a ``set`` of ids.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd import Engine
from segd.errors import InvalidInput

T0 = 1_735_787_045
NOW = T0 + 86_400

DEFECTS = {
    # column: a value that must be refused there
    "customer_id": "",
    "item_id": "",
    "order_id": "",
    "amount": float("nan"),
    "type": "Not A Type",
    "ts": (2**32) * 1000,  # ms: past 2106
}


def _rows(n: int) -> list[dict]:
    return [
        {
            "customer_id": f"c{i % 7}",
            "ts": (T0 + i) * 1000,
            "type": "order" if i % 3 == 0 else "view",
            "item_id": f"i{i % 5}",
            "order_id": f"o{i // 2}",
            "amount": float(i),
        }
        for i in range(n)
    ]


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("customer_id", pa.string()),
                ("ts", pa.timestamp("ms", tz="UTC")),
                ("type", pa.string()),
                ("item_id", pa.string()),
                ("order_id", pa.string()),
                ("amount", pa.float64()),
            ]
        ),
    )


def _state(e: Engine) -> tuple:
    s = e.stats()
    return s["contacts"], s["events"], s["items"], dict(s["event_types"])


@given(
    n=st.integers(1, 60),
    data=st.data(),
    column=st.sampled_from(sorted(DEFECTS)),
)
def test_one_defect_is_named_and_changes_nothing(n: int, data, column: str) -> None:
    e = Engine()
    e.append_events(_table(_rows(5)))
    before = _state(e)
    row = data.draw(st.integers(0, n - 1))
    rows = _rows(n)
    rows[row][column] = DEFECTS[column]
    with pytest.raises(InvalidInput) as info:
        e.append_events(_table(rows))
    assert (info.value.row, info.value.column) == (row, column)
    assert _state(e) == before


@given(
    n=st.integers(2, 40),
    chunk=st.integers(1, 17),
    data=st.data(),
    column=st.sampled_from(sorted(DEFECTS)),
)
def test_a_defect_in_a_later_chunk_is_counted_from_the_start(
    tmp_path_factory, n: int, chunk: int, data, column: str
) -> None:
    row = data.draw(st.integers(0, n - 1))
    rows = _rows(n)
    rows[row][column] = DEFECTS[column]
    path = tmp_path_factory.mktemp("load") / "events.parquet"
    pq.write_table(_table(rows), path)
    e = Engine()
    with pytest.raises(InvalidInput) as info:
        e.load_events(path, rows_per_chunk=chunk)
    assert (info.value.row, info.value.column) == (row, column)
    assert str(info.value).startswith(f"events[{row}].{column}: ")
    assert _state(e) == (0, 0, 0, {})


@given(
    ids=st.lists(st.one_of(st.none(), st.sampled_from("abcdefgh")), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_event_ids_deduplicate_like_a_set(ids: list, cuts: list[int]) -> None:
    rows = [
        {"customer_id": f"c{i % 4}", "ts": T0 + i, "type": "view", "event_id": eid}
        for i, eid in enumerate(ids)
    ]
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    e = Engine()
    applied = dropped = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        batch = pa.Table.from_pylist(
            rows[lo:hi],
            schema=pa.schema(
                [
                    ("customer_id", pa.string()),
                    ("ts", pa.int64()),
                    ("type", pa.string()),
                    ("event_id", pa.string()),
                ]
            ),
        )
        report = e.append_events(batch)
        applied, dropped = applied + report.rows, dropped + report.duplicate_events
    want = sum(1 for x in ids if x is None) + len({x for x in ids if x is not None})
    assert applied == want == e.stats()["events"]
    assert dropped == len(ids) - want
    # the kept event of an id is its first occurrence
    first_of = {}
    for i, eid in enumerate(ids):
        if eid is not None:
            first_of.setdefault(eid, i)
    kept_ts = sorted(e.store.logs["view"].ts.tolist()) if "view" in e.store.logs else []
    want_ts = sorted(
        T0 + i for i, eid in enumerate(ids) if eid is None or first_of[eid] == i
    )
    assert kept_ts == want_ts
