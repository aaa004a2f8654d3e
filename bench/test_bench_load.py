"""Micro-benchmark: bulk load of 2M events (100k contacts) into a fresh engine.

Run: ``pytest bench/ --benchmark-only``. Items and contacts are loaded in the setup of
each round; only ``load_events`` is timed (from an in-memory Arrow table, so Parquet
decoding is not part of it — ``python -m segd.bench`` measures the load from files).
"""

from __future__ import annotations

import pytest

from segd import Engine
from segd.bench.kernel_world import World, world


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def test_load_events_2m(benchmark, w: World) -> None:
    data = w.data

    def fresh():
        eng = Engine()
        eng.load_items(data.items)
        eng.load_contacts(data.contacts)
        return (eng,), {}

    report = benchmark.pedantic(
        lambda eng: eng.load_events(data.events), setup=fresh, rounds=3, iterations=1
    )
    assert report.rows == data.events.num_rows
    benchmark.extra_info["events_per_s"] = round(report.rate)


@pytest.fixture(scope="module")
def ids_parquet(tmp_path_factory) -> str:
    """One 1M-row row group of 9-character customer ids, ~300k distinct, dictionary
    encoded (ZSTD), like a row group of the bench caches."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    ids = pa.array([f"c{v:08d}" for v in rng.integers(0, 300_000, 1_000_000)])
    path = tmp_path_factory.mktemp("pqdict") / "ids.parquet"
    pq.write_table(
        pa.table({"customer_id": ids.dictionary_encode()}),
        path,
        row_group_size=1 << 20,
        compression="zstd",
    )
    return str(path)


def test_pqdict_read_customer_ids(benchmark, ids_parquet: str) -> None:
    """segd.pqdict's decode of the column chunk (no re-hash of the dictionary page)."""
    import pyarrow.parquet as pq

    from segd import pqdict

    pf = pq.ParquetFile(ids_parquet)
    group = pf.metadata.row_group(0)
    i, max_def = pqdict._fast_columns(pf, ["customer_id"])["customer_id"]
    with open(ids_parquet, "rb") as f:
        arr = benchmark(
            pqdict.read_dictionary_column, f, group.column(i), max_def, group.num_rows
        )
    assert len(arr) == group.num_rows


def test_arrow_read_customer_ids(benchmark, ids_parquet: str) -> None:
    """The same column chunk through Arrow's reader (for comparison)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(ids_parquet)
    table = benchmark(pf.read_row_group, 0, columns=["customer_id"], use_threads=False)
    assert table.num_rows == pf.metadata.row_group(0).num_rows


@pytest.fixture(scope="module")
def chunk_columns():
    """One 1M-row chunk as the staged load sees it: type codes (12 types, skewed like
    the caches: mostly views), customer codes and one dimension column."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = 1_000_000
    p = np.array([60, 10, 8, 6, 4, 3, 3, 2, 1, 1, 1, 1], float)
    types = rng.choice(12, n, p=p / p.sum()).astype(np.uint32)
    cids = rng.integers(0, 950_000, n).astype(np.uint32)
    return types, cids


def test_split_by_type_counting_sort(benchmark, chunk_columns) -> None:
    """segd.native.loadsplit: slots by type, then one column scattered (per column)."""
    from segd.native import loadsplit

    types, cids = chunk_columns

    def split():
        pos, bounds = loadsplit.type_positions(types, 12)
        return loadsplit.scatter(cids, pos, types, 12)

    out, present = benchmark(split)
    assert present.all() and len(out) == len(cids)


def test_split_by_type_argsort(benchmark, chunk_columns) -> None:
    """The numpy split it replaced: a stable argsort of the types, one gather (for
    comparison)."""
    import numpy as np

    types, cids = chunk_columns

    def split():
        order = np.argsort(types.astype(np.uint8), kind="stable")
        return cids[order]

    assert len(benchmark(split)) == len(cids)


def test_remap_codes(benchmark, chunk_columns) -> None:
    """The commit's gather of staged codes into the engine's (a 950k-entry mapping)."""
    import numpy as np

    from segd.native import loadsplit

    _, cids = chunk_columns
    mapping = np.random.default_rng(2).permutation(950_000).astype(np.uint32)
    out = benchmark(loadsplit.remap_codes, cids, mapping)
    assert np.array_equal(out, mapping[cids])


@pytest.fixture(scope="module")
def sparse_column(chunk_columns):
    """A dictionary column of the 1M-row chunk valid on ~2% of its rows, all of one
    type (a search phrase, an order id at 10M): indices, validity bitmap, a code per
    entry, and the chunk's grouping."""
    import numpy as np

    from segd.native import loadsplit

    types, _ = chunk_columns
    rng = np.random.default_rng(3)
    valid = (types == 3) & (rng.random(len(types)) < 0.35)
    idx = rng.integers(0, 500, len(types)).astype(np.int32)
    bits = np.packbits(valid, bitorder="little")
    lookup = rng.permutation(500).astype(np.uint32)
    pos, bounds = loadsplit.type_positions(types, 12)
    return idx, bits, lookup, types, pos, bounds


def test_sparse_column_dense_kernels(benchmark, sparse_column) -> None:
    """A sparse dictionary column split by type the ``load7`` way: used entries,
    one code per row, then the scatter of every row (``SPARSE_SPLIT`` off)."""
    from segd.native import loadsplit

    idx, bits, lookup, types, pos, bounds = sparse_column

    def split():
        loadsplit.used_entries(idx, bits, 0, len(lookup))
        codes = loadsplit.expand_codes(idx, bits, 0, lookup)
        return loadsplit.scatter(codes, pos, types, 12)

    _, present = benchmark(split)
    assert present.tolist() == [t == 3 for t in range(12)]


def test_sparse_column_sparse_kernels(benchmark, sparse_column) -> None:
    """The same column through the kernels that visit only its valid rows
    (``sparse_used_entries``, ``scatter_valid``: ``SPARSE_SPLIT``)."""
    from segd.native import loadsplit

    idx, bits, lookup, types, pos, bounds = sparse_column

    def split():
        loadsplit.sparse_used_entries(idx, bits, 0, len(lookup))
        return loadsplit.scatter_valid(
            lookup, bits, 0, len(idx), pos, types, bounds, idx
        )

    _, present = benchmark(split)
    assert present.tolist() == [t == 3 for t in range(12)]


@pytest.fixture(scope="module")
def sparse_amounts():
    """1M amounts, ~1% of them set (order lines), as Arrow reads them."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(4)
    valid = rng.random(1_000_000) < 0.01
    return pa.array(rng.random(1_000_000) * 100, mask=~valid)


def test_amounts_numpy(benchmark, sparse_amounts) -> None:
    """``ingest._amounts`` with numpy: is_valid, isfinite, a mask, np.where."""
    from segd import ingest

    ingest.NATIVE_AMOUNTS = False
    try:
        out = benchmark(ingest._amounts, sparse_amounts)
    finally:
        ingest.NATIVE_AMOUNTS = True
    assert len(out) == len(sparse_amounts)


def test_amounts_native(benchmark, sparse_amounts) -> None:
    """``ingest._amounts`` through ``loadsplit.amounts_with_nan`` (one pass)."""
    from segd import ingest

    out = benchmark(ingest._amounts, sparse_amounts)
    assert len(out) == len(sparse_amounts)


@pytest.fixture(scope="module")
def staged_ids():
    """1M distinct 9-character customer ids, as a load stages them."""
    import pyarrow as pa

    return pa.array([f"c{v:08d}" for v in range(1_000_000)])


def test_engine_map_takes_staged_map(benchmark, staged_ids) -> None:
    """A load into an empty engine: the engine's contact map takes the staged one
    (``IdMap.take_from``, ``ingest.ADOPT_STAGED_MAPS``); the codes stay."""
    import numpy as np

    from segd.native.idmap import IdMap

    def fresh():
        staged = IdMap()
        staged.get_or_add(staged_ids)
        return (staged, IdMap()), {}

    def take(staged, engine_ids):
        engine_ids.take_from(staged)
        return np.arange(len(engine_ids), dtype=np.uint32)

    codes = benchmark.pedantic(take, setup=fresh, rounds=5, iterations=1)
    assert len(codes) == len(staged_ids)


def test_engine_map_re_adds_staged_values(benchmark, staged_ids) -> None:
    """What the adoption replaces: every staged value copied out and hashed again."""
    from segd.native.idmap import IdMap

    def fresh():
        staged = IdMap()
        staged.get_or_add(staged_ids)
        return (staged, IdMap()), {}

    def re_add(staged, engine_ids):
        return engine_ids.get_or_add(staged.to_arrow())

    codes = benchmark.pedantic(re_add, setup=fresh, rounds=5, iterations=1)
    assert len(codes) == len(staged_ids)


@pytest.fixture(scope="module")
def known_ids():
    """A 4M-entry customer map (9-character ids, random order) and 800k of its ids in
    random order: a 10M-cache row group's dictionary, most ids known."""
    import numpy as np
    import pyarrow as pa

    from segd.native.idmap import IdMap, ShortKeyIndex

    rng = np.random.default_rng(0)
    ids = pa.array([f"c{v:08d}" for v in rng.permutation(4_000_000)])
    plain = IdMap()
    plain.get_or_add(ids)
    indexed = ShortKeyIndex(IdMap())
    indexed.get_or_add(ids)
    query = ids.take(pa.array(rng.choice(4_000_000, 800_000, replace=False)))
    return plain, indexed, query


def test_short_key_index_known_ids(benchmark, known_ids) -> None:
    """ShortKeyIndex.get_or_add: one cache miss a known short id."""
    plain, indexed, query = known_ids
    codes = benchmark(indexed.get_or_add, query)
    assert codes.tolist() == plain.lookup(query).tolist()


def test_idmap_known_ids(benchmark, known_ids) -> None:
    """IdMap.get_or_add of the same ids: slot, offset and bytes, three misses."""
    plain, _, query = known_ids
    codes = benchmark(plain.get_or_add, query)
    assert len(codes) == len(query)


@pytest.fixture(scope="module")
def item_postings_batch():
    """A log's item column at a tenth of the 10M cache's views: 12M rows, 20% NULL,
    over 500k items with a skewed popularity (a first append: one bulk load)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 12_000_000
    weights = 1.0 / np.arange(1, 500_001) ** 0.8
    codes = rng.choice(500_000, size=n, p=weights / weights.sum()).astype(np.uint32)
    codes = rng.permutation(500_000).astype(np.uint32)[codes]
    codes[rng.random(n) < 0.2] = 0xFFFFFFFF
    return np.arange(n, dtype=np.uint32), codes


@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "row_order"])
def test_postings_append_rows(benchmark, item_postings_batch, partitioned) -> None:
    """Postings.append_rows of a bulk load's item column: bucketed by code
    (``PARTITIONED_APPEND``) vs row by row (a cache and TLB miss a row)."""
    from segd.native import postings

    rows, codes = item_postings_batch
    saved = postings.PARTITIONED_APPEND
    postings.PARTITIONED_APPEND = partitioned
    try:

        def build():
            p = postings.Postings()
            p.append_rows(rows, codes)
            return p

        p = benchmark.pedantic(build, rounds=3, iterations=1)
    finally:
        postings.PARTITIONED_APPEND = saved
    assert p.postings == int((codes != 0xFFFFFFFF).sum())
