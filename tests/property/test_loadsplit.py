"""segd.native.loadsplit against plain numpy: the counting-sort split by type and the
dictionary expansion a bulk load's chunks go through (``ingest.split_by_type``,
``columns.encode_text``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segd.native import NO_CODE, loadsplit

NO = np.uint32(NO_CODE)


@st.composite
def typed_rows(draw):
    n_types = draw(st.integers(1, 40))
    n = draw(st.integers(0, 300))
    types = draw(hnp.arrays(np.uint32, n, elements=st.integers(0, n_types - 1)))
    return types, n_types


@given(typed_rows())
@settings(max_examples=200, deadline=None)
def test_type_positions_is_a_stable_sort(case) -> None:
    types, n_types = case
    pos, bounds = loadsplit.type_positions(types, n_types)
    order = np.argsort(types, kind="stable")  # the oracle: slot k holds row order[k]
    expect_pos = np.empty(len(types), np.int64)
    expect_pos[order] = np.arange(len(types))
    assert pos.dtype == np.uint32
    assert np.array_equal(pos, expect_pos)
    assert np.array_equal(
        bounds, np.searchsorted(types[order], np.arange(n_types + 1), side="left")
    )


@given(typed_rows(), st.data())
@settings(max_examples=200, deadline=None)
def test_scatter_matches_numpy_gather(case, data) -> None:
    types, n_types = case
    n = len(types)
    pos, bounds = loadsplit.type_positions(types, n_types)
    order = np.argsort(types, kind="stable")
    codes = data.draw(
        hnp.arrays(np.uint32, n, elements=st.sampled_from([0, 1, 7, 2**31, NO_CODE]))
    )
    amounts = data.draw(
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, -1.5, 1e300, np.nan]))
    )
    ts = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**62), 2**62)))
    for col, present_of in (
        (codes, lambda c: c != NO),
        (amounts, lambda c: ~np.isnan(c)),
        (ts, lambda c: np.ones(len(c), bool)),
        (ts.view(np.uint64), lambda c: np.ones(len(c), bool)),
    ):
        out, present = loadsplit.scatter(col, pos, types, n_types)
        assert out.dtype == col.dtype
        np.testing.assert_array_equal(out, col[order])
        grouped = out
        expect = [
            bool(present_of(grouped[bounds[t] : bounds[t + 1]]).any())
            for t in range(n_types)
        ]
        assert present.tolist() == expect


def test_type_positions_refuses_a_code_out_of_range() -> None:
    with pytest.raises(ValueError, match="n_types"):
        loadsplit.type_positions(np.array([0, 3], np.uint32), 3)


def test_scatter_refuses_lengths_that_differ() -> None:
    types = np.array([0, 1], np.uint32)
    pos, _ = loadsplit.type_positions(types, 2)
    with pytest.raises(ValueError, match="differ in length"):
        loadsplit.scatter(np.zeros(3, np.uint32), pos, types, 2)


@st.composite
def dictionary_rows(draw):
    n_entries = draw(st.integers(0, 30))
    n = draw(st.integers(0, 200))
    if n_entries == 0:
        idx = [None] * n
    else:
        idx = draw(
            st.lists(
                st.one_of(st.none(), st.integers(0, n_entries - 1)),
                min_size=n,
                max_size=n,
            )
        )
    offset = draw(st.integers(0, min(n, 13)))
    return idx, n_entries, offset


@given(dictionary_rows(), st.data())
@settings(max_examples=200, deadline=None)
def test_dictionary_kernels_match_numpy(case, data) -> None:
    idx, n_entries, offset = case
    arr = pa.array(idx, pa.int32()).slice(offset)  # a non-zero offset, as Arrow slices
    raw = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr), offset=offset * 4)
    bits = arr.buffers()[0] if arr.null_count else None
    valid_bits = None if bits is None else np.frombuffer(bits, np.uint8)
    valid = np.asarray(arr.is_valid(), dtype=bool)
    filled = np.asarray(arr.fill_null(0), dtype=np.int64)
    used = loadsplit.used_entries(raw, valid_bits, arr.offset, n_entries)
    expect_used = np.zeros(n_entries, bool)
    expect_used[filled[valid]] = True
    assert np.array_equal(used, expect_used)
    lookup = data.draw(
        hnp.arrays(np.uint32, n_entries, elements=st.integers(0, NO_CODE))
    )
    codes = loadsplit.expand_codes(raw, valid_bits, arr.offset, lookup)
    expect = np.full(len(arr), NO, np.uint32)
    expect[valid] = lookup[filled[valid]]
    assert np.array_equal(codes, expect)


def test_dictionary_kernels_name_the_row_of_a_bad_index() -> None:
    idx = np.array([0, 1, 5], np.int32)
    with pytest.raises(ValueError, match="row 2"):
        loadsplit.used_entries(idx, None, 0, 2)
    with pytest.raises(ValueError, match="row 2"):
        loadsplit.expand_codes(idx, None, 0, np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="short"):
        nine = np.zeros(9, np.int32)
        loadsplit.expand_codes(
            nine, np.full(1, 255, np.uint8), 0, np.zeros(6, np.uint32)
        )


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_remap_codes_matches_numpy(data) -> None:
    m = data.draw(st.integers(0, 40))
    mapping = data.draw(hnp.arrays(np.uint32, m, elements=st.integers(0, NO_CODE)))
    choices = st.integers(0, m - 1) if m else st.just(NO_CODE)
    codes = data.draw(
        hnp.arrays(
            np.uint32,
            st.integers(0, 200),
            elements=st.one_of(choices, st.just(NO_CODE)),
        )
    )
    out = loadsplit.remap_codes(codes, mapping)
    ext = np.append(mapping, NO).astype(np.uint32)
    expect = ext[np.where(codes == NO, m, codes).astype(np.int64)]
    assert np.array_equal(out, expect)
    assert loadsplit.is_identity(mapping) == np.array_equal(
        mapping, np.arange(m, dtype=np.uint32)
    )


def test_remap_codes_names_the_row_of_a_code_outside_the_mapping() -> None:
    with pytest.raises(ValueError, match="row 1"):
        loadsplit.remap_codes(np.array([0, 3], np.uint32), np.zeros(3, np.uint32))
    assert loadsplit.is_identity(np.arange(10**5, dtype=np.uint32))
    assert not loadsplit.is_identity(np.arange(1, 10**5, dtype=np.uint32))


# -- sparse columns (ingest.SPARSE_SPLIT) -----------------------------------------------
@st.composite
def sparse_rows(draw):
    """A column of n rows (at most ~300, so several 64-row words and a partial one),
    each valid with a drawn probability (mostly low: the sparse columns), its type,
    and a byte-aligned offset into the validity bitmap, as Arrow slices give."""
    n_types = draw(st.integers(1, 12))
    n = draw(st.integers(0, 300))
    p = draw(st.sampled_from([0.0, 0.01, 0.05, 0.3, 1.0]))
    valid = (
        np.asarray(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), dtype=float)
        < p
        if n
        else np.zeros(0, bool)
    )
    types = draw(hnp.arrays(np.uint32, n, elements=st.integers(0, n_types - 1)))
    offset = draw(st.sampled_from([0, 8, 64, 72]))
    return valid, types, n_types, offset


def _bitmap(valid: np.ndarray, offset: int) -> np.ndarray:
    """An Arrow-style validity bitmap holding `valid` from bit `offset`, with a few
    trailing bytes of set bits past it (which the kernels must not read as rows)."""
    bits = np.concatenate([np.ones(offset, bool), valid, np.ones(24, bool)])
    return np.packbits(bits, bitorder="little")


@given(sparse_rows(), st.data())
@settings(max_examples=300, deadline=None)
def test_sparse_kernels_match_expand_and_scatter(case, data) -> None:
    """scatter_valid (dictionary indices, or one code per valid row) and
    sparse_used_entries against the dense kernels and numpy: present per type equal,
    and every present type's slots equal the plain scatter of the expanded codes."""
    valid, types, n_types, offset = case
    n = len(valid)
    bitmap = _bitmap(valid, offset)
    pos, bounds = loadsplit.type_positions(types, n_types)
    n_entries = data.draw(st.integers(1, 20))
    idx = data.draw(hnp.arrays(np.int32, n, elements=st.integers(0, n_entries - 1)))
    idx[~valid] = data.draw(st.sampled_from([0, -7, 10**6]))  # NULL rows: anything
    lookup = data.draw(
        hnp.arrays(
            np.uint32, n_entries, elements=st.sampled_from([0, 3, 2**31, NO_CODE])
        )
    )
    expect_used = np.zeros(n_entries, bool)
    expect_used[idx[valid]] = True
    assert np.array_equal(
        loadsplit.sparse_used_entries(idx, bitmap, offset, n_entries), expect_used
    )
    codes = np.full(n, NO, np.uint32)
    codes[valid] = lookup[idx[valid]]
    expect, expect_present = loadsplit.scatter(codes, pos, types, n_types)
    per_row = np.ascontiguousarray(codes[valid])
    for got, present in (
        loadsplit.scatter_valid(lookup, bitmap, offset, n, pos, types, bounds, idx),
        loadsplit.scatter_valid(per_row, bitmap, offset, n, pos, types, bounds),
    ):
        assert np.array_equal(present, expect_present)
        for t in np.flatnonzero(present):
            a, b = bounds[t], bounds[t + 1]
            assert np.array_equal(got[a:b], expect[a:b])
    assert loadsplit.is_sparse(bitmap, offset, n) == (
        n > 0 and int(valid.sum()) * 4 < n
    )


def test_sparse_kernels_refuse_what_they_cannot_read() -> None:
    valid = np.zeros(1, np.uint8)
    valid[0] = 0b101
    types = np.zeros(3, np.uint32)
    pos, bounds = loadsplit.type_positions(types, 1)
    idx = np.array([0, 0, 9], np.int32)
    with pytest.raises(ValueError, match="row 2"):
        loadsplit.sparse_used_entries(idx, valid, 0, 2)
    with pytest.raises(ValueError, match="row 2"):
        loadsplit.scatter_valid(
            np.zeros(2, np.uint32), valid, 0, 3, pos, types, bounds, idx
        )
    with pytest.raises(ValueError, match="more valid rows"):
        loadsplit.scatter_valid(np.zeros(1, np.uint32), valid, 0, 3, pos, types, bounds)
    with pytest.raises(ValueError, match="multiple of 8"):
        loadsplit.sparse_used_entries(idx, valid, 3, 2)
    with pytest.raises(ValueError, match="short"):
        loadsplit.is_sparse(valid, 0, 9)
    assert not loadsplit.is_sparse(valid, 3, 3)  # not byte aligned: the dense kernels
    assert not loadsplit.is_sparse(None, 0, 3)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_amounts_with_nan_matches_numpy(data) -> None:
    """NULL -> NaN, valid values kept bit for bit, the first valid non-finite row."""
    n = data.draw(st.integers(0, 200))
    values = data.draw(
        st.lists(
            st.one_of(
                st.none(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    offset = data.draw(st.integers(0, 13))
    arr = pa.array([1.0] * offset + values, pa.float64()).slice(offset)
    raw = np.frombuffer(arr.buffers()[1], np.float64, count=n, offset=offset * 8)
    bits = arr.buffers()[0]
    if bits is None:  # no NULL drawn: an all-valid bitmap
        bits = pa.py_buffer(np.packbits(np.ones(offset + n, bool), bitorder="little"))
    out, bad = loadsplit.amounts_with_nan(raw, np.frombuffer(bits, np.uint8), offset)
    valid = np.array([v is not None for v in values], bool)
    finite = np.isfinite(raw)
    bad_rows = np.flatnonzero(valid & ~finite)
    assert bad == (int(bad_rows[0]) if len(bad_rows) else -1)
    if bad < 0:
        expect = np.where(valid, raw, np.nan)
        assert np.array_equal(out.view(np.uint64)[valid], expect.view(np.uint64)[valid])
        assert np.isnan(out[~valid]).all()
