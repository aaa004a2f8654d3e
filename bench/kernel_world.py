"""The 100k-contact world the pytest-benchmark micro-benchmarks share.

Built once per process (``world()`` is cached) from ``segd.datagen`` and handed to each
benchmark module through a module-scoped fixture, so ``pytest bench/ --benchmark-only``
generates and loads the data once. Expected answers come from DuckDB over the same Arrow
tables, so a fast wrong kernel cannot pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import duckdb

from segd import Engine
from segd.datagen import DemoData, generate

CONTACTS = 100_000


@dataclass(frozen=True)
class World:
    data: DemoData
    engine: Engine
    now_s: float

    def sql_count(self, sql: str) -> int:
        """``count(*)`` of a query over the tables ``contacts``, ``items``, ``events``."""
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'").fetchall()
        for name in ("contacts", "items", "events"):
            con.register(name, getattr(self.data, name))
        [(n,)] = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()
        con.close()
        return n


@functools.cache
def world() -> World:
    data = generate(CONTACTS, seed=0)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    return World(data, eng, data.now.timestamp())
