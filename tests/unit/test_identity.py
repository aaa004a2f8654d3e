"""Identity links and contact merges (issue 12): the engine calls, end to end."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from segd import Engine
from segd.errors import ContactNotFound, InvalidInput
from segd.identity import IdentityConflict, MergeError

T = 1_735_689_600  # 2025-01-01
NOW = T + 10 * 86_400
ABANDONED = "add_to_cart() in last 30 days then no order within 7 days"


def ev(cid, dt, etype, **kw):
    row = {"ts": T + dt, "type": etype, **kw}
    if cid is not None:
        row["customer_id"] = cid
    return row


def test_two_halves_match_after_merging():
    eng = Engine()
    eng.append_events([ev("a", 1, "view", item_id="i1"), ev("b", 2, "order")])
    query = "view() and order()"
    assert eng.count(query, now=NOW) == 0
    eng.merge("a", "b")
    assert eng.segment(query, now=NOW).ids() == ["a"]
    assert eng.count("order()", now=NOW) == 1
    assert eng.count("not order()", now=NOW) == 0  # b is no one now
    assert eng.stats()["contacts"] == 1


def test_cookie_then_login_then_order_is_one_contact():
    eng = Engine()
    eng.append_events([ev(None, 1, "add_to_cart", item_id="i1", device_id="ck-1")])
    assert eng.segment(ABANDONED, now=NOW).ids() == ["device_id:ck-1"]
    # login: the cookie and the email arrive together
    eng.append_events([ev(None, 2, "visit", device_id="ck-1", email=" Ann@Shop.RU ")])
    eng.append_events([ev(None, 3, "order", email="ann@shop.ru", order_id="o1")])
    assert eng.count(ABANDONED, now=NOW) == 0
    assert eng.stats()["contacts"] == 1
    who = eng.resolve("email", "ANN@shop.ru")
    assert who == "device_id:ck-1"
    assert eng.links(who) == {"email": ["ann@shop.ru"], "device_id": ["ck-1"]}
    card = eng.contact(who)
    assert {e["type"] for e in card["events"]} == {"add_to_cart", "visit", "order"}


def test_unknown_links_in_one_batch_join_through_shared_values():
    eng = Engine()
    eng.append_events(
        [
            ev(None, 1, "view", device_id="d1"),
            ev(None, 2, "view", device_id="d1", email="x@y.z"),
            ev(None, 3, "order", email="x@y.z", card="42"),
        ]
    )
    assert eng.stats()["contacts"] == 1
    who = eng.resolve("card", "42")
    assert eng.resolve("device_id", "d1") == who
    assert eng.count("view() count >= 2 and order()", now=NOW) == 1


def test_conflicts_are_reported_per_row_and_change_nothing():
    eng = Engine()
    eng.append_events([ev("a", 1, "view", email="a@x.io"), ev("b", 1, "view")])
    before = eng.stats()["events"]
    with pytest.raises(IdentityConflict) as err:
        eng.append_events(
            [ev("b", 2, "view"), ev("b", 3, "view", email="a@x.io"), ev("c", 4, "view")]
        )
    assert err.value.row == 1 and err.value.column == "email"
    assert [v.row for v in err.value.violations] == [1]
    assert eng.stats()["events"] == before
    assert eng.resolve("customer_id", "c") is None
    # merge policy: the link's owner is merged into the row's named contact
    eng.append_events([ev("b", 3, "view", email="a@x.io")], on_conflict="merge")
    assert eng.resolve("customer_id", "a") == "b"
    assert eng.resolve("email", "a@x.io") == "b"


def test_row_without_any_identity_is_refused():
    eng = Engine()
    with pytest.raises(InvalidInput) as err:
        eng.append_events(
            [ev(None, 1, "view", email="a@b.c"), ev(None, 2, "view", email=None)]
        )
    assert err.value.row == 1 and err.value.column == "customer_id"
    with pytest.raises(InvalidInput) as err:
        eng.append_events([ev(None, 1, "view", email="not an email")])
    assert err.value.row == 0 and err.value.column == "email"
    assert eng.stats()["events"] == 0


def test_link_unlink_resolve_and_normalisation():
    eng = Engine()
    eng.upsert_contact("a", city="Kazan")
    eng.upsert_contact("b")
    eng.link("a", "phone", "8 (912) 345-67-89")
    assert eng.resolve("phone", "+79123456789") == "a"
    eng.link("a", "phone", "+7 912 345 67 89")  # the same link: nothing happens
    with pytest.raises(IdentityConflict):
        eng.link("b", "phone", "79123456789")
    with pytest.raises(ContactNotFound):
        eng.link("zz", "card", "1")
    with pytest.raises(InvalidInput):
        eng.link("a", "fax", "1")
    with pytest.raises(InvalidInput):
        eng.unlink("b", "phone", "79123456789")
    eng.unlink("a", "phone", "79123456789")
    assert eng.resolve("phone", "79123456789") is None
    eng.link("b", "phone", "79123456789")
    assert eng.links("b") == {"phone": ["79123456789"]}


def test_merge_errors():
    eng = Engine()
    eng.upsert_contacts([{"customer_id": c} for c in "abc"])
    with pytest.raises(MergeError):
        eng.merge("a", "a")
    with pytest.raises(MergeError):
        eng.merge("a", "nobody")
    with pytest.raises(MergeError):
        eng.merge("nobody", "a")
    eng.merge("a", "b")
    with pytest.raises(MergeError) as err:
        eng.merge("c", "b")
    assert "already merged into 'a'" in str(err.value)
    with pytest.raises(MergeError):
        eng.merge("b", "c")  # b is not a contact any more


def test_chain_a_into_b_into_c():
    eng = Engine()
    eng.append_events(
        [ev("a", 1, "view"), ev("b", 2, "view"), ev("c", 3, "view"), ev("d", 4, "view")]
    )
    eng.link("a", "card", "A")
    eng.merge("b", "a")
    eng.merge("c", "b")
    for old in "abc":
        assert eng.resolve("customer_id", old) == "c"
    assert eng.resolve("card", "A") == "c"
    assert eng.links("c") == {"card": ["A"], "customer_id": ["a", "b"]}
    assert eng.count("view() count >= 3", now=NOW) == 1
    # traffic under an old id lands on the survivor
    eng.append_events([ev("a", 5, "order")])
    assert eng.segment("order()", now=NOW).ids() == ["c"]
    card = eng.contact("a")
    assert card["customer_id"] == "c"
    origins = {e["ts"] - T: e["from"] for e in card["events"]}
    assert origins == {1: "a", 2: "b", 3: None, 5: None}


def test_overlapping_order_ids_stay_distinct_orders():
    eng = Engine()
    eng.append_events(
        [
            ev("a", 1, "order", order_id="o1", amount=10.0),
            ev("a", 1, "order", order_id="o2", amount=5.0),
            ev("b", 2, "order", order_id="o2", amount=5.0),  # the same order, twice
            ev("b", 3, "order", order_id="o3", amount=1.0),
            ev("b", 4, "order", amount=2.0),  # no order id: an order of its own
        ]
    )
    eng.merge("a", "b")
    agg = eng.store.aggregates
    a = eng.store.contacts.cid_of("a")
    assert agg.orders_count[a] == 4  # o1, o2, o3, the line without an id
    assert agg.revenue[a] == pytest.approx(23.0)
    assert agg.first_order_s[a] == T + 1 and agg.last_order_s[a] == T + 4
    assert eng.count("orders_count = 4", now=NOW) == 1
    assert eng.count("order() count >= 4", now=NOW) == 1
    assert eng.count("orders_count = 0", now=NOW) == 0  # b is excluded
    assert eng.count("orders_count = 4 in last 30 days", now=NOW) == 1


def test_attributes_survivor_wins_merged_fills_nulls_tags_union():
    eng = Engine()
    eng.upsert_contacts(
        [
            {"customer_id": "a", "city": "Kazan", "rating": None, "tags": ["x"]},
            {"customer_id": "b", "city": "Omsk", "rating": 7, "tags": ["y"]},
        ]
    )
    eng.merge("a", "b")
    prof = eng.contact("a")["profile"]
    assert prof["city"] == "Kazan" and prof["rating"] == 7
    assert sorted(prof["tags"]) == ["x", "y"]
    assert eng.count('city = "Omsk"', now=NOW) == 0
    assert eng.count("city is null", now=NOW) == 0
    assert eng.count('tags contains "y"', now=NOW) == 1


def test_static_segment_memberships_and_rfm_follow_the_merge():
    eng = Engine()
    eng.append_events(
        [ev("a", 1, "view"), ev("b", 2, "order", amount=50.0, order_id="x")]
    )
    eng.create_segment("buyers", "order()", static=True, now=NOW)
    eng.rfm_compute(as_of=NOW)
    eng.merge("a", "b")
    assert eng.segment('in segment "buyers"', now=NOW).ids() == ["a"]
    table = eng.rfm(as_of=NOW)
    assert table["customer_id"].to_pylist() == ["a"]
    assert eng.count("rfm.r >= 1", now=NOW) == 1
    latest = eng.rfm_state.latest
    b = eng.store.contacts.ids.lookup_one("b")
    assert latest.r[b] == 0 and latest.r[eng.store.contacts.cid_of("a")] > 0


def test_touch_hook_sees_both_contacts():
    eng = Engine()
    eng.append_events([ev("a", 1, "view"), ev("b", 2, "view")])
    seen = []
    eng._touch_hooks.append(lambda cids, cause: seen.append((sorted(cids), cause)))
    eng.merge("a", "b")
    assert seen == [([0, 1], "merge")]


def test_contact_index_patch_matches_a_rebuild():
    """Merges patch the contact-major index; it must read like a fresh build."""
    eng = Engine()
    rng = np.random.default_rng(3)
    rows = [
        ev(f"c{int(c)}", int(t), "view")
        for c, t in zip(
            rng.integers(0, 40, 2000), rng.integers(0, 5000, 2000), strict=True
        )
    ]
    eng.append_events(rows)
    log = eng.store.logs["view"]
    log.contact_index(eng.store.n_contacts)  # built, then patched by the merges
    for s, m in [(0, 1), (2, 3), (0, 2), (39, 0), (5, 6)]:
        eng.merge(f"c{s}", f"c{m}")
    n = eng.store.n_contacts
    for cid in range(n):
        assert np.array_equal(
            log.rows_of(cid, n), np.flatnonzero(log.cid == cid).astype(np.uint32)
        ), cid
    got = eng.count("view() count >= 100 and view() in last 30 days", now=T + 6000)
    want = int(np.sum(np.bincount(log.cid, minlength=n) >= 100))
    assert got == want


def _state(eng: Engine) -> dict:
    queries = ["view()", "order() count >= 2", "orders_count >= 2", 'city = "Kazan"']
    return {
        "counts": {q: eng.count(q, now=NOW) for q in queries},
        "contacts": eng.stats()["contacts"],
        "links": eng.links("a"),
        "resolve": [eng.resolve("customer_id", x) for x in "abcd"],
        "email": eng.resolve("email", "a@x.io"),
        "card": eng.contact("a"),
    }


def _history(eng: Engine) -> None:
    eng.upsert_contacts([{"customer_id": "a", "city": "Kazan"}, {"customer_id": "b"}])
    eng.append_events(
        [
            ev("a", 1, "view", email="a@x.io"),
            ev("b", 2, "order", order_id="o1"),
            ev("c", 3, "order", order_id="o1"),
            ev("d", 4, "order", order_id="o2"),
        ]
    )
    eng.merge("b", "c")
    eng.link("d", "card", "D")
    eng.merge("a", "b")
    eng.append_events([ev(None, 5, "order", card="D", order_id="o3")])
    eng.append_events([ev("d", 6, "view", email="a@x.io")], on_conflict="merge")
    eng.upsert_contacts([{"email": "new@x.io", "city": "Omsk"}])


def test_links_and_merges_survive_restart_snapshot_and_crash(tmp_path):
    memory = Engine()
    _history(memory)
    want = _state(memory)
    with Engine.open(tmp_path / "d") as eng:
        _history(eng)
        assert _state(eng) == want
        # a crash: the directory as it is while the engine runs (fsync=always)
        shutil.copytree(
            tmp_path / "d",
            tmp_path / "crash",
            ignore=shutil.ignore_patterns("*.lock", "LOCK"),
        )
    with Engine.open(tmp_path / "d") as again:  # clean close, replay
        assert _state(again) == want
        again.snapshot()
    with Engine.open(tmp_path / "d") as third:  # from the snapshot
        assert third.recovery["replayed_records"] == 0
        assert _state(third) == want
        third.merge("d", "new@x.io".join(["email:", ""]))
        assert third.resolve("email", "new@x.io") == "d"
    with Engine.open(tmp_path / "crash") as crashed:
        assert _state(crashed) == want


def test_explain_names_the_contact_events_came_from():
    eng = Engine()
    eng.append_events(
        [ev("a", 1, "view"), ev("b", 2, "view"), ev("b", 3, "view"), ev("c", 4, "view")]
    )
    eng.merge("a", "b")
    eng.merge("a", "c")
    ex = eng.explain("view() count >= 4", "b", now=NOW)  # a merged id: its survivor
    assert ex.member
    evidence = ex.root.evidence
    assert evidence.matching_events == 4
    assert evidence.merged_from == (("b", 2), ("c", 1))
    assert "from merged b (2), c (1)" in evidence.summary()


def test_merge_policy_with_several_owners_in_one_batch():
    eng = Engine()
    eng.append_events([ev("a", 1, "view", card="A"), ev("b", 2, "view", card="B")])
    eng.append_events([ev("c", 3, "view", card="C")])
    # a claims b's card, then b claims c's: a<-b, and b (now a) <-c
    eng.append_events(
        [ev("a", 4, "order", card="B"), ev("b", 5, "view", card="C")],
        on_conflict="merge",
    )
    assert {eng.resolve("customer_id", x) for x in "abc"} == {"a"}
    assert eng.links("a")["card"] == ["A", "B", "C"]
    assert eng.count("view() count >= 4 and order()", now=NOW) == 1
