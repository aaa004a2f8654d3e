"""segd.pqdict reads dictionary-encoded Parquet text columns itself (Arrow would re-hash
each dictionary page): the tables it gives must equal Arrow's reader's, whatever the
writer's options (codec, data page version and size, NULLs, required columns, a
dictionary that overflowed into PLAIN pages); and its two native kernels must agree with
plain Python decoders written from the Parquet spec."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import pqdict
from segd.native.pqdict import plain_byte_array, rle_hybrid


@pytest.fixture(autouse=True)
def _every_dictionary(monkeypatch):
    """The fast path for every dictionary column, however small its dictionary page."""
    monkeypatch.setattr(pqdict, "MIN_DICTIONARY_BYTES", 0)


# -- oracles: the encodings written by hand from the spec --------------------------------
def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode_runs(runs: list[tuple[str, list[int]]], width: int) -> bytes:
    """The RLE / bit-packed hybrid encoding of `runs` ("rle", [v] * k) or ("bp", values,
    a multiple of 8 long)."""
    out = bytearray()
    for kind, values in runs:
        if kind == "rle":
            out += _uleb(len(values) << 1)
            out += values[0].to_bytes((width + 7) // 8, "little")
        else:
            out += _uleb(((len(values) // 8) << 1) | 1)
            bits = 0
            for i, v in enumerate(values):
                bits |= v << (i * width)
            out += bits.to_bytes(len(values) * width // 8, "little")
    return bytes(out)


@st.composite
def _runs(draw):
    width = draw(st.integers(0, 32))
    top = (1 << width) - 1
    runs = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            runs.append(("rle", [draw(st.integers(0, top))] * draw(st.integers(1, 40))))
        else:
            k = 8 * draw(st.integers(1, 5))
            runs.append(
                ("bp", draw(st.lists(st.integers(0, top), min_size=k, max_size=k)))
            )
    return width, runs


@settings(max_examples=200, deadline=None)
@given(_runs(), st.data())
def test_rle_hybrid_matches_the_spec(case, data):
    width, runs = case
    expected = [v for _, values in runs for v in values]
    buf = np.frombuffer(_encode_runs(runs, width), dtype=np.uint8)
    n = data.draw(st.integers(0, len(expected)))
    got, used = rle_hybrid(buf, width, n)
    # int32 reinterpretation of values >= 2^31 (bit width 32)
    want = np.array(expected[:n], dtype=np.uint32).view(np.int32)
    assert got.tolist() == want.tolist()
    assert used <= len(buf)
    if n == len(expected):
        assert used == len(buf)


@settings(max_examples=100, deadline=None)
@given(_runs())
def test_rle_hybrid_refuses_a_truncated_buffer(case):
    width, runs = case
    raw = _encode_runs(runs, width)
    n = sum(len(v) for _, v in runs)
    for cut in range(len(raw)):
        buf = np.frombuffer(raw[:cut], dtype=np.uint8)
        try:
            got, used = rle_hybrid(buf, width, n)
        except ValueError:
            continue
        # a cut that only drops padding bits of the last bit-packed group still decodes
        assert used <= cut
        assert (
            got.tolist()
            == np.array([v for _, vs in runs for v in vs][:n], dtype=np.uint32)
            .view(np.int32)
            .tolist()
        )


def test_rle_hybrid_refuses_bad_widths():
    with pytest.raises(ValueError, match="bit width"):
        rle_hybrid(np.array([2, 1], np.uint8), 33, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=40), st.binary(max_size=5))
def test_plain_byte_array_matches_the_spec(values, tail):
    raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
    page = np.frombuffer(raw + tail, dtype=np.uint8)
    offsets, data, used = plain_byte_array(page, len(values))
    assert used == len(raw)
    got = [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(values))]
    assert got == values
    for cut in range(len(raw)):
        with pytest.raises(ValueError):
            plain_byte_array(np.frombuffer(raw[:cut], dtype=np.uint8), len(values))


# -- whole files: pqdict's tables equal Arrow's ---------------------------------------------
TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "bb", "é", "c00012345", "x" * 40]),
    st.text(max_size=12),
)


@st.composite
def _table(draw):
    n = draw(st.integers(0, 300))
    ncols = draw(st.integers(1, 3))
    columns, fields = {}, []
    for j in range(ncols):
        pool = draw(st.lists(TEXT, min_size=1, max_size=50))
        values = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        required = draw(st.booleans()) and all(v is not None for v in values)
        arr = pa.array(values, pa.string())
        if draw(st.booleans()):
            arr = arr.dictionary_encode()
        name = f"c{j}"
        columns[name] = arr
        fields.append(pa.field(name, arr.type, nullable=not required))
    columns["n"] = pa.array(range(n), pa.int64())
    fields.append(pa.field("n", pa.int64()))
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))


@settings(max_examples=60, deadline=None)
@given(
    _table(),
    st.sampled_from(["zstd", "snappy", "gzip", "none"]),
    st.sampled_from(["1.0", "2.0"]),
    st.integers(1, 120),
    st.sampled_from([64, 1 << 20]),
    st.sampled_from([16, 1 << 20]),
    st.booleans(),
)
def test_row_groups_equal_arrows(
    table, codec, version, group, page, dict_limit, parallel
):

    saved = pqdict.PARALLEL_COLUMNS
    pqdict.PARALLEL_COLUMNS = parallel  # a column on the helper thread, or none
    try:
        _row_groups_equal_arrows(table, codec, version, group, page, dict_limit)
    finally:
        pqdict.PARALLEL_COLUMNS = saved


def _row_groups_equal_arrows(table, codec, version, group, page, dict_limit):
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.parquet")
        pq.write_table(
            table,
            path,
            row_group_size=group,
            compression=codec,
            data_page_version=version,
            data_page_size=page,
            dictionary_pagesize_limit=dict_limit,
        )
        pf = pq.ParquetFile(path)
        with open(path, "rb") as f:
            groups = list(pqdict.iter_row_groups(pf, f))
        assert len(groups) == pf.metadata.num_row_groups
        for g, got in enumerate(groups):
            want = pf.read_row_group(g)
            assert got.schema == want.schema
            for name in want.column_names:
                a = got.column(name).combine_chunks()
                b = want.column(name).combine_chunks()
                assert a.equals(b), (name, a, b)
        columns = ["c0", "n"]
        with open(path, "rb") as f:
            some = list(pqdict.iter_row_groups(pf, f, columns))
        for g, got in enumerate(some):
            assert got.column_names == columns
            assert got.equals(pf.read_row_group(g, columns=columns))


def _chunk_of(pf, name, g=0):
    i, max_def = pqdict._fast_columns(pf, [name])[name]
    return (
        pf.metadata.row_group(g).column(i),
        max_def,
        pf.metadata.row_group(g).num_rows,
    )


def test_the_fast_path_reads_dictionary_columns(tmp_path):
    """Not just a fallback: a dictionary column with NULLs, in v1 and v2 pages, many
    pages, is decoded by pqdict itself."""
    values = pa.array([None if i % 7 == 0 else f"c{i % 1000}" for i in range(20_000)])
    table = pa.table({"cid": values.dictionary_encode()})
    for version in ("1.0", "2.0"):
        path = tmp_path / f"v{version}.parquet"
        pq.write_table(table, path, data_page_size=4096, data_page_version=version)
        pf = pq.ParquetFile(path)
        with open(path, "rb") as f:
            arr = pqdict.read_dictionary_column(f, *_chunk_of(pf, "cid"))
        assert arr.equals(pf.read_row_group(0).column(0).chunk(0))
        assert arr.null_count == values.null_count


def test_a_helper_column_arrow_must_read(tmp_path):
    """``PARALLEL_COLUMNS``: the column decoded on the helper thread fell back to PLAIN
    pages (the fast path refuses it): Arrow reads it, in its place, and the row
    groups equal Arrow's."""
    n = 5000
    table = pa.table(
        {
            "cid": pa.array([f"id{i}" for i in range(n)]),
            "item": pa.array([f"i{i % 40}" for i in range(n)]),
            "n": pa.array(range(n)),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, dictionary_pagesize_limit=256, row_group_size=2000)
    pf = pq.ParquetFile(path)
    assert "PLAIN" in pf.metadata.row_group(0).column(0).encodings
    assert pqdict.PARALLEL_COLUMNS
    with open(path, "rb") as f:
        groups = list(pqdict.iter_row_groups(pf, f))
    for g, got in enumerate(groups):
        assert got.equals(pf.read_row_group(g))


def test_plain_fallback_pages_are_refused(tmp_path):
    """A writer whose dictionary outgrew its page limit wrote PLAIN data pages: the
    fast path refuses the chunk (Arrow's reader then reads it)."""
    values = pa.array([f"id{i}" for i in range(5000)])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"cid": values}), path, dictionary_pagesize_limit=256)
    pf = pq.ParquetFile(path)
    group = pf.metadata.row_group(0)
    assert "PLAIN" in group.column(0).encodings
    with open(path, "rb") as f, pytest.raises(pqdict._Unsupported):
        pqdict.read_dictionary_column(f, group.column(0), 1, group.num_rows)


def test_a_corrupt_page_header_goes_to_arrow(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"cid": pa.array(["a", "b"] * 50).dictionary_encode()}), path
    )
    pf = pq.ParquetFile(path)
    meta, max_def, rows = _chunk_of(pf, "cid")
    raw = bytearray(path.read_bytes())
    start = meta.dictionary_page_offset
    raw[start : start + 6] = b"\xff" * 6
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(raw))
    with open(bad, "rb") as f, pytest.raises(pqdict._Unsupported):
        pqdict.read_dictionary_column(f, meta, max_def, rows)


def test_thrift_struct_truncated():
    with pytest.raises(pqdict._Unsupported):
        pqdict._struct(b"\x15\x00\x15", 0)
