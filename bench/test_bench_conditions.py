"""Micro-benchmarks: one segment condition of each kind over 100k contacts / 2M events.

Run: ``pytest bench/ --benchmark-only``. Each benchmark evaluates the DSL through
``Engine.segment`` (parse, compile, run) and checks the count once against DuckDB SQL
over the same tables.
"""

from __future__ import annotations

import pytest

from segd.bench.kernel_world import World, world

NOW = "TIMESTAMPTZ '2025-06-30 00:00:00+00'"

# (id, DSL, SQL giving the same customer_ids)
CASES = [
    (
        "attr_category_eq",
        'city = "Moscow"',
        "SELECT customer_id FROM contacts WHERE city = 'Moscow'",
    ),
    (
        "attr_numeric_range",
        "rating between 3 and 7",
        "SELECT customer_id FROM contacts WHERE rating BETWEEN 3 AND 7",
    ),
    (
        "attr_age",
        "age >= 35",
        "SELECT customer_id FROM contacts "
        "WHERE birth_date <= DATE '2025-06-30' - INTERVAL 35 YEAR",
    ),
    (
        "event_filter_count",
        'view(category = "Electronics") count >= 2 in last 30 days',
        "SELECT e.customer_id FROM events e JOIN items i USING (item_id) "
        "WHERE e.type = 'view' AND (i.category = 'Electronics' "
        "OR i.category LIKE 'Electronics/%') "
        f"AND e.ts >= {NOW} - INTERVAL 30 DAY AND e.ts < {NOW} "
        "GROUP BY e.customer_id HAVING count(*) >= 2",
    ),
    (
        "event_then_no",
        "add_to_cart() in last 30 days then no order within 7 days",
        "SELECT DISTINCT c.customer_id FROM events c "
        "WHERE c.type = 'add_to_cart' "
        f"AND c.ts >= {NOW} - INTERVAL 30 DAY AND c.ts < {NOW} "
        "AND NOT EXISTS (SELECT 1 FROM events o WHERE o.type = 'order' "
        "AND o.customer_id = c.customer_id AND o.ts >= c.ts "
        "AND o.ts < c.ts + INTERVAL 7 DAY)",
    ),
    (
        "aggregate_orders_count",
        "orders_count >= 2",
        "SELECT customer_id FROM events WHERE type = 'order' "
        "GROUP BY customer_id HAVING count(DISTINCT order_id) >= 2",
    ),
    (
        "aggregate_days_since",
        "days_since_last_order <= 90",
        "SELECT customer_id FROM events WHERE type = 'order' GROUP BY customer_id "
        f"HAVING max(ts) > {NOW} - INTERVAL 91 DAY",
    ),
    (
        "not_event",
        "not email_open() in last 14 days",
        "SELECT customer_id FROM (SELECT customer_id FROM contacts "
        "UNION SELECT customer_id FROM events) "
        "WHERE customer_id NOT IN (SELECT customer_id FROM events "
        f"WHERE type = 'email_open' AND ts >= {NOW} - INTERVAL 14 DAY AND ts < {NOW})",
    ),
]


@pytest.fixture(scope="module")
def w() -> World:
    return world()


@pytest.mark.parametrize("dsl, sql", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_condition(benchmark, w: World, dsl: str, sql: str) -> None:
    count = benchmark(lambda: w.engine.segment(dsl, w.now_s, cache=False).count())
    assert count == w.sql_count(sql)
    assert count > 0
