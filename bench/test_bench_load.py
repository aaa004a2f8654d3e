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
