"""The fused two-model co-occurrence kernel against the single-model kernels.

``kernels.cooccur_pair`` (both neighbour models in one pass over the baskets, items
claimed by several threads from a shared counter) must give exactly what
``kernels.transpose`` + ``kernels.cooccur`` give for each weighting alone: the same
neighbours, in the same order, with the same float32 scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd.native import recs as kernels
from segd.recs import RecsConfig, _bit_weights, _neighbours_pair


def _single(offsets, items, bits, id_rank, weights, k, shrink):
    wb = _bit_weights(weights)
    item_off, contacts, item_w, norms = kernels.transpose(
        offsets, items, bits, wb, len(id_rank)
    )
    return kernels.cooccur(
        offsets, items, bits, wb, item_off, contacts, item_w, norms, id_rank, k, shrink
    )


@st.composite
def baskets(draw):
    n_items = draw(st.integers(1, 40))
    n_contacts = draw(st.integers(0, 60))
    sizes = draw(st.lists(st.integers(0, 8), min_size=n_contacts, max_size=n_contacts))
    items, bits = [], []
    for size in sizes:  # distinct items per basket, as basket_dedup leaves them
        chosen = draw(st.permutations(range(n_items)))[: min(size, n_items)]
        items += chosen
        bits += draw(
            st.lists(st.integers(1, 7), min_size=len(chosen), max_size=len(chosen))
        )
    kept = [min(s, n_items) for s in sizes]
    offsets = np.zeros(n_contacts + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    id_rank = np.asarray(draw(st.permutations(range(n_items))), dtype=np.uint32)
    k = draw(st.integers(1, 6))
    shrink = draw(st.sampled_from([0.0, 2.0, 0.5]))
    weights = draw(
        st.sampled_from(
            [
                ((1.0, 0.5, 0.25), (0.0, 0.5, 1.0)),  # the defaults
                ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),  # many ties
                ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),  # disjoint entries
                ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),  # one weighting empty
            ]
        )
    )
    return (
        offsets,
        np.asarray(items, dtype=np.uint32),
        np.asarray(bits, dtype=np.uint8),
        id_rank,
        k,
        shrink,
        weights,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baskets())
def test_pair_equals_each_single_model(case) -> None:
    offsets, items, bits, id_rank, k, shrink, (w_rel, w_alt) = case
    config = RecsConfig(
        neighbours=k, shrink=shrink, related_weights=w_rel, alternative_weights=w_alt
    )
    related, alternatives = _neighbours_pair(offsets, items, bits, id_rank, config)
    for got, weights in ((related, w_rel), (alternatives, w_alt)):
        want = _single(offsets, items, bits, id_rank, weights, k, shrink)
        assert np.array_equal(got.offsets, want[0])
        assert np.array_equal(got.items, want[1])
        assert np.array_equal(got.scores, want[2])


def test_threads_split_items_and_agree() -> None:
    """Many items (several chunks per thread), one thread vs several: the same model."""
    rng = np.random.default_rng(7)
    n_items, n_contacts = 1000, 3000
    sizes = rng.integers(0, 30, n_contacts)
    offsets = np.zeros(n_contacts + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    items = np.concatenate(
        [rng.choice(n_items, s, replace=False) for s in sizes]
    ).astype(np.uint32)
    bits = rng.integers(1, 8, len(items)).astype(np.uint8)
    id_rank = rng.permutation(n_items).astype(np.uint32)
    config = RecsConfig()
    import segd.recs as recs

    models = []
    for threads in (1, 2, 3):
        old = recs.NEIGHBOUR_THREADS
        recs.NEIGHBOUR_THREADS = threads
        try:
            models.append(_neighbours_pair(offsets, items, bits, id_rank, config))
        finally:
            recs.NEIGHBOUR_THREADS = old
    for other in models[1:]:
        for a, b in zip(models[0], other, strict=True):
            assert np.array_equal(a.offsets, b.offsets)
            assert np.array_equal(a.items, b.items)
            assert np.array_equal(a.scores, b.scores)
    want = _single(offsets, items, bits, id_rank, config.related_weights, 40, 2.0)
    assert np.array_equal(models[0][0].items, want[1])


def test_bad_arguments_are_refused() -> None:
    offsets = np.array([0, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="too large to pack"):
        kernels.pack_baskets(
            np.array([1, 1 << 29], dtype=np.uint32), np.array([1, 1], dtype=np.uint8)
        )
    packed = kernels.pack_baskets(
        np.array([0, 1], dtype=np.uint32), np.array([1, 1], dtype=np.uint8)
    )
    w = _bit_weights((1.0, 0.5, 0.25))
    item_off, contacts, cbits, na, nb = kernels.transpose_pair(offsets, packed, w, w, 2)
    counts = np.zeros((2, 2), dtype=np.uint32)
    with pytest.raises(ValueError, match="output slots"):
        kernels.cooccur_pair(
            offsets, packed, w, w, item_off, contacts, cbits, na, nb,
            np.arange(2, dtype=np.uint32), 3, 2.0, np.zeros(1, dtype=np.int64), counts,
            np.empty((2, 4), dtype=np.uint32), np.empty((2, 4), dtype=np.float32),
        )  # fmt: skip
    with pytest.raises(ValueError, match="k must be"):
        kernels.cooccur_pair(
            offsets, packed, w, w, item_off, contacts, cbits, na, nb,
            np.arange(2, dtype=np.uint32), 0, 2.0, np.zeros(1, dtype=np.int64), counts,
            np.empty((2, 0), dtype=np.uint32), np.empty((2, 0), dtype=np.float32),
        )  # fmt: skip
