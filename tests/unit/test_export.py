"""Engine.export / export_batches / export_retargeting (segd.export, issue 13's exports).

Files are read back with pyarrow (Parquet, CSV) and compared with an oracle built from the
input rows alone: the members are the rows the query selects in the input, the values
those of the last upsert. Retargeting hashes are recomputed here with hashlib from the
normalised values written out by hand next to each contact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tracemalloc
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd import Engine
from segd.errors import InvalidInput, UnknownColumn
from segd.export import ExportReport

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, tzinfo=UTC)

CONTACTS = [
    dict(customer_id="a", grp=1, score=1.5, vip=True, seen=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
         city="Kazan", tags=["x", "y"]),  # tags come out in alphabetical order
    dict(customer_id="b", grp=0, score=None, vip=False, seen=None, city="Omsk", tags=[]),
    dict(customer_id="c", grp=1, score=-2.0, vip=None, seen=T0, city=None, tags=None),
    dict(customer_id="d", grp=1, score=0.0, vip=True, seen=T0, city="Kazan, Tatarstan", tags=["y"]),
    dict(customer_id="e", grp=None, score=3.0, vip=False, seen=T0, city='Say "hi"', tags=["z"]),
]  # fmt: skip
TYPES = pa.schema(
    [
        ("customer_id", pa.string()),
        ("grp", pa.int64()),
        ("score", pa.float64()),
        ("vip", pa.bool_()),
        ("seen", pa.timestamp("ms", tz="UTC")),
        ("city", pa.string()),
        ("tags", pa.list_(pa.string())),
    ]
)
COLUMNS = ["grp", "score", "vip", "seen", "city", "tags"]


@pytest.fixture
def engine() -> Engine:
    e = Engine()
    e.upsert_contacts(pa.Table.from_pylist(CONTACTS, schema=TYPES))
    # a later upsert wins: d's city and tags change, f is new with only some columns
    e.upsert_contact("d", city="Moscow", tags=["q"])
    e.upsert_contact("f", grp=1)
    return e


def oracle(rows: list[dict], where) -> list[dict]:
    """The expected rows: last value per contact and column, members in first-seen
    order (the engine's cid order), every column present (NULL when never set)."""
    merged: dict[str, dict] = {}
    for row in rows:
        merged.setdefault(row["customer_id"], {c: None for c in COLUMNS}).update(row)
    return [
        {"customer_id": cid, **{c: vals[c] for c in COLUMNS}}
        for cid, vals in merged.items()
        if where(vals)
    ]


ROWS = [*CONTACTS, dict(customer_id="d", city="Moscow", tags=["q"]), dict(customer_id="f", grp=1)]  # fmt: skip
IN_GROUP = oracle(ROWS, lambda r: r["grp"] == 1)


def test_parquet_round_trip_every_kind(engine: Engine, tmp_path) -> None:
    path = tmp_path / "g.parquet"
    report = engine.export("grp = 1", path, columns=COLUMNS, now=NOW, chunk_rows=2)
    assert isinstance(report, ExportReport)
    assert (report.rows, report.members, report.format) == (4, 4, "parquet")
    assert report.columns == ("customer_id", *COLUMNS)
    table = pq.read_table(path)
    assert table.column_names == ["customer_id", *COLUMNS]
    assert table.to_pylist() == IN_GROUP
    assert pq.ParquetFile(path).metadata.num_row_groups == 2  # one per chunk
    assert report.bytes == path.stat().st_size


def test_csv_round_trip(engine: Engine, tmp_path) -> None:
    path = tmp_path / "g.csv"
    report = engine.export("grp = 1", path, columns=COLUMNS, now=NOW, chunk_rows=3)
    assert report.format == "csv" and report.rows == 4
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["customer_id", *COLUMNS]

    def cell(value, column):
        if value is None:
            return ""
        if column == "tags":
            return "|".join(value)
        if column == "vip":
            return "true" if value else "false"
        if column == "seen":
            return (
                value.strftime("%Y-%m-%d %H:%M:%S.")
                + f"{value.microsecond // 1000:03d}"
            )
        if column == "score":
            return (
                repr(value).removesuffix(".0") if value == int(value) else repr(value)
            )
        return str(value)

    expected = [{k: cell(v, k) for k, v in row.items()} for row in IN_GROUP]
    assert rows == expected
    # pyarrow reads it back typed
    back = pcsv.read_csv(path)
    assert back.column("customer_id").to_pylist() == [
        r["customer_id"] for r in IN_GROUP
    ]


def test_ids_only_and_chosen_order(engine: Engine) -> None:
    out = io.BytesIO()
    engine.export("grp = 1", out, format="csv", now=NOW)
    assert out.getvalue().decode().splitlines() == [
        '"customer_id"',
        '"a"',
        '"c"',
        '"d"',
        '"f"',
    ]
    batches = list(engine.export_batches("grp = 1", ["city", "grp"], now=NOW))
    assert pa.Table.from_batches(batches).column_names == ["customer_id", "city", "grp"]


def test_empty_segment(engine: Engine, tmp_path) -> None:
    path = tmp_path / "none.parquet"
    report = engine.export("grp = 7", path, columns=["city"], now=NOW)
    assert report.rows == 0 and report.members == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == ["customer_id", "city"]
    out = io.BytesIO()
    engine.export("grp = 7", out, format="csv", columns=["city"], now=NOW)
    assert out.getvalue() == b'"customer_id","city"\n'


@pytest.mark.parametrize(
    ("columns", "where", "message"),
    [
        (["city", "cty"], "columns[1]", "unknown column 'cty' (did you mean 'city'?)"),
        (["city", "city"], "columns[1]", "listed twice"),
        (["customer_id"], "columns[0]", "always the first column"),
        ([""], "columns[0]", "expected a column name"),
    ],
)
def test_bad_columns_write_nothing(
    engine: Engine, tmp_path, columns, where, message
) -> None:
    path = tmp_path / "out.parquet"
    with pytest.raises(InvalidInput) as info:
        engine.export("grp = 1", path, columns=columns, now=NOW)
    assert info.value.where == where
    assert message in str(info.value)
    assert not path.exists()
    with pytest.raises(InvalidInput):
        engine.export_stream("grp = 1", format="csv", columns=columns, now=NOW)


def test_unknown_column_structure(engine: Engine) -> None:
    with pytest.raises(UnknownColumn) as info:
        engine.export_batches("grp = 1", ["city", "nope"], now=NOW)
    err = info.value
    assert (err.name, err.index, err.column) == ("nope", 1, "nope")
    assert "contact columns: city, grp, score, seen, tags, vip" in err.reason


def test_bad_format_and_chunk(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="format: unknown format 'xls'"):
        engine.export_stream("grp = 1", format="xls")
    with pytest.raises(InvalidInput, match="chunk_rows"):
        engine.export_batches("grp = 1", [], chunk_rows=0)


# -- a random table against the oracle ---------------------------------------------------
@st.composite
def contact_tables(draw):
    n = draw(st.integers(1, 30))
    rows = []
    for _ in range(n):
        rows.append(
            dict(
                customer_id=f"k{draw(st.integers(0, 40))}",  # repeats: later rows win
                grp=draw(st.none() | st.integers(0, 2)),
                score=draw(st.none() | st.floats(-1e6, 1e6, allow_nan=False)),
                vip=draw(st.none() | st.booleans()),
                seen=draw(
                    st.none()
                    | st.integers(0, 4_000_000_000_000).map(
                        lambda ms: datetime.fromtimestamp(ms / 1000, UTC)
                    )
                ),
                city=draw(st.none() | st.sampled_from(["A", "B", "Ç", "a,b", ""])),
                tags=draw(
                    st.none()
                    | st.lists(st.sampled_from(["t2", "t1", "ä", "T3"]), unique=True)
                ),
            )
        )
    return rows, draw(st.integers(1, 9))


@given(contact_tables())
def test_random_tables_match_the_oracle(case) -> None:
    rows, chunk = case
    engine = Engine()
    # one upsert per row: a batch may not name a contact twice
    for row in rows:
        engine.upsert_contacts(pa.Table.from_pylist([row], schema=TYPES))
    expected = oracle(rows, lambda r: r["grp"] == 1)
    for r in expected:
        if r["tags"] is not None:  # a tag set, exported in alphabetical order
            r["tags"] = sorted(r["tags"])  # timestamps are kept to the millisecond
        if r["seen"] is not None:
            r["seen"] = r["seen"].replace(
                microsecond=r["seen"].microsecond // 1000 * 1000
            )
    out = io.BytesIO()
    engine.export("grp = 1", out, format="parquet", columns=COLUMNS, chunk_rows=chunk)
    assert pq.read_table(io.BytesIO(out.getvalue())).to_pylist() == expected
    got = pa.Table.from_batches(
        list(engine.export_batches("grp = 1", COLUMNS, chunk_rows=chunk)),
        schema=pq.read_schema(io.BytesIO(out.getvalue())),
    )
    assert got.num_rows == len(expected)
    assert all(
        b.num_rows <= chunk
        for b in engine.export_batches("grp = 1", COLUMNS, chunk_rows=chunk)
    )


def test_memory_stays_flat(tmp_path) -> None:
    """200k members, 5 columns: the peak of Python / numpy allocations during the
    export is a small fraction of the whole table (one chunk of 2048 rows at a time)."""
    n = 200_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "customer_id": pa.array([f"c{i:09d}" for i in range(n)]),
            "city": pa.array(rng.choice(["Kazan", "Omsk", "Moscow"], n)),
            "email": pa.array([f"user{i}@example.com" for i in range(n)]),
            "rating": pa.array(rng.integers(0, 10, n)),
            "vip": pa.array(rng.random(n) < 0.5),
            "seen": pa.array(rng.integers(0, 2**40, n), pa.timestamp("ms", tz="UTC")),
        }
    )
    engine = Engine()
    engine.upsert_contacts(table)
    columns = ["city", "email", "rating", "vip", "seen"]
    whole = sum(
        b.nbytes for b in engine.export_batches("rating >= 0", columns, chunk_rows=n)
    )
    for fmt in ("csv", "parquet"):
        arrow_peak = 0
        base = pa.total_allocated_bytes()
        tracemalloc.start()
        size = 0
        for piece in engine.export_stream(
            "rating >= 0", format=fmt, columns=columns, chunk_rows=2048
        ):
            size += len(piece)
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - base)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert size > 0
        assert peak < whole / 8, (fmt, peak, whole)
        assert arrow_peak < whole / 8, (fmt, arrow_peak, whole)


# -- retargeting -------------------------------------------------------------------------
def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# email / phone as stored, the normalised forms written by hand (None: not an address),
# and the consent flags.
PEOPLE = [
    # r1: email reachable (valid + subscribed); has a phone, no sms consent
    ("r1", " Ann@Example.COM ", "ann@example.com", "+7 (912) 345-67-89", "79123456789", True, False),
    # r2: email unsubscribed; phone as a national number
    ("r2", "bob@mail.ru", "bob@mail.ru", "8 912 000 11 22", "79120001122", False, True),
    # r3: consent but no address (identity refuses invalid ones at ingest; the kernel's
    # own tests cover them)
    ("r3", None, None, None, None, True, None),
    # r4: no email at all, NULL consents; a phone with 00 prefix
    ("r4", None, None, "0044 20 7946 0958", "442079460958", None, None),
    # r5: nothing to match by
    ("r5", None, None, None, None, False, False),
    # r6: not a member (grp 0)
    ("r6", "zed@x.org", "zed@x.org", None, None, False, False),
]  # fmt: skip


@pytest.fixture
def people() -> Engine:
    e = Engine()
    e.upsert_contacts(
        pa.Table.from_pylist(
            [
                dict(customer_id=cid, grp=0 if cid == "r6" else 1, email=email,
                     phone=phone, email_subscribed=es, sms_subscribed=ss)
                for cid, email, _, phone, _, es, ss in PEOPLE
            ],
            schema=pa.schema([("customer_id", pa.string()), ("grp", pa.int64()),
                              ("email", pa.string()), ("phone", pa.string()),
                              ("email_subscribed", pa.bool_()),
                              ("sms_subscribed", pa.bool_())]),
        )
    )  # fmt: skip
    return e


def expected_hashes(channel: str) -> list[tuple[str | None, str | None]]:
    out = []
    for cid, _, email, _, phone, es, ss in PEOPLE:
        if cid == "r6":
            continue
        address, consent = (email, es) if channel == "email" else (phone, ss)
        if channel == "push":
            address, consent = "n/a", None
        if address is not None and consent:
            continue  # reachable
        row = (sha(email) if email else None, sha(phone) if phone else None)
        if row != (None, None):
            out.append(row)
    return out


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_retargeting_hashes(people: Engine, channel: str, tmp_path) -> None:
    expected = expected_hashes(channel)
    batches = list(people.retargeting_hashes("grp = 1", channel))
    got = [
        (r["email_sha256"], r["phone_sha256"]) for b in batches for r in b.to_pylist()
    ]
    assert got == expected
    path = tmp_path / "h.txt"
    report = people.export_retargeting("grp = 1", path, channel)
    lines = [h for row in expected for h in row if h]
    assert path.read_text().splitlines() == lines
    assert (report.rows, report.members, report.format) == (len(lines), 5, "lines")
    path = tmp_path / "h.csv"
    report = people.export_retargeting("grp = 1", path, channel, chunk_rows=2)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["email_sha256", "phone_sha256"]
    assert [tuple(c or None for c in r) for r in rows[1:]] == expected
    assert report.rows == len(expected)


def test_retargeting_email_channel_by_hand(people: Engine) -> None:
    """Spelled out: r2 (unsubscribed), r3 (no address) and r4 (no email) cannot be
    reached by email; r3 has no identifier, so r2 and r4 are exported."""
    rows = [
        r for b in people.retargeting_hashes("grp = 1", "email") for r in b.to_pylist()
    ]
    assert rows == [
        {"email_sha256": sha("bob@mail.ru"), "phone_sha256": sha("79120001122")},
        {"email_sha256": None, "phone_sha256": sha("442079460958")},
    ]


def test_retargeting_one_identifier(people: Engine) -> None:
    out = io.BytesIO()
    people.export_retargeting(
        "grp = 1", out, "email", format="csv", identifiers=["phone"]
    )
    assert out.getvalue().decode().splitlines() == [
        "phone_sha256",
        sha("79120001122"),
        sha("442079460958"),
    ]


def test_retargeting_without_consent_column() -> None:
    """No consent recorded is no consent: every member is unreachable."""
    e = Engine()
    e.upsert_contacts([{"customer_id": "a", "email": "A@B.C"}])
    rows = [
        r
        for b in e.retargeting_hashes("email is not null", "email")
        for r in b.to_pylist()
    ]
    assert rows == [{"email_sha256": sha("a@b.c"), "phone_sha256": None}]


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"channel": "fax"}, "channel"),
        ({"channel": "email", "identifiers": ["email", "email"]}, "identifiers[1]"),
        ({"channel": "email", "identifiers": ["id"]}, "identifiers[0]"),
        ({"channel": "email", "identifiers": []}, "identifiers"),
        ({"channel": "email", "format": "xml"}, "format"),
    ],
)
def test_retargeting_bad_input(people: Engine, kwargs, where) -> None:
    out = io.BytesIO()
    with pytest.raises(InvalidInput) as info:
        people.export_retargeting("grp = 1", out, **kwargs)
    assert info.value.where == where
    assert out.getvalue() == b""
