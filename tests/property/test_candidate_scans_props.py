"""The candidate paths of the attribute kernels (``columns.interval_scan``,
``ratio_interval_scan``, ``code_mask_scan`` with ``candidates``: branch-free, a bit OR-ed
per candidate whether it matches or not) against a plain numpy oracle: for any column
(NULLs, NaN, zero denominators, NULL codes, codes beyond the mask), intervals and sorted
candidates, exactly the candidates that match get their bit, other bits already set stay
set, and no other bit is touched."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import columns as colk

NO_CODE = 0xFFFFFFFF


def _words(n: int, preset: np.ndarray) -> np.ndarray:
    out = np.zeros((n + 63) // 64 + 1, dtype=np.uint64)
    for c in np.flatnonzero(preset):
        out[c >> 6] |= np.uint64(1) << np.uint64(c & 63)
    return out


def _bits(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n].astype(bool)


@st.composite
def column_case(draw):
    n = draw(st.integers(1, 200))
    cand = np.array(
        sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))), dtype=np.uint32
    )
    preset = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return n, cand, preset


def _intervals(draw) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(1, 3))
    lo = draw(st.lists(st.integers(-5, 5), min_size=k, max_size=k))
    width = draw(st.lists(st.integers(0, 4), min_size=k, max_size=k))
    los = np.array(lo, dtype=np.float64)
    his = los + np.array(width, dtype=np.float64)
    if draw(st.booleans()):
        his[-1] = np.inf
    return los, his


@settings(max_examples=100, deadline=None)
@given(case=column_case(), data=st.data())
def test_interval_candidates_vs_numpy(case, data) -> None:
    n, cand, preset = case
    values = np.array(
        data.draw(
            st.lists(
                st.one_of(st.integers(-8, 8).map(float), st.just(np.nan)),
                min_size=n,
                max_size=n,
            )
        )
    )
    valid = np.array(
        data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.uint8
    )
    lo, hi = _intervals(data.draw)
    with_valid = data.draw(st.booleans())
    out = _words(n, preset)
    colk.interval_scan(
        values, lo, hi, out, valid=valid if with_valid else None, candidates=cand
    )
    hit = np.zeros(n, dtype=bool)
    for a, b in zip(lo, hi, strict=True):
        hit |= (values >= a) & (values <= b)
    if with_valid:
        hit &= valid != 0
    want = preset.copy()
    want[cand] |= hit[cand]
    assert np.array_equal(_bits(out, n), want)
    assert not _bits(out, len(out) * 64)[n:].any()


@settings(max_examples=100, deadline=None)
@given(case=column_case(), data=st.data())
def test_ratio_candidates_vs_numpy(case, data) -> None:
    n, cand, preset = case
    num = np.array(
        data.draw(st.lists(st.integers(-20, 20), min_size=n, max_size=n)),
        dtype=np.float64,
    )
    den = np.array(
        data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.uint32
    )
    lo, hi = _intervals(data.draw)
    out = _words(n, preset)
    colk.ratio_interval_scan(num, den, lo, hi, out, candidates=cand)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    hit = np.zeros(n, dtype=bool)
    for a, b in zip(lo, hi, strict=True):
        hit |= (ratio >= a) & (ratio <= b)
    hit &= den != 0
    want = preset.copy()
    want[cand] |= hit[cand]
    assert np.array_equal(_bits(out, n), want)


@settings(max_examples=100, deadline=None)
@given(case=column_case(), data=st.data())
def test_code_mask_candidates_vs_numpy(case, data) -> None:
    n, cand, preset = case
    m = data.draw(st.integers(1, 6))
    codes = np.array(
        data.draw(
            st.lists(
                st.one_of(st.integers(0, 8), st.just(NO_CODE)), min_size=n, max_size=n
            )
        ),
        dtype=np.uint32,
    )
    mask = np.array(
        data.draw(st.lists(st.integers(0, 2), min_size=m, max_size=m)), dtype=np.uint8
    )
    out = _words(n, preset)
    colk.code_mask_scan(codes, mask, out, candidates=cand)
    inside = codes < m
    hit = np.zeros(n, dtype=bool)
    hit[inside] = mask[codes[inside]] != 0
    want = preset.copy()
    want[cand] |= hit[cand]
    assert np.array_equal(_bits(out, n), want)
