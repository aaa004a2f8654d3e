"""RFM against an independent DuckDB computation of the issue-11 definitions.

Two real-ish logs: ``segd.datagen.generate`` (order lines sharing an order id) and the
CDNOW purchase log shipped inside the ``lifetimes`` wheel (read as a file; the package
is never imported). The oracle is plain SQL over the raw rows: no code is shared with
segd. Scores use ``rank()`` (1 + the number of strictly smaller / larger values), which is
the definition's L / G, so equal values get equal scores on both sides.

How ``lifetimes`` differs (and why we compare with the definition, not with it):
``summary_data_from_transaction_data`` collapses purchases per *day* (several CDNOW rows of
one customer on one day are one "transaction"), counts only *repeat* purchases
(``frequency`` = transaction days - 1), measures ``recency`` as the age of the customer at
the last purchase (last - first), ``T`` as the age at the end of the period, and uses the
*mean* repeat spend as monetary value. segd counts every order (each CDNOW row is one
order: it has no order ids), recency from ``as_of``, and the sum of spend in the window.
The test below does the day-collapse check too, to show the numbers line up once the
definitions are made the same.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from segd import Engine
from segd.datagen import generate

D = 86_400


def oracle_sql(scale: int, as_of: float, window_days: int, id_is_order: bool) -> str:
    """RFM + the default named segments for table ``ev(customer_id, ts, amount,
    order_id)`` of order lines; ts in epoch seconds."""
    start = as_of - window_days * D
    order_key = (
        "coalesce(order_id, 'row-' || CAST(rowid_ AS VARCHAR))"
        if id_is_order
        else "'row-' || CAST(rowid_ AS VARCHAR)"
    )
    return f"""
    WITH lines AS (
        SELECT customer_id, ts, amount, {order_key} AS okey FROM ev
        WHERE ts < {as_of}
    ),
    hist AS (
        SELECT customer_id, count(DISTINCT okey) AS orders_all, max(ts) AS last_ts
        FROM lines GROUP BY customer_id
    ),
    win AS (
        SELECT customer_id, count(DISTINCT okey) AS frequency,
               round(coalesce(sum(amount), 0), 6) AS monetary
        FROM lines WHERE ts >= {start} GROUP BY customer_id
    ),
    scored AS (
        SELECT w.customer_id, w.frequency, w.monetary,
               CAST(floor(({as_of} - h.last_ts) / {D}) AS INTEGER) AS recency_days
        FROM win w JOIN hist h USING (customer_id)
    ),
    ranked AS (
        SELECT *, count(*) OVER () AS n,
            rank() OVER (ORDER BY recency_days DESC) - 1 AS g,
            rank() OVER (ORDER BY frequency) - 1 AS lf,
            rank() OVER (ORDER BY monetary) - 1 AS lm
        FROM scored
    )
    SELECT h.customer_id, r.recency_days, r.frequency, r.monetary,
        CAST(1 + floor({scale} * r.g / r.n) AS INTEGER) AS r,
        CAST(1 + floor({scale} * r.lf / r.n) AS INTEGER) AS f,
        CAST(1 + floor({scale} * r.lm / r.n) AS INTEGER) AS m,
        CASE
          WHEN h.orders_all = 1 AND d <= 40 THEN 'Newcomers'
          WHEN h.orders_all = 1 AND d BETWEEN 41 AND 75 THEN 'Drifting'
          WHEN h.orders_all <= 2 AND d <= 51 THEN 'Promising'
          WHEN h.orders_all <= 2 AND d BETWEEN 52 AND 75 THEN 'Drifting'
          WHEN h.orders_all <= 2 THEN 'Sleeping'
          WHEN d <= 51 THEN 'Loyal'
          WHEN d <= 112 THEN 'At risk'
          ELSE 'Lost'
        END AS segment
    FROM (SELECT *, CAST(floor(({as_of} - last_ts) / {D}) AS INTEGER) AS d FROM hist) h
    LEFT JOIN ranked r USING (customer_id)
    ORDER BY h.customer_id
    """


def compare(eng: Engine, ev: pa.Table, as_of: float, scale: int, window: int,
            id_is_order: bool = True) -> int:  # fmt: skip
    con = duckdb.connect()
    con.register("ev_raw", ev)
    con.execute(
        "CREATE TABLE ev AS SELECT *, row_number() OVER () AS rowid_ FROM ev_raw"
    )
    cur = con.execute(oracle_sql(scale, as_of, window, id_is_order))
    names = [d[0] for d in cur.description]
    want = pa.Table.from_pylist(
        [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    )
    got = eng.rfm(as_of=as_of, scale=scale, window_days=window).sort_by("customer_id")
    assert got.num_rows == want.num_rows
    w = {c: want.column(c).to_pylist() for c in want.column_names}
    g = {c: got.column(c).to_pylist() for c in got.column_names}
    assert g["customer_id"] == w["customer_id"]
    for col in ("recency_days", "frequency", "r", "f", "m", "segment"):
        bad = [i for i, (a, b) in enumerate(zip(g[col], w[col], strict=True)) if a != b]
        assert not bad, (
            col,
            [(g["customer_id"][i], g[col][i], w[col][i]) for i in bad[:5]],
        )
    gm = np.array([np.nan if v is None else v for v in g["monetary"]])
    wm = np.array([np.nan if v is None else v for v in w["monetary"]])
    assert np.allclose(gm, wm, equal_nan=True, rtol=0, atol=1e-6)
    return got.num_rows


@pytest.fixture(scope="module")
def demo():
    now = datetime(2025, 6, 30, tzinfo=UTC)
    data = generate(contacts=6000, seed=11, now=now)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    orders = data.events.filter(
        pa.compute.equal(data.events.column("type").cast(pa.string()), "order")
    )
    ev = pa.table({
        "customer_id": orders.column("customer_id").cast(pa.string()),
        "ts": pa.compute.cast(orders.column("ts").cast(pa.int64()), pa.float64()),
        "amount": orders.column("amount"),
        "order_id": orders.column("order_id"),
    })  # fmt: skip
    return eng, ev, now.timestamp()


@pytest.mark.parametrize(("scale", "window", "days_before"),
                         [(5, 365, 0), (10, 90, 0), (2, 30, 45), (5, 365, 0.5)])  # fmt: skip
def test_datagen_matches_duckdb(
    demo, scale: int, window: int, days_before: float
) -> None:
    eng, ev, now = demo
    n = compare(eng, ev, now - days_before * D, scale, window)
    assert n > 800


def test_segment_condition_equals_the_rule_as_aggregates(demo) -> None:
    """rfm.segment = X after rfm_compute at T == the rule written as aggregate conditions
    over the orders before T (period `before T`), for every named segment."""
    eng, _, now = demo
    t = now - 3.5 * D
    eng.rfm_compute(as_of=t)
    before = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def rule(orders: str, days: str) -> str:
        return (f"orders_count {orders} before {before} and "
                f"days_since_last_order {days} before {before}")  # fmt: skip

    rules = {
        "Newcomers": [rule("= 1", "between 0 and 40")],
        "Drifting": [rule("= 1", "between 41 and 75"),
                     rule("between 1 and 2", "between 52 and 75")],
        "Promising": [rule("between 1 and 2", "between 0 and 51")],
        "Sleeping": [rule("between 1 and 2", ">= 76")],
        "Loyal": [rule(">= 3", "between 0 and 51")],
        "At risk": [rule(">= 3", "between 52 and 112")],
        "Lost": [rule(">= 3", ">= 113")],
    }  # fmt: skip
    taken: set = set()
    order = ["Newcomers", "Drifting", "Promising", "Drifting", "Sleeping", "Loyal",
             "At risk", "Lost"]  # fmt: skip
    expected: dict[str, set] = {k: set() for k in rules}
    seen_drifting = 0
    for name in order:
        text = rules[name][seen_drifting if name == "Drifting" else 0]
        if name == "Drifting":
            seen_drifting += 1
        members = set(eng.segment(text, t).ids()) - taken
        expected[name] |= members
        taken |= members
    for name, want in expected.items():
        got = set(eng.segment(f'rfm.segment = "{name}"', t).ids())
        assert got == want, name
        assert want, f"no contact in {name}: the differential would be vacuous"
    no_orders = set(eng.segment(f"orders_count = 0 before {before}", t).ids())
    assert set(eng.segment("rfm.segment is null", t).ids()) == no_orders


def _cdnow_path() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "datasets"
        / "CDNOW_master.txt"
    )
    return path if path.exists() else None


@pytest.fixture(scope="module")
def cdnow():
    path = _cdnow_path()
    if path is None:
        pytest.skip("the lifetimes package (CDNOW log) is not installed")
    cols = np.loadtxt(path, dtype=str, ndmin=2, skiprows=1)  # id, yyyymmdd, cds, $
    ids = cols[:, 0]
    day = pa.compute.strptime(pa.array(cols[:, 1]), format="%Y%m%d", unit="s")
    # every row is one purchase at noon of its day (CDNOW has dates only)
    ts = np.asarray(day.cast(pa.int64())) + 12 * 3600
    amount = cols[:, 3].astype(np.float64)
    events = pa.table({
        "customer_id": pa.array(ids), "ts": pa.array(ts), "type": pa.array(["order"] * len(ids)),
        "amount": pa.array(amount),
    })  # fmt: skip
    eng = Engine()
    eng.load_events(events)
    ev = pa.table({"customer_id": pa.array(ids), "ts": pa.array(ts.astype(np.float64)),
                   "amount": pa.array(amount), "order_id": pa.nulls(len(ids), pa.string())})  # fmt: skip
    return eng, ev


@pytest.mark.parametrize(("as_of", "window", "scale"), [
    ("1998-07-01", 365, 5), ("1997-09-30", 180, 10), ("1998-01-01", 365, 3),
])  # fmt: skip
def test_cdnow_matches_duckdb(cdnow, as_of: str, window: int, scale: int) -> None:
    eng, ev = cdnow
    t = datetime.fromisoformat(as_of).replace(tzinfo=UTC).timestamp()
    n = compare(eng, ev, t, scale, window, id_is_order=False)
    assert n > 5000  # 23,570 customers bought in 1997


def test_cdnow_lifetimes_frequency_once_collapsed_per_day(cdnow) -> None:
    """lifetimes' frequency is (distinct purchase days) - 1 and segd's counts orders
    (rows): collapsed to one order per customer-day, the two agree up to that -1."""
    eng, ev = cdnow
    con = duckdb.connect()
    con.register("ev", ev)
    days = dict(con.execute(
        "SELECT customer_id, count(DISTINCT CAST(ts // 86400 AS BIGINT)) FROM ev "
        "GROUP BY customer_id").fetchall())  # fmt: skip
    t = datetime(1998, 7, 1, tzinfo=UTC).timestamp()
    got = {
        r["customer_id"]: r["frequency"]
        for r in eng.rfm(as_of=t, window_days=600).to_pylist()
    }
    assert len(got) == len(days) == 23_570
    assert all(k >= days[c] for c, k in got.items())
    same = sum(1 for c, k in got.items() if k == days[c])
    assert same / len(got) > 0.9  # most customers buy at most once a day
