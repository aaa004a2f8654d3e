"""Per-contact aggregates (segd.aggregates) on order ids shared between contacts."""

from __future__ import annotations

from segd import Engine

BASE = 1_735_689_600


def order(cid: str, ts: int, order_id: str | None, amount: float | None = None) -> dict:
    return {"customer_id": cid, "ts": ts, "type": "order", "order_id": order_id,
            "amount": amount}  # fmt: skip


def counts(eng: Engine, *ids: str) -> list[int]:
    agg = eng.store.aggregates
    return [int(agg.orders_count[eng.store.contacts.cid_of(c)]) for c in ids]


def test_an_order_id_two_contacts_name_in_one_batch_counts_once_per_contact() -> None:
    """Both pairs are new orders; a later line of either pair adds nothing (the id had
    two first owners in one batch: the second was not recorded as shared, so its next
    line counted again)."""
    eng = Engine()
    eng.append_events([order("a", BASE + 10, "o1", 5.0), order("b", BASE + 20, "o1")])
    assert counts(eng, "a", "b") == [1, 1]
    eng.append_events([order("a", BASE + 30, "o1"), order("b", BASE + 40, "o1")])
    assert counts(eng, "a", "b") == [1, 1]
    eng.append_events([order("b", BASE + 50, "o2"), order("b", BASE + 60, None)])
    assert counts(eng, "a", "b") == [1, 3]
    assert eng.count("orders_count = 1", now=BASE + 100) == 1
