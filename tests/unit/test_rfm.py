"""RFM on hand-made histories: every boundary of the default rules, the window edges,
quantile ties, thresholds, scales 2 and 10, an empty base and a single contact.

Expected values are written from the definitions of issue 11 (docs/rfm.md), not from
the implementation: ``reference_scores`` below is the O(n^2) textbook formula.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd import Engine
from segd.errors import FailedPrecondition, InvalidInput, InvalidQuery
from segd.rfm import RfmRulesError, RfmState, check_rules, parse_rules

NOW = int(datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp())
D = 86_400


def order(cid: str, t: float, amount: float = 10.0, order_id: str | None = None):
    return dict(
        customer_id=cid, ts=int(t), type="order", amount=amount, order_id=order_id
    )


def engine_with(events: list[dict], contacts: list[str] | None = None) -> Engine:
    eng = Engine()
    ids = sorted({e["customer_id"] for e in events} | set(contacts or []))
    if ids:
        eng.load_contacts([{"customer_id": c, "city": "Kazan"} for c in ids])
    if events:
        eng.append_events(events)
    return eng


def rows(table) -> dict[str, dict]:
    return {r["customer_id"]: r for r in table.to_pylist()}


def history(cid: str, n_orders: int, last_days_ago: float) -> list[dict]:
    """n orders, the last `last_days_ago` days (and a minute) before NOW, the others a
    day apart."""
    return [
        order(cid, NOW - (last_days_ago + i) * D - 60, order_id=f"{cid}-{i}")
        for i in range(n_orders)
    ]


# -- named segments at every boundary of the default rules -----------------------------

BOUNDARIES = [
    # (orders, days since last order, segment)
    (1, 0, "Newcomers"),
    (1, 40, "Newcomers"),
    (1, 41, "Drifting"),  # a single order at 41..51 is Drifting, not Promising
    (1, 51, "Drifting"),
    (1, 52, "Drifting"),
    (1, 75, "Drifting"),
    (1, 76, "Sleeping"),
    (2, 0, "Promising"),
    (2, 51, "Promising"),
    (2, 52, "Drifting"),
    (2, 75, "Drifting"),
    (2, 76, "Sleeping"),
    (3, 0, "Loyal"),
    (3, 51, "Loyal"),
    (3, 52, "At risk"),
    (3, 112, "At risk"),
    (3, 113, "Lost"),
    (7, 51, "Loyal"),
    (7, 113, "Lost"),
    (2, 400, "Sleeping"),  # outside the window: the segment uses the whole history
    (5, 500, "Lost"),
]


@pytest.mark.parametrize(("n_orders", "days", "segment"), BOUNDARIES)
def test_default_rules_at_each_boundary(n_orders: int, days: int, segment: str) -> None:
    eng = engine_with(history("x", n_orders, days))
    row = rows(eng.rfm(as_of=NOW))["x"]
    assert row["segment"] == segment


@pytest.mark.parametrize(("n_orders", "days", "segment"), BOUNDARIES)
def test_days_are_floored(n_orders: int, days: int, segment: str) -> None:
    """An order one second later than `days` whole days ago still counts as `days`."""
    events = history("x", n_orders, days)
    events[0]["ts"] = NOW - (days + 1) * D + 1  # days + 1 - 1s ago: floor = days
    eng = engine_with(events)
    row = rows(eng.rfm(as_of=NOW))["x"]
    assert row["segment"] == segment


def test_all_boundaries_in_one_base_and_the_matrix() -> None:
    events = []
    for i, (n, days, _) in enumerate(BOUNDARIES):
        events += history(f"c{i}", n, days)
    eng = engine_with(events)
    got = rows(eng.rfm(as_of=NOW))
    assert {f"c{i}": b[2] for i, b in enumerate(BOUNDARIES)} == {
        k: v["segment"] for k, v in got.items()
    }
    eng.rfm_compute(as_of=NOW)
    matrix = {
        r["segment"]: r["count"] for r in eng.rfm_matrix(by="segment").to_pylist()
    }
    for name in ("Newcomers", "Drifting", "Promising", "Sleeping", "Loyal", "Lost"):
        assert matrix[name] == sum(1 for b in BOUNDARIES if b[2] == name)
    assert sum(matrix.values()) == len(BOUNDARIES)


def test_explain_shows_each_contacts_rfm_values() -> None:
    events = []
    for i, (n, days, _) in enumerate(BOUNDARIES):
        events += history(f"c{i}", n, days)
    eng = engine_with(events)
    eng.rfm_compute(as_of=NOW)
    want = rows(eng.rfm(as_of=NOW))
    for cid, row in list(want.items())[:6]:
        for field in ("segment", "code", "r", "f", "m"):
            why = eng.explain(f"rfm.{field} is not null", cid, now=NOW)
            leaf = why.root
            assert leaf.evidence is not None, field
            assert leaf.evidence.attribute == f"rfm.{field}"
            assert leaf.evidence.value == row[field]


# -- the window ---------------------------------------------------------------------------


def test_order_exactly_at_as_of_is_not_counted() -> None:
    eng = engine_with([order("a", NOW), order("b", NOW - 1), order("b", NOW)])
    got = rows(eng.rfm(as_of=NOW))
    assert "a" not in got  # its only order is at as_of: [.., as_of) excludes it
    assert got["b"]["frequency"] == 1
    assert got["b"]["recency_days"] == 0


def test_order_exactly_at_window_start_is_in_the_window() -> None:
    start = NOW - 365 * D
    eng = engine_with(
        [order("in", start, 5.0), order("out", start - 1, 7.0), order("both", start - 1),
         order("both", start, 3.0)]
    )  # fmt: skip
    got = rows(eng.rfm(as_of=NOW))
    assert got["in"]["frequency"] == 1 and got["in"]["recency_days"] == 365
    assert got["in"]["monetary"] == 5.0
    # "out" has an order before as_of but none in the window: a row with null scores.
    assert got["out"]["frequency"] is None and got["out"]["r"] is None
    assert got["out"]["code"] is None and got["out"]["segment"] == "Sleeping"
    assert got["both"]["frequency"] == 1 and got["both"]["monetary"] == 3.0


def test_distinct_order_ids_and_lines_without_id() -> None:
    eng = engine_with(
        [
            order("a", NOW - 5 * D, 10.0, "o1"),
            order("a", NOW - 5 * D, 15.0, "o1"),  # second line of o1
            order("a", NOW - 3 * D, 1.0, "o2"),
            order("b", NOW - 2 * D, 4.0),  # no order id: each line is an order
            order("b", NOW - 2 * D, 6.0),
            order("c", NOW - 400 * D, 1.0, "o3"),  # before the window ...
            order("c", NOW - 2 * D, 2.0, "o3"),  # ... a line of the same order in it
        ]
    )
    got = rows(eng.rfm(as_of=NOW))
    assert (got["a"]["frequency"], got["a"]["monetary"]) == (2, 26.0)
    assert (got["b"]["frequency"], got["b"]["monetary"]) == (2, 10.0)
    assert (got["c"]["frequency"], got["c"]["monetary"]) == (1, 2.0)
    # whole history: c has one order (o3), so it is a newcomer by its last line
    assert got["c"]["segment"] == "Newcomers"


def test_order_id_shared_by_two_contacts_counts_once_for_each() -> None:
    eng = engine_with(
        [
            order("a", NOW - 5 * D, 1.0, "shared"),
            order("b", NOW - 4 * D, 1.0, "shared"),
            order("b", NOW - 3 * D, 1.0, "shared"),
            order("b", NOW - 500 * D, 1.0, "old"),
            order("a", NOW - 2 * D, 1.0, "shared"),
        ]
    )
    got = rows(eng.rfm(as_of=NOW))
    assert got["a"]["frequency"] == 1 and got["b"]["frequency"] == 1
    assert got["b"]["segment"] == "Promising"  # 2 orders overall: shared + old


def test_null_amount_adds_nothing() -> None:
    eng = engine_with([order("a", NOW - D, None, "o1"), order("a", NOW - D, 5.0, "o2")])
    assert rows(eng.rfm(as_of=NOW))["a"]["monetary"] == 5.0


def test_window_days_parameter() -> None:
    eng = engine_with([order("a", NOW - 20 * D), order("a", NOW - 5 * D)])
    got = rows(eng.rfm(as_of=NOW, window_days=10))["a"]
    assert got["frequency"] == 1 and got["recency_days"] == 5


# -- scores ---------------------------------------------------------------------------------


def reference_scores(values: list[float], scale: int, larger: bool) -> list[int]:
    n = len(values)
    out = []
    for v in values:
        k = sum(1 for w in values if (w > v if larger else w < v))
        out.append(1 + math.floor(scale * k / n))
    return out


def base_from(freqs: list[int], spend: list[float], days: list[int]) -> Engine:
    events = []
    for i, (k, s, d) in enumerate(zip(freqs, spend, days, strict=True)):
        for j in range(k):
            events.append(
                order(f"c{i:03d}", NOW - (d + j) * D - 60, s if j == 0 else 0.0,
                      f"c{i}-{j}")
            )  # fmt: skip
    return engine_with(events)


def test_quantile_ties_get_equal_scores() -> None:
    eng = base_from([1, 1, 1, 2, 3], [10, 10, 10, 20, 30], [5, 5, 5, 1, 0])
    got = rows(eng.rfm(as_of=NOW))
    f = [got[f"c{i:03d}"]["f"] for i in range(5)]
    assert f == [1, 1, 1, 4, 5]  # L = 0, 0, 0, 3, 4 over n = 5
    r = [got[f"c{i:03d}"]["r"] for i in range(5)]
    # recency days 5,5,5 (G = 2: the two more recent are... larger days count) -> see ref
    assert r == reference_scores([5, 5, 5, 1, 0], 5, larger=True)
    assert r == [1, 1, 1, 4, 5]


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.sampled_from([5.0, 10.0, 12.5, 99.99]),
                  st.integers(0, 300)),
        min_size=1, max_size=25,
    ),
    st.integers(2, 10),
)  # fmt: skip
def test_quantile_scores_match_the_definition(data, scale: int) -> None:
    freqs, spend, days = (list(x) for x in zip(*data, strict=True))
    eng = base_from(freqs, spend, days)
    got = rows(eng.rfm(as_of=NOW, scale=scale))
    ids = [f"c{i:03d}" for i in range(len(data))]
    rec = [got[c]["recency_days"] for c in ids]
    freq = [got[c]["frequency"] for c in ids]
    mon = [got[c]["monetary"] for c in ids]
    assert freq == freqs and rec == days
    assert [got[c]["r"] for c in ids] == reference_scores(rec, scale, True)
    assert [got[c]["f"] for c in ids] == reference_scores(freq, scale, False)
    assert [got[c]["m"] for c in ids] == reference_scores(mon, scale, False)
    for c in ids:
        assert got[c]["code"] == f"R{got[c]['r']}F{got[c]['f']}M{got[c]['m']}"


@pytest.mark.parametrize("scale", [2, 10])
def test_scale_2_and_10(scale: int) -> None:
    n = 40
    eng = base_from(list(range(1, n + 1)), [float(i) for i in range(n)], [0] * n)
    got = rows(eng.rfm(as_of=NOW, scale=scale))
    f = [got[f"c{i:03d}"]["f"] for i in range(n)]
    assert f == [1 + (scale * i) // n for i in range(n)]
    assert min(f) == 1 and max(f) == scale
    assert {got[c]["r"] for c in got} == {1}  # all tied on recency: the lowest score


def test_thresholds() -> None:
    eng = base_from([1, 2, 3, 6, 10], [50, 100, 150, 1000, 5000], [0, 29, 30, 90, 200])
    th = {"r": [30, 60, 90, 180], "f": [2, 3, 5, 8], "m": [100, 200, 500, 1000]}
    got = rows(eng.rfm(as_of=NOW, method="thresholds", thresholds=th))
    ids = [f"c{i:03d}" for i in range(5)]
    assert [got[c]["r"] for c in ids] == [5, 5, 4, 2, 1]  # 5 - #(cuts <= days)
    assert [got[c]["f"] for c in ids] == [1, 2, 3, 4, 5]  # 1 + #(cuts <= f)
    assert [got[c]["m"] for c in ids] == [1, 2, 2, 5, 5]


def test_bad_parameters_are_precise_errors() -> None:
    eng = engine_with([order("a", NOW - D)])
    with pytest.raises(InvalidInput, match="scale"):
        eng.rfm(as_of=NOW, scale=11)
    with pytest.raises(InvalidInput, match="thresholds.f"):
        eng.rfm(as_of=NOW, method="thresholds",
                thresholds={"r": [1, 2, 3, 4], "f": [1, 2], "m": [1, 2, 3, 4]})  # fmt: skip
    with pytest.raises(InvalidInput, match=r"thresholds.m\[2\]"):
        eng.rfm(as_of=NOW, method="thresholds",
                thresholds={"r": [1, 2, 3, 4], "f": [1, 2, 3, 4], "m": [1, 5, 3, 9]})  # fmt: skip
    with pytest.raises(InvalidInput, match="method"):
        eng.rfm(as_of=NOW, method="median")
    with pytest.raises(InvalidInput, match="only used with"):
        eng.rfm(as_of=NOW, thresholds={"r": [1], "f": [1], "m": [1]})


def test_empty_base_and_one_contact() -> None:
    empty = Engine()
    t = empty.rfm(as_of=NOW)
    assert t.num_rows == 0
    assert t.column_names == [
        "customer_id", "recency_days", "frequency", "monetary", "r", "f", "m", "code",
        "segment",
    ]  # fmt: skip
    empty.rfm_compute(as_of=NOW)
    assert sum(empty.rfm_matrix(by="rf").column("count").to_pylist()) == 0
    no_orders = engine_with([], contacts=["z"])
    assert no_orders.rfm(as_of=NOW).num_rows == 0

    one = engine_with([order("solo", NOW - 3 * D, 42.0, "o")])
    (row,) = one.rfm(as_of=NOW).to_pylist()
    assert row == {
        "customer_id": "solo", "recency_days": 3, "frequency": 1, "monetary": 42.0,
        "r": 1, "f": 1, "m": 1, "code": "R1F1M1", "segment": "Newcomers",
    }  # fmt: skip


def test_rfm_is_pure() -> None:
    eng = engine_with([order("a", NOW - D)])
    eng.rfm(as_of=NOW)
    assert eng.rfm_status()["computed"] is False
    with pytest.raises(FailedPrecondition, match="rfm_compute"):
        eng.count('rfm.segment = "Loyal"', NOW)


def test_rfm_compute_without_the_table_makes_the_same_computation_current() -> None:
    events = history("a", 3, 10) + history("b", 1, 60) + history("c", 2, 200)
    with_table, without = engine_with(events), engine_with(events)
    table = with_table.rfm_compute(as_of=NOW)
    assert without.rfm_compute(as_of=NOW, table=False) is None
    assert table.num_rows == 3
    for q in ('rfm.segment = "Loyal"', 'rfm.code != "R1F1M1"', "rfm.r is null"):
        assert without.segment(q, NOW).ids() == with_table.segment(q, NOW).ids(), q
    assert without.rfm_status() == with_table.rfm_status()
    assert (
        without.rfm_transitions().to_pylist()
        == with_table.rfm_transitions().to_pylist()
    )


def test_kept_workspace_gives_fresh_results() -> None:
    """compute() keeps its accumulators between calls (RfmState.workspace): repeated
    computations, a base that grew, a workspace left dirty by a computation that did
    not finish, and one busy in another thread all give what a fresh engine gives."""
    from segd import rfm as rfm_mod

    events = history("a", 3, 10) + history("b", 1, 60) + history("c", 2, 200)
    events.append(order("a", NOW - 5 * D, 7.25, order_id="shared"))
    events.append(order("b", NOW - 4 * D, 3.5, order_id="shared"))
    eng = engine_with(events)
    want = rows(engine_with(events).rfm(as_of=NOW))
    for _ in range(3):
        assert rows(eng.rfm(as_of=NOW)) == want
    ws = eng.rfm_state.workspace
    ws.acc[:] = 7  # a computation that stopped half-way leaves garbage behind
    ws.clean = False
    assert rows(eng.rfm(as_of=NOW)) == want
    with ws.lock:  # another thread computing: this one takes a workspace of its own
        assert rows(eng.rfm(as_of=NOW)) == want
    more = events + history("d", 4, 3)
    eng.append_events(history("d", 4, 3))
    assert rows(eng.rfm(as_of=NOW)) == rows(engine_with(more).rfm(as_of=NOW))
    assert not ws.acc.any() and not ws.bits.any()
    with pytest.raises(ValueError, match="generation"):
        rfm_mod.kernels.rollup(
            *(np.zeros(1, np.uint32),) * 2, None, None, 0, 1, 1, 0,
            ws.acc, ws.owner, ws.state, 0, ws.bits,
        )  # fmt: skip


# -- rules configuration -----------------------------------------------------------------


def test_default_rules_have_no_gaps_nor_unreachable_rules() -> None:
    report = check_rules(
        parse_rules([r.to_dict() for r in RfmState().config.rules], "r")
    )
    assert report["gaps"] == [] and report["unreachable"] == []
    # Newcomers and the single-order Drifting rule win over Promising: reported overlaps
    assert {(o["rule"], o["shadows"]) for o in report["overlaps"]} == {(0, 2), (1, 2)}


def test_rules_with_a_gap_or_an_unreachable_rule_are_rejected() -> None:
    eng = engine_with([order("a", NOW - D)])
    gap = [
        {"segment": "New", "orders": [1, 1], "days": [0, 30]},
        {"segment": "Old", "orders": [1, None], "days": [40, None]},
        {"segment": "Many", "orders": [2, None], "days": [0, 39]},
    ]
    with pytest.raises(RfmRulesError) as err:
        eng.rfm_set_config({"rules": gap})
    assert err.value.gaps == [{"rule_set": "rules", "orders": "1", "days": "31-39"}]
    unreachable = [
        {"segment": "All", "orders": [1, None], "days": [0, None]},
        {"segment": "Never", "orders": [3, None], "days": [0, 10]},
    ]
    with pytest.raises(RfmRulesError) as err:
        eng.rfm_set_config({"rules": unreachable})
    assert [u["rule"] for u in err.value.unreachable] == [1]
    assert err.value.violations[0].where == "rules[1]"
    with pytest.raises(InvalidInput, match=r"rules\[0\].days"):
        eng.rfm_set_config({"rules": [{"segment": "x", "orders": [1, None],
                                       "days": [5, 1]}]})  # fmt: skip
    assert eng.rfm_config()["rules"][0]["segment"] == "Newcomers"  # nothing changed


def test_custom_thresholds_from_the_sources() -> None:
    """'Loyal after the 11th purchase', 'no orders for more than 87 days'."""
    eng = engine_with(
        history("a", 11, 10) + history("b", 10, 10) + history("c", 11, 88)
    )
    eng.rfm_set_config({"rules": [
        {"segment": "Loyal", "orders": [11, None], "days": [0, 87]},
        {"segment": "Lost", "orders": [11, None], "days": [88, None]},
        {"segment": "Others", "orders": [1, 10], "days": [0, None]},
    ]})  # fmt: skip
    got = rows(eng.rfm(as_of=NOW))
    assert (got["a"]["segment"], got["b"]["segment"], got["c"]["segment"]) == (
        "Loyal", "Others", "Lost",
    )  # fmt: skip


def test_rules_per_city() -> None:
    """In one city a customer is asleep after 14 days, in another after 28 [004]."""
    eng = Engine()
    eng.load_contacts([
        {"customer_id": "k", "city": "Kazan"}, {"customer_id": "m", "city": "Moscow"},
        {"customer_id": "n", "city": None},
    ])  # fmt: skip
    eng.append_events([order(c, NOW - 20 * D, order_id=c) for c in "kmn"])
    rules = lambda asleep: [  # noqa: E731
        {"segment": "Active", "orders": [1, None], "days": [0, asleep - 1]},
        {"segment": "Asleep", "orders": [1, None], "days": [asleep, None]},
    ]
    eng.rfm_set_config({"rules": rules(14), "group_by": "city",
                        "group_rules": {"Moscow": rules(28)}})  # fmt: skip
    got = rows(eng.rfm(as_of=NOW))
    assert got["k"]["segment"] == "Asleep"
    assert got["m"]["segment"] == "Active"
    assert got["n"]["segment"] == "Asleep"  # no city: the default rules


# -- compute, conditions, transitions -----------------------------------------------------


def test_compute_makes_segment_conditions_work() -> None:
    events = []
    for i, (n, days, _) in enumerate(BOUNDARIES):
        events += history(f"c{i}", n, days)
    eng = engine_with(events, contacts=["nobody"])
    eng.rfm_compute(as_of=NOW)
    expected = {f"c{i}" for i, b in enumerate(BOUNDARIES) if b[2] == "Loyal"}
    assert set(eng.segment('rfm.segment = "Loyal"').ids()) == expected
    assert eng.count("rfm.segment is null") == 1  # "nobody": no orders
    assert eng.count("rfm.segment is not null") == len(BOUNDARIES)
    assert eng.count('rfm.segment != "Loyal"') == len(BOUNDARIES) - len(expected)
    assert eng.count('rfm.segment in ("Loyal", "Lost")') == sum(
        1 for b in BOUNDARIES if b[2] in ("Loyal", "Lost")
    )
    table = rows(eng.rfm(as_of=NOW))
    r5 = {c for c, r in table.items() if r["r"] == 5}
    assert eng.count("rfm.r = 5") == len(r5)
    code = table["c0"]["code"]
    assert eng.count(f'rfm.code = "{code}"') == sum(
        1 for r in table.values() if r["code"] == code
    )
    assert eng.count('rfm.code prefix "R5"') == len(r5)
    with pytest.raises(InvalidQuery, match="did you mean 'Loyal'"):
        eng.count('rfm.segment = "Loyl"')
    with pytest.raises(InvalidQuery, match="not an RFM code"):
        eng.count('rfm.code = "R5F5"')


def test_transitions_and_the_entered_condition() -> None:
    eng = engine_with(history("a", 3, 10) + history("b", 1, 10))
    eng.rfm_compute(as_of=NOW)  # a: Loyal, b: Newcomers (both entered from nothing)
    t1 = eng.rfm_transitions()
    assert sorted(t1.column("to_segment").to_pylist()) == ["Loyal", "Newcomers"]
    assert t1.column("from_segment").to_pylist() == [None, None]
    later = NOW + 50 * D  # a: 60 days -> At risk; b: 60 days -> Drifting
    eng.rfm_compute(as_of=later)
    got = eng.rfm_transitions(since=NOW + 1, to="At risk", from_="Loyal")
    assert got.column("customer_id").to_pylist() == ["a"]
    assert got.column("at").to_pylist()[0].timestamp() == later
    eng.append_events(history("a", 1, -51))  # a orders again at `later` + 1 day
    eng.rfm_compute(as_of=later + 2 * D)
    back = eng.rfm_transitions(to="Loyal")
    assert back.column("customer_id").to_pylist() == ["a", "a"]
    at = later + 2 * D
    assert eng.count('rfm.entered "Loyal" from "At risk" in last 7 days', at) == 1
    assert eng.count('rfm.entered "Loyal" first time in last 7 days', at) == 0
    assert eng.count('rfm.entered "Loyal" again in last 7 days', at) == 1
    assert eng.count('rfm.entered "Loyal" first time', at) == 1
    assert eng.count('rfm.entered "Drifting" from "Newcomers"', at) == 1
    assert eng.count('rfm.entered "Loyal" in last 1 day', later + 10 * D) == 0
    with pytest.raises(InvalidQuery, match="did you mean"):
        eng.count('rfm.entered "Loyl"', at)
    with pytest.raises(InvalidInput, match="before the current computation"):
        eng.rfm_compute(as_of=NOW)


def test_transition_events_are_published() -> None:
    eng = engine_with(history("a", 3, 10))
    seen = []
    unsubscribe = eng.rfm_subscribe(seen.append)
    eng.rfm_compute(as_of=NOW)
    eng.rfm_compute(as_of=NOW)  # nothing changed: an empty batch
    unsubscribe()
    eng.rfm_compute(as_of=NOW + 60 * D)
    assert [t.num_rows for t in seen] == [1, 0]
    assert seen[0].column("to_segment").to_pylist() == ["Loyal"]


def test_daily_counts_and_state_round_trip() -> None:
    eng = engine_with(history("a", 3, 10) + history("b", 1, 10))
    eng.rfm_compute(as_of=NOW)
    eng.rfm_compute(as_of=NOW + 60 * D)
    hist = eng.rfm_history().to_pylist()
    loyal = [(h["day"], h["count"]) for h in hist if h["name"] == "Loyal"]
    assert loyal == [("2025-06-15", 1), ("2025-08-14", 0)]
    again = RfmState.from_bytes(eng.rfm_state.to_bytes())
    assert again.daily == eng.rfm_state.daily
    assert again.segment_names == eng.rfm_state.segment_names
    assert len(again.transitions) == len(eng.rfm_state.transitions)
    assert np.array_equal(again.latest.segment, eng.rfm_state.latest.segment)
    assert again.config == eng.rfm_state.config


def test_matrix_rf_and_rfm() -> None:
    eng = base_from([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [4, 3, 2, 1, 0])
    eng.rfm_compute(as_of=NOW)
    rf = eng.rfm_matrix(by="rf").to_pylist()
    assert len(rf) == 25 and sum(c["count"] for c in rf) == 5
    diag = {(c["r"], c["f"]): c["count"] for c in rf if c["count"]}
    assert diag == {(1, 1): 1, (2, 2): 1, (3, 3): 1, (4, 4): 1, (5, 5): 1}
    assert abs(sum(c["share"] for c in rf) - 1.0) < 1e-12
    rfm = eng.rfm_matrix(by="rfm")
    assert rfm.num_rows == 125
    with pytest.raises(InvalidInput, match="by"):
        eng.rfm_matrix(by="fm")


# -- durability: RFM state survives a restart (log replay and snapshot) ---------------------


@pytest.mark.parametrize("snapshot", [False, True])
def test_rfm_state_survives_restart(tmp_path, snapshot: bool) -> None:
    eng = Engine.open(tmp_path / "data", fsync="off")
    eng.load_contacts([{"customer_id": c, "city": "Kazan"} for c in ("a", "b", "z")])
    eng.append_events(history("a", 3, 10) + history("b", 1, 10))
    eng.rfm_set_config({"window_days": 200})
    eng.rfm_compute(as_of=NOW)
    eng.rfm_compute(as_of=NOW + 60 * D)
    if snapshot:
        eng.snapshot()
    status, config = eng.rfm_status(), eng.rfm_config()
    transitions = eng.rfm_transitions().to_pylist()
    history_rows = eng.rfm_history().to_pylist()
    loyal_entries = eng.count('rfm.entered "At risk" from "Loyal"', NOW + 61 * D)
    eng.close()

    again = Engine.open(tmp_path / "data", fsync="off")
    try:
        assert again.rfm_config() == config
        assert again.rfm_status() == status
        assert again.rfm_transitions().to_pylist() == transitions
        assert again.rfm_history().to_pylist() == history_rows
        assert again.count('rfm.segment = "At risk"') == 1
        assert again.count("rfm.segment is null") == 1
        assert again.count('rfm.entered "At risk" from "Loyal"', NOW + 61 * D) == (
            loyal_entries
        ) == 1  # fmt: skip
    finally:
        again.close()


def test_daily_schedule() -> None:
    from segd.server.rfm_schedule import last_due, run_if_due

    day = datetime(2025, 6, 15, tzinfo=UTC).timestamp()
    assert last_due(day + 4 * 3600, "03:00") == day + 3 * 3600
    assert last_due(day + 2 * 3600, "03:00") == day - 21 * 3600
    assert last_due(day, None) is None
    eng = engine_with(history("a", 3, 10))
    assert run_if_due(eng, day + 4 * 3600) is False  # never computed: on demand first
    eng.rfm_compute(as_of=day + 2 * 3600)
    assert run_if_due(eng, day + 2.5 * 3600) is False  # not yet 03:00
    assert run_if_due(eng, day + 3 * 3600 + 5) is True
    assert eng.rfm_status()["as_of_s"] == day + 3 * 3600 + 5
    assert run_if_due(eng, day + 20 * 3600) is False  # done today
    assert run_if_due(eng, day + 27 * 3600) is True  # the next day


@given(
    st.lists(st.integers(0, 5), min_size=0, max_size=60),
    st.sampled_from(["r", "f", "m", "code", "segment"]),
    st.lists(st.integers(0, 300), max_size=4),
)
def test_members_of_equals_the_union_of_per_value_bitmaps(
    scores: list[int], kind: str, extra_keys: list[int]
) -> None:
    """``RfmResult.members_of`` (one pass, the condition's path) against the per-value
    bitmaps it replaced, on arbitrary score arrays and key sets (absent keys, "none")."""
    from segd.rfm import NO_SEGMENT, RfmResult

    n = len(scores)
    a = np.asarray(scores, dtype=np.uint8)
    seg = np.where(a == 0, NO_SEGMENT, a % 3).astype(np.uint8)
    res = RfmResult(
        as_of=0.0,
        window_days=365,
        scale=5,
        method="quantile",
        segments=["a", "b", "c"],
        recency_days=np.full(n, -1, dtype=np.int32),
        frequency=np.zeros(n, dtype=np.uint32),
        monetary=np.zeros(n),
        r=a,
        f=a[::-1].copy(),
        m=(a * 7 % 6).astype(np.uint8),
        segment=seg,
        orders_all=(a > 0).astype(np.uint32),
    )
    maps = res.bitmaps(kind)
    present = res.present_keys(kind)
    assert present == sorted(maps)
    keys = present[:2] + extra_keys
    expected = set()
    for k in keys:
        expected |= set(maps.get(k, ()))
    assert set(res.members_of(kind, keys)) == expected
    assert set(res.members_of(kind, present)) == set().union(*map(set, maps.values()))


@given(
    st.lists(st.integers(0, 255), max_size=300),
    st.sampled_from([np.uint8, np.uint16]),
    st.integers(0, 3),
)
def test_small_histogram_is_bincount(values, dtype, extra) -> None:
    """The per-code / per-segment histogram kernel against np.bincount; a value not
    below minlength is refused."""
    from segd.native import rfm as kernels

    arr = np.asarray(values, dtype=dtype)
    minlength = (max(values) + 1 if values else 1) + extra
    got = kernels.small_histogram(arr, minlength)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.bincount(arr, minlength=minlength))
    if max(values, default=0) > 0:
        with pytest.raises(ValueError, match="not below minlength"):
            kernels.small_histogram(arr, max(values))
