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
