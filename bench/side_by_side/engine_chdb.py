"""ClickHouse adapter, in process through ``chdb``: the same Parquet files, queries as
hand-written ClickHouse SQL (``Query.chsql``, bench/queries.py).

ClickHouse is the engine PostHog runs its cohorts on. What a reasonable engineer would set
up (load time charged to ClickHouse, as DuckDB's is):

- every core (ClickHouse's default ``max_threads``), a session in a temporary directory;
- ``events`` a ``MergeTree`` ordered by ``(type, ts)``: every query filters on an event
  type and a time range, so the primary index skips most granules (PostHog's events table
  is ordered by event and time the same way). ``ts`` is a ``DateTime`` in UTC;
- ``contacts`` the universe (profiles plus the ids seen only in events) with the order
  rollups segd also keeps (``orders_count`` = distinct ``order_id`` plus lines without
  one, ``revenue``, ``last_order_ts``), precomputed at load, ordered by ``customer_id``;
- ``items`` a ``Memory`` table (small, joined by ``item_id``);
- ``join_use_nulls = 1``: outer joins give NULL, not the type's default, for rows without
  a match (standard SQL, which ``ASOF LEFT JOIN``'s "no order after the cart" relies on).

``chdb`` is optional (``pip install segd[bench]``); without it ``--engines ...,chdb`` is a
usage error and the tests that need it skip.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import chdb
from chdb import session

label = "ClickHouse " + getattr(chdb, "engine_version", chdb.__version__) + " (chdb)"

_LOAD = (
    (
        "items",
        "CREATE TABLE items ENGINE = Memory AS SELECT * FROM file('{items}', Parquet)",
    ),
    (
        "events",
        """
        CREATE TABLE events ENGINE = MergeTree ORDER BY (type, ts) AS
        SELECT assumeNotNull(customer_id) AS customer_id,
               toDateTime(assumeNotNull(ts), 'UTC') AS ts,
               assumeNotNull(type) AS type, item_id, amount, order_id, phrase,
               advertiser, campaign, ad, channel
        FROM file('{events}', Parquet)
        """,
    ),
    (
        "contacts",
        """
        CREATE TABLE contacts ENGINE = MergeTree ORDER BY customer_id AS
        WITH orders AS (
            SELECT customer_id,
                   uniqExact(order_id) + countIf(order_id IS NULL) AS orders_count,
                   coalesce(sum(amount), 0) AS revenue,
                   max(ts) AS last_order_ts
            FROM events WHERE type = 'order' GROUP BY customer_id
        )
        SELECT ids.customer_id AS customer_id, c.gender AS gender,
               c.birth_date AS birth_date, c.city AS city, c.email AS email,
               c.phone AS phone, c.email_subscribed AS email_subscribed,
               c.sms_subscribed AS sms_subscribed, c.registered_at AS registered_at,
               c.rating AS rating, c.tags AS tags,
               coalesce(o.orders_count, 0) AS orders_count,
               coalesce(o.revenue, 0) AS revenue,
               o.last_order_ts AS last_order_ts
        FROM (
            SELECT assumeNotNull(customer_id) AS customer_id
            FROM file('{contacts}', Parquet)
            UNION DISTINCT
            SELECT DISTINCT customer_id FROM events
        ) AS ids
        LEFT JOIN file('{contacts}', Parquet) AS c ON c.customer_id = ids.customer_id
        LEFT JOIN orders AS o ON o.customer_id = ids.customer_id
        """,
    ),
)


class Adapter:
    """``load`` / ``count`` / ``members`` over one chdb session."""

    label = label

    def __init__(self, threads: int | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="segd-bench-chdb-")
        self.sess = session.Session(self.path)
        self.sess.query("SET join_use_nulls = 1")
        self.sess.query("SET session_timezone = 'UTC'")
        if threads:
            self.sess.query(f"SET max_threads = {int(threads)}")
        self.queries: dict[str, str] = {}

    def _scalar(self, sql: str) -> int:
        return int(str(self.sess.query(sql, "CSV")).strip())

    def load(self, paths: dict[str, str], progress=None) -> dict:
        """Create the tables from the Parquet files; seconds per table."""
        seconds = {}
        for i, (table, sql) in enumerate(_LOAD):
            if progress is not None:
                progress(f"ClickHouse: loading {table}", i, len(_LOAD))
            t0 = time.perf_counter()
            self.sess.query(sql.format(**paths))
            seconds[table] = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "events": self._scalar("SELECT count() FROM events"),
            "contacts": self._scalar("SELECT count() FROM contacts"),
        }

    def prepare(self, queries) -> None:
        self.queries = {q.name: q.chsql for q in queries}

    def count(self, name: str) -> int:
        return self._scalar(f"SELECT count() FROM ({self.queries[name]})")

    def members(self, name: str) -> list[str]:
        table = self.sess.query(self.queries[name], "ArrowTable")
        return table.column(0).to_pylist()

    def stats(self) -> dict:
        sizes = self._scalar(
            "SELECT sum(total_bytes) FROM system.tables "
            "WHERE database = currentDatabase()"
        )
        return {"chdb_table_bytes": sizes}

    def close(self) -> None:
        try:
            self.sess.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
