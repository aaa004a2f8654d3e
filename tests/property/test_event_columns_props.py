"""The columnar typed batch (``EventColumns``) reads exactly like the per-event one.

Oracle: ``convert.events_to_table`` of the same events sent as an ``EventBatch`` (one
``Event`` message each), the long-standing typed path. Any events, including empty
strings, non-ASCII text, missing amounts, properties on some rows and link-named rows,
must give the same Arrow table, so the engine validates and applies them identically.
Layout defects (offsets, lengths, UTF-8) are refused naming the column, and the row
when a value is at fault.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.errors import InvalidInput
from segd.server import convert
from segd.server.client import to_event_columns
from segd.v1 import ingest_pb2

TEXT = st.text(alphabet=st.sampled_from("ab-é😀 "), max_size=4)
PROPS = st.sampled_from(("phrase", "channel", "email", "campaign"))


@st.composite
def events(draw) -> list[ingest_pb2.Event]:
    n = draw(st.integers(0, 12))
    out = []
    for _ in range(n):
        e = ingest_pb2.Event(
            customer_id=draw(TEXT),
            ts_ms=draw(st.integers(-(2**40), 2**40)),
            type=draw(TEXT),
            item_id=draw(TEXT),
            order_id=draw(TEXT),
            event_id=draw(TEXT),
        )
        if draw(st.booleans()):
            e.amount = draw(st.floats(allow_nan=False, width=64))
        for name in draw(st.sets(PROPS, max_size=3)):
            # non-empty: a map entry "" is the text "" for an Event, while a column
            # has no way to tell it from "no property" and reads it as NULL (documented)
            e.properties[name] = draw(TEXT.filter(bool))
        out.append(e)
    return out


def columns_of(evs: list[ingest_pb2.Event]) -> ingest_pb2.EventColumns:
    """An independent encoder (Python loops, no Arrow): the wire format as documented."""
    cols = ingest_pb2.EventColumns()

    def put(col: ingest_pb2.StringColumn, values: list[str]) -> None:
        blobs = [v.encode() for v in values]
        col.offsets.extend(
            np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
            .astype(int)
            .tolist()
        )
        col.data = b"".join(blobs)

    for name in ("customer_id", "type", "item_id", "order_id", "event_id"):
        put(getattr(cols, name), [getattr(e, name) for e in evs])
    cols.ts_ms.extend(e.ts_ms for e in evs)
    if any(e.HasField("amount") for e in evs):
        cols.amount.extend(e.amount if e.HasField("amount") else 0.0 for e in evs)
        cols.amount_set.extend(e.HasField("amount") for e in evs)
    for name in sorted({k for e in evs for k in e.properties}):
        put(cols.properties[name], [e.properties.get(name, "") for e in evs])
    return cols


@settings(deadline=None)
@given(events())
def test_columns_read_like_the_event_messages(evs):
    expected = convert.events_to_table(ingest_pb2.EventBatch(events=evs))
    cols = ingest_pb2.EventColumns.FromString(columns_of(evs).SerializeToString())
    got = convert.columns_to_table(cols)
    assert got.equals(expected), (got.to_pydict(), expected.to_pydict())


@settings(deadline=None)
@given(events())
def test_client_encoder_round_trips(evs):
    """``to_event_columns`` of the oracle's table reads back as that table."""
    expected = convert.events_to_table(ingest_pb2.EventBatch(events=evs))
    got = convert.columns_to_table(to_event_columns(expected))
    assert got.equals(expected), (got.to_pydict(), expected.to_pydict())


def three_rows() -> ingest_pb2.EventColumns:
    evs = [
        ingest_pb2.Event(customer_id=f"c{i}", ts_ms=1000 * i, type="view")
        for i in range(3)
    ]
    return columns_of(evs)


def refused(cols: ingest_pb2.EventColumns) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        convert.columns_to_table(cols)
    return e.value


def test_offsets_count_must_be_rows_plus_one():
    cols = three_rows()
    del cols.type.offsets[-1]
    err = refused(cols)
    assert (err.column, err.row) == ("type", None)
    assert err.where == "columns.type.offsets"


def test_decreasing_offset_names_the_row():
    cols = three_rows()
    cols.customer_id.offsets[2] = 1  # row 1 would end before it starts
    err = refused(cols)
    assert (err.column, err.row) == ("customer_id", 1)


def test_first_and_last_offsets_are_checked():
    cols = three_rows()
    cols.ClearField("item_id")
    cols.item_id.offsets.extend([0, 0, 0, 5])
    cols.item_id.data = b"abc"
    assert refused(cols).where == "columns.item_id.offsets[3]"
    cols = three_rows()
    cols.customer_id.offsets[0] = 1
    assert refused(cols).where == "columns.customer_id.offsets[0]"


def test_invalid_utf8_names_the_row():
    cols = three_rows()  # c0 c1 c2
    cols.customer_id.data = b"c0c\xffc2"
    err = refused(cols)
    assert (err.column, err.row) == ("customer_id", 1)
    assert err.where == "events[1].customer_id"


def test_offset_splitting_a_character_names_the_row():
    cols = ingest_pb2.EventColumns(ts_ms=[0, 0])
    cols.customer_id.data = "é".encode()  # two bytes, split one each
    cols.customer_id.offsets.extend([0, 1, 2])
    cols.type.data = b"vv"
    cols.type.offsets.extend([0, 1, 2])
    err = refused(cols)
    assert (err.column, err.row) == ("customer_id", 1)


def test_value_columns_need_one_value_per_row():
    cols = three_rows()
    del cols.ts_ms[-1]
    assert refused(cols).column == "ts"
    cols = three_rows()
    cols.amount.extend([1.0, 2.0])
    assert refused(cols).column == "amount"
    cols = three_rows()
    cols.amount.extend([1.0, 2.0, 3.0])
    cols.amount_set.extend([True])
    assert refused(cols).where == "columns.amount_set"
    cols = three_rows()
    cols.amount_set.extend([True, False, True])
    assert refused(cols).where == "columns.amount"


def test_rows_come_from_customer_id_and_builtins_are_not_properties():
    cols = three_rows()
    cols.ClearField("customer_id")
    assert refused(cols).where == "columns.customer_id"
    cols = three_rows()
    cols.properties["amount"].offsets.extend([0, 0, 0, 0])
    assert refused(cols).column == "amount"
    assert convert.columns_to_table(ingest_pb2.EventColumns()).num_rows == 0


def test_amount_set_false_is_null_and_empty_strings_are_null():
    cols = three_rows()
    cols.amount.extend([1.5, 99.0, 2.5])
    cols.amount_set.extend([True, False, True])
    cols.ClearField("item_id")
    cols.item_id.data = b"ab"
    cols.item_id.offsets.extend([0, 1, 1, 2])
    table = convert.columns_to_table(cols)
    assert table["amount"].to_pylist() == [1.5, None, 2.5]
    assert table["item_id"].to_pylist() == ["a", None, "b"]


def raw_string_column(draw) -> ingest_pb2.StringColumn:
    return ingest_pb2.StringColumn(
        data=draw(st.binary(max_size=12)),
        offsets=draw(st.lists(st.integers(-3, 14), max_size=6)),
    )


@st.composite
def arbitrary_columns(draw) -> ingest_pb2.EventColumns:
    cols = ingest_pb2.EventColumns(
        ts_ms=draw(st.lists(st.integers(-(2**62), 2**62), max_size=5)),
        amount=draw(st.lists(st.floats(), max_size=5)),
        amount_set=draw(st.lists(st.booleans(), max_size=5)),
    )
    for name in ("customer_id", "type", "item_id", "order_id", "event_id"):
        if draw(st.booleans()):
            getattr(cols, name).CopyFrom(raw_string_column(draw))
    for name in draw(st.sets(st.sampled_from(("email", "ts", "phrase")), max_size=2)):
        cols.properties[name].CopyFrom(raw_string_column(draw))
    return cols


@settings(deadline=None)
@given(arbitrary_columns())
def test_any_message_is_a_table_or_a_located_invalid_input(cols):
    """Whatever a client sends, the converter answers a table of consistent columns or
    an InvalidInput naming a column (never another exception, never a torn table)."""
    try:
        table = convert.columns_to_table(cols)
    except InvalidInput as exc:
        assert exc.column is not None and exc.where
        return
    table.validate(full=True)
    assert table.num_rows == max(len(cols.customer_id.offsets) - 1, 0)
