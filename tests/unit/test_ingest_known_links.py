"""Live events named only by known links are applied by the owners' cids directly
(``identity.known_link_owners``): the result must equal the same events named by the
owners' customer_ids, and every case the shortcut does not cover must still go through
the general resolution (new links, clashes, rows without links)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from segd import Engine
from segd.identity import IdentityConflict, known_link_owners
from segd.native import NO_CODE

T = 1_735_689_600
NOW = T + 10 * 86_400
QUERIES = [
    "view()",
    "order() count >= 2",
    "orders_count >= 2",
    "add_to_cart() in last 30 days then no order within 7 days",
]


def _base(eng: Engine) -> None:
    eng.append_events(
        [
            {"customer_id": c, "ts": T + i, "type": "view", "item_id": "i0"}
            for i, c in enumerate(["a", "b", "c", "d"])
        ]
    )
    eng.link("a", "device_id", "dev-a")
    eng.link("b", "device_id", "dev-b")
    eng.link("c", "device_id", "dev-c")
    eng.link("a", "email", "a@x.io")
    eng.link("c", "card", "C1")
    eng.merge("b", "c")  # dev-c and C1 now name b


def _state(eng: Engine) -> dict:
    return {
        "counts": {q: eng.count(q, now=NOW) for q in QUERIES},
        "members": {q: sorted(eng.segment(q, now=NOW).ids()) for q in QUERIES},
        "contacts": eng.stats()["contacts"],
        "events": eng.stats()["events"],
        "cards": {x: eng.contact(x)["events"] for x in "abd"},
    }


def _rows(ident: list[dict]) -> list[dict]:
    types = ["view", "add_to_cart", "order", "order", "view", "add_to_cart"]
    return [
        {
            "ts": T + 100 + i,
            "type": types[i % len(types)],
            "item_id": f"i{i % 3}",
            **({"order_id": f"o{i}", "amount": 5.0} if types[i % 6] == "order" else {}),
            **who,
        }
        for i, who in enumerate(ident)
    ]


BY_LINK = [
    {"device_id": "dev-a"},
    {"device_id": " dev-c "},  # normalised, owner merged into b
    {"device_id": "dev-b", "card": "C1"},  # two kinds, same contact
    {"email": "A@X.io"},
    {"card": "C1"},
    {"device_id": "dev-a", "email": "a@x.io"},
]
OWNERS = ["a", "b", "b", "a", "b", "a"]


def test_known_links_apply_like_the_owners_customer_ids():
    by_link, by_id = Engine(), Engine()
    _base(by_link)
    _base(by_id)
    before = by_link.stats()["contacts"]
    by_link.append_events(_rows(BY_LINK))
    by_id.append_events(_rows([{"customer_id": c} for c in OWNERS]))
    assert _state(by_link) == _state(by_id)
    assert by_link.stats()["contacts"] == before  # nothing created


def test_known_links_with_duplicate_event_ids():
    eng, want = Engine(), Engine()
    _base(eng)
    _base(want)
    rows = _rows(BY_LINK)
    for r in rows:
        r["event_id"] = f"e{r['ts'] % 3}"  # rows 3.. repeat the first three ids
    eng.append_events(rows)
    want.append_events(_rows([{"customer_id": c} for c in OWNERS])[:3])
    assert _state(eng) == _state(want)


def test_shortcut_declines_what_needs_the_general_resolution():
    eng = Engine()
    _base(eng)
    store = eng.store

    def owners(**cols):
        links = {k: pa.array(v, pa.string()) for k, v in cols.items()}
        raw = {k: store.identity.table(k).owners(v) for k, v in links.items()}
        return known_link_owners(store, links, len(next(iter(cols.values()))), raw)

    a, b = store.contacts.cid_of("a"), store.contacts.cid_of("b")
    got = owners(device_id=["dev-a", "dev-c", None], card=[None, "C1", "C1"])
    assert got.tolist() == [a, b, b]
    assert owners(device_id=["dev-a", "dev-new"]) is None  # unknown value
    assert owners(device_id=["dev-a", None], email=["a@x.io", None]) is None  # no link
    assert owners(device_id=["dev-a"], card=["C1"]) is None  # clash a / b
    assert known_link_owners(store, {}, 0, {}) is None
    assert NO_CODE not in got


def test_clash_between_known_links_is_still_a_conflict():
    eng = Engine()
    _base(eng)
    before = _state(eng)
    with pytest.raises(IdentityConflict) as err:
        eng.append_events(
            _rows([{"device_id": "dev-a"}, {"device_id": "dev-a", "card": "C1"}])
        )
    assert err.value.column in ("device_id", "card")
    assert _state(eng) == before
    eng.append_events(
        _rows([{"device_id": "dev-a", "card": "C1"}]), on_conflict="merge"
    )
    assert eng.resolve("card", "C1") == eng.resolve("device_id", "dev-a")


def test_known_link_batches_replay_after_restart_and_snapshot(tmp_path):
    memory = Engine()
    _base(memory)
    memory.append_events(_rows(BY_LINK))
    want = _state(memory)
    with Engine.open(tmp_path / "d") as eng:
        _base(eng)
        eng.append_events(_rows(BY_LINK))
        assert _state(eng) == want
    with Engine.open(tmp_path / "d") as again:  # replay of the log
        assert _state(again) == want
        again.snapshot()
        again.append_events(_rows(BY_LINK[:2]))
        memory.append_events(_rows(BY_LINK[:2]))
        want = _state(memory)
    with Engine.open(tmp_path / "d") as third:  # snapshot + the log's tail
        assert _state(third) == want


def test_unlinked_value_is_not_taken_as_known():
    eng = Engine()
    _base(eng)
    eng.unlink("a", "device_id", "dev-a")
    before = eng.stats()["contacts"]
    eng.append_events(_rows([{"device_id": "dev-a"}]))
    assert eng.resolve("device_id", "dev-a") == "device_id:dev-a"
    assert eng.stats()["contacts"] == before + 1
