"""DuckDB adapter: the same Parquet files in in-memory tables, queries as hand-written SQL.

What a reasonable engineer would set up (and what the benchmark charges to DuckDB's
load time):

- every core (DuckDB's default ``threads``), tables in memory (``duckdb.connect()``), or,
  with ``database_file`` (the runner's choice from 5M contacts on), in a database file in
  a temporary directory: DuckDB's buffer manager then keeps what fits in memory and
  reads the rest from the file, so a 10M table loads where the in-memory database ran
  out of RAM. Its ``memory_limit`` is set at load to 75% of the memory then available
  (DuckDB's default, 80% of all RAM, ignores the segd worker already holding its data and
  would run the machine out of memory at 10M);
- ``events`` sorted by ``(type, ts)``: every query filters on an event type and a time
  range, so the row-group min/max zone maps skip most of the table. ``ts`` is stored as a
  plain ``TIMESTAMP`` holding UTC (the session time zone is UTC too), so no time-zone
  arithmetic runs at query time;
- ``contacts`` is the *universe* (profiles plus the ids seen only in events, as segd
  creates them) with the per-contact order rollups segd also keeps (``orders_count`` =
  distinct ``order_id``, ``revenue`` = sum of order amounts, ``last_order_ts``),
  precomputed at load: the aggregate conditions become column filters;
- no ART indexes: DuckDB's docs say they only help point lookups, not the scans and
  joins these queries run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import duckdb

label = "DuckDB " + duckdb.__version__

_LOAD = (
    (
        "items",
        "CREATE TABLE items AS SELECT * FROM read_parquet('{items}')",
    ),
    (
        "events",
        """
        CREATE TABLE events AS
        SELECT customer_id, CAST(ts AS TIMESTAMP) AS ts, type, item_id, amount,
               order_id, phrase, advertiser, campaign, ad, channel
        FROM read_parquet('{events}')
        ORDER BY type, ts
        """,
    ),
    (
        "contacts",
        """
        CREATE TABLE contacts AS
        WITH ids AS (
            SELECT customer_id FROM read_parquet('{contacts}')
            UNION
            SELECT DISTINCT customer_id FROM events
        ),
        orders AS (
            SELECT customer_id,
                   count(DISTINCT order_id)
                     + count(*) FILTER (WHERE order_id IS NULL) AS orders_count,
                   coalesce(sum(amount), 0) AS revenue,
                   max(ts) AS last_order_ts
            FROM events WHERE type = 'order' GROUP BY customer_id
        )
        SELECT ids.customer_id, c.gender, c.birth_date, c.city, c.email, c.phone,
               c.email_subscribed, c.sms_subscribed, c.registered_at, c.rating,
               c.tags,
               coalesce(o.orders_count, 0) AS orders_count,
               coalesce(o.revenue, 0) AS revenue,
               o.last_order_ts
        FROM ids
        LEFT JOIN read_parquet('{contacts}') c USING (customer_id)
        LEFT JOIN orders o USING (customer_id)
        """,
    ),
)


def _available_memory_mb() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` in MiB (0 where there is no such file)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


class Adapter:
    """``load`` / ``count`` / ``members`` over one in-memory DuckDB database."""

    label = label

    def __init__(self, threads: int | None = None, database_file: bool = False) -> None:
        self.directory: str | None = None
        if database_file:
            self.directory = tempfile.mkdtemp(prefix="segd-bench-duckdb-")
            self.con = duckdb.connect(str(Path(self.directory) / "bench.duckdb"))
            # Spilled intermediate results go next to the database, not to /tmp's root.
            self.con.execute(f"SET temp_directory = '{self.directory}/tmp'").fetchall()
        else:
            self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self.con.execute("SET enable_progress_bar = false").fetchall()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}").fetchall()
        self.queries: dict[str, str] = {}

    def load(self, paths: dict[str, str], progress=None) -> dict:
        """Create the tables from the Parquet files; seconds per table."""
        if self.directory is not None:
            limit_mb = _available_memory_mb() * 3 // 4
            if limit_mb:
                self.con.execute(f"SET memory_limit = '{limit_mb}MB'").fetchall()
        seconds = {}
        for i, (table, sql) in enumerate(_LOAD):
            if progress is not None:
                progress(f"DuckDB: loading {table}", i, len(_LOAD))
            t0 = time.perf_counter()
            self.con.execute(sql.format(**paths)).fetchall()
            seconds[table] = time.perf_counter() - t0
        [(events,)] = self.con.execute("SELECT count(*) FROM events").fetchall()
        [(contacts,)] = self.con.execute("SELECT count(*) FROM contacts").fetchall()
        return {"seconds": seconds, "events": events, "contacts": contacts}

    def prepare(self, queries) -> None:
        self.queries = {q.name: q.sql for q in queries}

    def count(self, name: str) -> int:
        sql = f"SELECT count(*) FROM ({self.queries[name]})"
        [(n,)] = self.con.execute(sql).fetchall()
        return n

    def members(self, name: str) -> list[str]:
        rows = self.con.execute(self.queries[name]).fetchnumpy()
        return rows["customer_id"].tolist()

    def stats(self) -> dict:
        rows = self.con.execute(
            "SELECT memory_usage_bytes FROM duckdb_memory()"
        ).fetchall()
        return {
            "duckdb_memory_bytes": int(sum(r[0] for r in rows)),
            "duckdb_storage": "file" if self.directory else "memory",
        }

    def close(self) -> None:
        self.con.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
