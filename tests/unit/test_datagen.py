"""segd.datagen: determinism, schema, realistic shares and skew, order/time invariants."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from segd import datagen
from segd.datagen import (
    DEFAULT_NOW,
    EVENT_TYPES,
    EVENTS_SCHEMA,
    generate,
    parse_scale,
    write_parquet_streaming,
)

N = 3000


@pytest.fixture(scope="module")
def demo():
    return generate(N, seed=7)


def test_same_seed_gives_identical_tables(demo) -> None:
    again = generate(N, seed=7)
    for name in ("contacts", "items", "events"):
        assert getattr(demo, name).equals(getattr(again, name)), name
    other = generate(N, seed=8)
    assert not demo.events.equals(other.events)


def test_schema_matches_the_data_model(demo) -> None:
    ts = pa.timestamp("s", tz="UTC")
    assert demo.contacts.schema == pa.schema([
        ("customer_id", pa.string()), ("gender", pa.string()),
        ("birth_date", pa.date32()), ("city", pa.string()), ("email", pa.string()),
        ("phone", pa.string()), ("email_subscribed", pa.bool_()),
        ("sms_subscribed", pa.bool_()), ("registered_at", ts), ("rating", pa.int64()),
        ("tags", pa.list_(pa.string())),
    ])  # fmt: skip
    assert demo.items.schema == pa.schema([
        ("item_id", pa.string()), ("name", pa.string()), ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()), ("in_stock", pa.bool_()), ("colour", pa.string()),
        ("size", pa.string()),
    ])  # fmt: skip
    strings = ["type", "item_id", "amount", "order_id", "phrase", "advertiser"]
    strings += ["campaign", "ad", "channel"]
    assert demo.events.schema.names == ["customer_id", "ts", *strings]
    assert demo.events.schema.field("ts").type == ts
    assert demo.events.schema.field("amount").type == pa.float64()
    assert demo.now == DEFAULT_NOW


def test_sizes_and_ids(demo) -> None:
    assert demo.contacts.num_rows == N
    assert demo.items.num_rows == 200  # at least 200 items
    assert demo.contacts["customer_id"][0].as_py() == "c00000001"
    assert pc.count_distinct(demo.contacts["customer_id"]).as_py() == N
    assert 15 * N < demo.events.num_rows < 25 * N
    assert demo.events["customer_id"].null_count == 0
    assert demo.events["type"].null_count == 0


def test_event_type_shares(demo) -> None:
    counts = {
        d["values"]: d["counts"]
        for d in pc.value_counts(demo.events["type"]).to_pylist()
    }
    assert set(counts) == set(EVENT_TYPES)
    share = {k: v / demo.events.num_rows for k, v in counts.items()}
    assert 0.55 < share["view"] < 0.65
    assert 0.08 < share["add_to_cart"] < 0.13
    assert 0.02 < share["order"] < 0.07


def test_events_are_sorted_and_inside_the_year(demo) -> None:
    ts = demo.events["ts"].cast(pa.int64()).to_numpy()
    now_s = int(demo.now.timestamp())
    assert np.all(np.diff(ts) >= 0)
    assert ts.min() >= now_s - 365 * 86400 and ts.max() < now_s


def test_order_lines_share_order_id_contact_and_time(demo) -> None:
    orders = demo.events.filter(pc.equal(demo.events["type"], "order"))
    assert orders["order_id"].null_count == 0 and orders["amount"].null_count == 0
    lines = orders.group_by("order_id").aggregate(
        [("customer_id", "count_distinct"), ("ts", "count_distinct"), ("ts", "count")]
    )
    assert pc.max(lines["customer_id_count_distinct"]).as_py() == 1
    assert pc.max(lines["ts_count_distinct"]).as_py() == 1
    per_order = lines["ts_count"].to_numpy()
    assert per_order.max() <= 4 and (per_order > 1).any()
    others = demo.events.filter(pc.not_equal(demo.events["type"], "order"))
    assert others["order_id"].null_count == others.num_rows


def test_amount_is_price_times_quantity(demo) -> None:
    orders = demo.events.filter(pc.equal(demo.events["type"], "order"))
    joined = orders.join(demo.items, "item_id")
    qty = pc.divide(joined["amount"], joined["price"]).to_numpy()
    assert np.allclose(qty, np.round(qty), atol=1e-3) and set(np.round(qty)) <= {
        1,
        2,
        3,
    }


def test_skew_heavy_tailed_contacts_and_zipf_items(demo) -> None:
    per_contact = demo.events.group_by("customer_id").aggregate([("ts", "count")])
    counts = np.sort(per_contact["ts_count"].to_numpy())
    assert counts[-1] > 8 * np.median(counts)  # a heavy tail of very active contacts
    views = demo.events.filter(pc.equal(demo.events["type"], "view"))
    per_item = np.sort(
        views.group_by("item_id").aggregate([("ts", "count")])["ts_count"].to_numpy()
    )[::-1]
    assert per_item[:20].sum() > 0.25 * per_item.sum()


def test_vocabularies_needed_by_the_examples(demo) -> None:
    categories = set(demo.items["category"].to_pylist())
    for prefix in ("Outdoor/Tents/", "Outdoor/Fishing rods/", "Outdoor/Cookware/"):
        assert any(c.startswith(prefix) for c in categories)
    assert "Pets/Cats/Dry food" in categories
    assert all(c.count("/") == 2 for c in categories)
    assert "Apple" in set(demo.items["brand"].to_pylist())
    ev = demo.events
    assert "winter tyres" in set(ev["phrase"].to_pylist())
    ads = ev.filter(pc.equal(ev["type"], "ad_click"))
    pairs = set(
        zip(ads["advertiser"].to_pylist(), ads["campaign"].to_pylist(), strict=True)
    )
    assert ("A", "C") in pairs
    assert len({c for _, c in pairs}) == len(pairs)  # a campaign has one advertiser
    email = ev.filter(pc.equal(ev["type"], "email_open"))
    assert set(email["channel"].to_pylist()) == {"email"}


def test_contact_attributes_have_nulls_and_realistic_values(demo) -> None:
    c = demo.contacts
    assert set(c["gender"].drop_null().to_pylist()) == {"m", "f"}
    assert 0 < c["gender"].null_count < 0.2 * N
    assert 0.1 * N < c["phone"].null_count < 0.5 * N
    assert c["rating"].null_count > 0.4 * N
    assert pc.min(c["rating"]).as_py() >= 1 and pc.max(c["rating"]).as_py() <= 10
    assert len(set(c["city"].drop_null().to_pylist())) > 20
    assert pc.sum(pc.list_value_length(c["tags"])).as_py() > N


def test_typical_queries_select_a_strict_subset(demo) -> None:
    ev, now = demo.events, demo.now
    c = demo.contacts
    age = pc.subtract(now.year, pc.year(c["birth_date"]))  # roughly: a share check
    men_35 = pc.and_(pc.equal(c["gender"], "m"), pc.greater_equal(age, 36))
    assert 0 < pc.sum(men_35.fill_null(False)).as_py() < N
    recent = pc.greater_equal(
        ev["ts"], pa.scalar(now - timedelta(days=14), ev["ts"].type)
    )
    opened = ev.filter(pc.and_(recent, pc.equal(ev["type"], "email_open")))
    opened_ids = opened["customer_id"].cast(pa.string())  # no dictionary kernel
    assert 0 < pc.count_distinct(opened_ids).as_py() < N
    orders = ev.filter(pc.equal(ev["type"], "order"))
    per = orders.group_by("customer_id").aggregate([("order_id", "count_distinct")])
    assert 0 < int((per["order_id_count_distinct"].to_numpy() >= 3).sum()) < N


def test_event_only_contacts_exist(demo) -> None:
    known = set(demo.contacts["customer_id"].to_pylist())
    seen = set(demo.events["customer_id"].to_pylist())
    assert 0 < len(seen - known) <= N // 200


def test_now_and_empty_edge_cases() -> None:
    now = datetime(2024, 3, 1, 12, 30, 15, 999, tzinfo=UTC)
    data = generate(10, now=now)
    assert data.now == datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)
    empty = generate(0)
    assert empty.contacts.num_rows == 0 and empty.events.num_rows == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(10, now=datetime(2024, 3, 1))


def _decoded(table: pa.Table) -> pa.Table:
    """``table`` with dictionary columns as plain values, ts in seconds, one chunk."""
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("s", tz="UTC"))
        cols[name] = col
    return pa.table(cols).combine_chunks()


def test_values_are_pinned_to_the_plain_string_generator() -> None:
    """The dictionary / block-wise rewrite kept every value (digest of the old output,
    which had no co-purchase structure)."""
    ev = generate(N, seed=7, co_purchase=False).events
    assert ev.num_rows == 62219
    assert pc.sum(ev["ts"].cast(pa.int64())).as_py() == 108074330658756
    digest = hashlib.sha256()
    for name in ev.column_names:
        digest.update("\x1f".join(map(str, ev[name].to_pylist())).encode())
    assert digest.hexdigest() == (
        "76aebdba485cff0ea6005be288ab8dc4c0ab24c79f5a4020f9fb06fda39ce8d8"
    )


def test_events_text_columns_are_dictionaries(demo) -> None:
    ev = demo.events
    assert ev.schema == EVENTS_SCHEMA
    assert ev.schema.field("order_id").type == pa.string()  # unique per order: plain
    ids = ev["customer_id"]
    for chunk in ids.chunks:  # one dictionary: contacts' ids, then event-only ids
        assert chunk.dictionary.equals(ids.chunk(0).dictionary)
    assert len(ids.chunk(0).dictionary) == N + N // 200
    assert (
        ids.chunk(0)
        .dictionary.slice(0, N)
        .equals(demo.contacts["customer_id"].combine_chunks())
    )
    assert ev["type"].chunk(0).dictionary.to_pylist() == list(EVENT_TYPES)
    assert (
        ev["item_id"].chunk(0).dictionary.equals(demo.items["item_id"].combine_chunks())
    )
    assert ev["item_id"].null_count == pc.sum(
        pc.invert(pc.is_in(ev["type"].cast(pa.string()), pa.array(
            ["view", "add_to_cart", "add_to_favorites", "remove_from_cart", "order"]
        )))
    ).as_py()  # fmt: skip


def test_block_size_does_not_change_the_data(monkeypatch, demo) -> None:
    monkeypatch.setattr(datagen, "_BLOCK", 997)  # draws split at odd places
    small_blocks = generate(N, seed=7)
    for name in ("contacts", "items", "events"):
        assert getattr(small_blocks, name).equals(getattr(demo, name)), name


def test_write_parquet_round_trips(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(datagen, "_COMPACT_OVER", 8)  # compact customer and item ids
    data = generate(500, seed=1)
    paths = data.write_parquet(tmp_path / "out", row_group_size=2000)
    assert set(paths) == {"contacts", "items", "events"}
    back = pq.read_table(paths["events"])  # Parquet has no seconds unit: ms on disk
    for field in EVENTS_SCHEMA:  # dictionaries read back as dictionaries
        if field.name != "ts":
            assert back.schema.field(field.name).type == field.type, field.name
    assert _decoded(back).equals(_decoded(data.events))
    meta = pq.ParquetFile(paths["events"]).metadata
    assert meta.num_row_groups == -(-data.events.num_rows // 2000)
    first = pq.ParquetFile(paths["events"]).read_row_group(0)["customer_id"]
    assert len(first.chunk(0).dictionary) < len(
        data.events["customer_id"].chunk(0).dictionary
    )
    assert _decoded(pq.read_table(paths["contacts"])).equals(_decoded(data.contacts))
    assert pq.read_table(paths["items"]).equals(data.items)


def test_streaming_writer_writes_exactly_what_generate_builds(tmp_path) -> None:
    phases = []
    paths = write_parquet_streaming(
        N, tmp_path / "s", seed=7, row_group_size=5000,
        progress=lambda phase, done, total: phases.append((phase, done, total)),
    )  # fmt: skip
    data = generate(N, seed=7)
    for name in ("contacts", "items", "events"):
        back = pq.read_table(paths[name])
        assert back.schema.names == getattr(data, name).schema.names, name
        assert _decoded(back).equals(_decoded(getattr(data, name))), name
    events = pq.read_table(paths["events"])
    assert pa.types.is_dictionary(events.schema.field("customer_id").type)
    assert pq.ParquetFile(paths["events"]).metadata.num_row_groups == -(
        -data.events.num_rows // 5000
    )
    assert [p for p, _, _ in phases if p != "events"] == [
        "contacts", "items", "activity", "sort"
    ]  # fmt: skip
    assert phases[-1] == ("events", data.events.num_rows, data.events.num_rows)
    other = write_parquet_streaming(N, tmp_path / "o", seed=8)
    assert not pq.read_table(other["events"]).equals(events)


def test_streaming_writer_edge_cases(tmp_path) -> None:
    paths = write_parquet_streaming(0, tmp_path / "empty")
    back = pq.read_table(paths["events"])
    assert back.num_rows == 0 and back.schema.names == EVENTS_SCHEMA.names
    with pytest.raises(ValueError, match="row_group_size"):
        write_parquet_streaming(10, tmp_path / "bad", row_group_size=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        write_parquet_streaming(10, tmp_path / "bad", now=datetime(2024, 3, 1))


def test_segctl_demo_write_writes_files_and_reports_phases(tmp_path) -> None:
    """The command line is segctl's (`segctl demo write`); datagen is a library."""
    import io

    from segd.server.segctl.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    assert (
        main(["demo", "write", "--contacts", "200", "--out", str(tmp_path)], out, err)
        == 0
    )
    assert "contacts" in err.getvalue() and "events" in err.getvalue()
    assert "wrote" in out.getvalue()
    assert pq.read_table(tmp_path / "contacts.parquet").num_rows == 200
    back = pq.read_table(tmp_path / "events.parquet")  # the streaming writer's output
    assert _decoded(back).equals(_decoded(generate(200).events))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2500", 2500), ("100k", 100_000), ("1m", 1_000_000), ("10M", 10_000_000),
     ("1.5m", 1_500_000), (" 2_500 ", 2500)],
)  # fmt: skip
def test_parse_scale(text: str, expected: int) -> None:
    assert parse_scale(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1g", "-5", "0", "1.5", "0.0001k", "k"])
def test_parse_scale_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="bad scale"):
        parse_scale(text)
