"""Recommendations (segd.recs) on a hand-made shop where every right answer is known.

Outdoor: tents A, D (2-person), E (family); stoves B, G (G out of stock); mug C.
Pets: cat food F (repeatable, the bestseller: 5 buyers). Fashion: dresses H, I, J, K.

- A is co-purchased with B by three contacts and with C by two, with G (out of stock)
  by one: related(A) = B, C, never G; F sells most but has nothing to do with A.
- A is co-viewed with D by two contacts and with E by one: alternatives(A) = D, E.
- dresses by buyers: K 5 (red S 6000), J 4 (blue S 2000), H 3 (red S 4000), I 2 (red M).
- "Tent" was searched and followed by a view of D: search -> the 2-person tents.
"""

from __future__ import annotations

import threading

import pytest

from segd import Engine
from segd.errors import ContactNotFound, InvalidInput, NotFound
from segd.recs import CategoryNotFound, ItemNotFound

DAY = 86_400
T0 = 1_750_000_000

ITEMS = [
    # item, category, price, in_stock, colour, size, repeatable
    ("A", "Outdoor/Tents/2-person", 9000.0, True, None, None, False),
    ("B", "Outdoor/Cookware/Stoves", 3000.0, True, None, None, False),
    ("C", "Outdoor/Cookware/Mugs", 500.0, True, None, None, False),
    ("D", "Outdoor/Tents/2-person", 8000.0, True, None, None, False),
    ("E", "Outdoor/Tents/Family", 15000.0, True, None, None, False),
    ("F", "Pets/Cats/Dry food", 900.0, True, None, None, True),
    ("G", "Outdoor/Cookware/Stoves", 2500.0, False, None, None, False),
    ("H", "Fashion/Women/Dresses", 4000.0, True, "red", "S", False),
    ("I", "Fashion/Women/Dresses", 3000.0, True, "red", "M", False),
    ("J", "Fashion/Women/Dresses", 2000.0, True, "blue", "S", False),
    ("K", "Fashion/Women/Dresses", 6000.0, True, "red", "S", False),
]
ORDERS = {  # contact -> items of one order
    "u1": ["A", "B", "G"],
    "u2": ["A", "B", "C"],
    "u3": ["A", "C"],
    "u12": ["A", "B"],
    "f1": ["F"],
    "f2": ["F"],
    "f3": ["F"],
    "f4": ["F"],
    "f5": ["F"],
}
DRESS_BUYERS = {"K": 5, "J": 4, "H": 3, "I": 2}
VIEWS = {"v1": ["A", "D"], "v2": ["A", "D"], "v3": ["A", "E"]}


def _events() -> list[dict]:
    events: list[dict] = []
    t = T0
    for cust, items in ORDERS.items():
        t += 60
        for item in items:
            events.append(
                {
                    "customer_id": cust,
                    "type": "order",
                    "ts": t,
                    "item_id": item,
                    "order_id": f"o-{cust}",
                    "amount": 1.0,
                }  # fmt: skip
            )
    for item, buyers in DRESS_BUYERS.items():
        for b in range(buyers):
            t += 60
            events.append(
                {
                    "customer_id": f"d{item}{b}",
                    "type": "order",
                    "ts": t,
                    "item_id": item,
                    "order_id": f"o-d{item}{b}",
                    "amount": 1.0,
                }  # fmt: skip
            )
    for cust, items in VIEWS.items():
        for item in items:
            t += 60
            events.append(
                {"customer_id": cust, "type": "view", "ts": t, "item_id": item}
            )
    t += 60
    events.append({"customer_id": "s1", "type": "search", "ts": t, "phrase": "Tent"})
    events.append({"customer_id": "s1", "type": "view", "ts": t + 30, "item_id": "D"})
    return events


def _shop(engine: Engine) -> Engine:
    engine.upsert_items(
        [
            {
                "item_id": i,
                "category": c,
                "price": p,
                "in_stock": s,
                "colour": col,
                "size": size,
                "repeatable": r,
            }  # fmt: skip
            for i, c, p, s, col, size, r in ITEMS
        ]
    )
    engine.upsert_contacts([{"customer_id": "nobody"}])
    engine.append_events(_events())
    return engine


@pytest.fixture
def shop() -> Engine:
    engine = _shop(Engine())
    engine.rebuild_recommendations()
    return engine


def ids(result: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in result]


def test_related_is_co_purchase_first_not_the_bestseller(shop: Engine) -> None:
    got = shop.recommend("related", item_ids=["A"], limit=10)
    assert ids(got)[:2] == ["B", "C"]
    assert "G" not in ids(got)  # co-bought but out of stock
    assert "A" not in ids(got)  # never the item itself
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    # after the neighbours, the items of A's categories: D (same leaf) before Pets
    assert ids(got).index("D") < ids(got).index("F")


def test_related_for_a_cart_merges_neighbours(shop: Engine) -> None:
    got = ids(shop.recommend("related", item_ids=["B", "C"], limit=3))
    assert got[0] == "A"  # the neighbour of both
    assert "B" not in got and "C" not in got


def test_alternatives_same_subtree_by_co_view(shop: Engine) -> None:
    got = ids(shop.recommend("alternatives", item_ids=["A"], limit=10))
    assert got == ["D"]  # same leaf category, co-viewed; E is another leaf
    wide = ids(shop.recommend("alternatives", item_ids=["A"], category="Outdoor/Tents"))
    assert wide[:2] == ["D", "E"]


def test_popular_overall_per_category_and_ties_by_id(shop: Engine) -> None:
    top = shop.recommend("popular", limit=3)
    assert top == [("F", 5.0), ("K", 5.0), ("A", 4.0)]  # F and K tie: by item id
    dresses = shop.recommend("popular", category="Fashion", limit=4)
    assert dresses == [("K", 5.0), ("J", 4.0), ("H", 3.0), ("I", 2.0)]
    # a category covers its sub-tree; an unknown one is an error naming it
    assert ids(shop.recommend("popular", category="Outdoor/Cookware")) == ["B", "C"]
    with pytest.raises(CategoryNotFound) as err:
        shop.recommend("popular", category="Garden")
    assert err.value.category == "Garden"


def test_popular_with_filters(shop: Engine) -> None:
    red_s = shop.recommend(
        "popular", filters='colour = "red", size = "S", price < 5000', limit=5
    )
    assert red_s == [("H", 3.0)]
    red = shop.recommend(
        "popular",
        filters=[{"field": "colour", "op": "=", "value": "red"}],
        category="Fashion/Women/Dresses",
    )
    assert ids(red) == ["K", "H", "I"]
    with pytest.raises(InvalidInput):
        shop.recommend("popular", filters="colur = 'red'")


def test_popular_by_views(shop: Engine) -> None:
    got = shop.recommend("popular", event="view", limit=2)
    assert got == [("A", 3.0), ("D", 3.0)]  # v1, v2 and s1 viewed D


def test_bought_items_are_excluded_unless_asked(shop: Engine) -> None:
    got = ids(shop.recommend("popular", customer_id="u1", category="Outdoor"))
    assert "A" not in got and "B" not in got
    got = ids(
        shop.recommend(
            "popular", customer_id="u1", category="Outdoor", exclude_bought=False
        )
    )
    assert got[:2] == ["A", "B"]


def test_repeatable_items_stay(shop: Engine) -> None:
    # f1 bought cat food F, flagged repeatable (a consumable): still recommended
    assert ids(shop.recommend("popular", customer_id="f1", limit=1)) == ["F"]


def test_personal_from_history_and_fallback(shop: Engine) -> None:
    got = ids(shop.recommend("personal", customer_id="u3", limit=3))
    assert got[0] == "B"  # u3 bought A and C; B goes with both
    assert "A" not in got and "C" not in got
    # no history: the bestsellers
    assert ids(shop.recommend("personal", customer_id="nobody", limit=2)) == ["F", "K"]
    with pytest.raises(ContactNotFound):
        shop.recommend("personal", customer_id="ghost")


def test_search_phrase_leads_to_categories(shop: Engine) -> None:
    got = ids(shop.recommend("search", phrase="  tent ", limit=2))
    assert got == ["A", "D"]  # the 2-person tents, by orders
    # a phrase nobody searched: the bestsellers
    assert ids(shop.recommend("search", phrase="zzz", limit=1)) == ["F"]


def test_unknown_item_and_bad_arguments(shop: Engine) -> None:
    with pytest.raises(ItemNotFound) as err:
        shop.recommend("related", item_ids=["A", "nope"])
    assert err.value.item_id == "nope"
    assert isinstance(err.value, NotFound)
    with pytest.raises(InvalidInput):
        shop.recommend("best")
    with pytest.raises(InvalidInput):
        shop.recommend("related")
    with pytest.raises(InvalidInput):
        shop.recommend("popular", limit=0)
    with pytest.raises(InvalidInput):
        shop.recommend("popular", event="click")
    # an unknown catalog field is the caller's mistake, named (was a KeyError)
    with pytest.raises(InvalidInput, match="colur") as bad:
        shop.recommend("popular", filters="colur = 1")
    assert "filters[0].field" in str(bad.value)
    with pytest.raises(InvalidInput, match="colur"):
        shop.recommend_batch("popular", ["u1"], filters="price < 5, colur = 1")


def test_out_of_stock_change_is_seen_without_rebuild(shop: Engine) -> None:
    shop.upsert_items([{"item_id": "B", "in_stock": False}])
    assert "B" not in ids(shop.recommend("related", item_ids=["A"]))


def test_a_new_order_is_excluded_at_once(shop: Engine) -> None:
    assert "C" in ids(shop.recommend("related", item_ids=["A"], customer_id="u12"))
    shop.append_events(
        [
            {
                "customer_id": "u12",
                "type": "order",
                "ts": T0 + 9 * DAY,
                "item_id": "C",
                "order_id": "late",
                "amount": 1.0,
            }
        ]  # fmt: skip
    )
    got = ids(shop.recommend("related", item_ids=["A"], customer_id="u12"))
    assert "C" not in got and "B" not in got


def test_batch_matches_single_lookups(shop: Engine) -> None:
    batch = shop.recommend_batch("personal", ["u1", "u3", "ghost"], limit=3)
    assert batch[0] == shop.recommend("personal", customer_id="u1", limit=3)
    assert batch[1] == shop.recommend("personal", customer_id="u3", limit=3)
    assert batch[2] == shop.recommend("personal", customer_id="nobody", limit=3)


def test_empty_engine_has_popular_nothing() -> None:
    engine = Engine()
    assert engine.recommend("popular") == []
    assert engine.recommendation_stats()["built"] is True


def test_rebuild_while_lookups_run(shop: Engine) -> None:
    expected = shop.recommend("related", item_ids=["A"], limit=5)
    errors: list[BaseException] = []
    stop = threading.Event()

    def lookups() -> None:
        try:
            while not stop.is_set():
                assert shop.recommend("related", item_ids=["A"], limit=5) == expected
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=lookups) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(20):
        shop.rebuild_recommendations()
    stop.set()
    for t in threads:
        t.join()
    assert not errors


def test_config_is_validated(shop: Engine) -> None:
    with pytest.raises(InvalidInput):
        shop.rebuild_recommendations({"neighbors": 5})
    stats = shop.rebuild_recommendations({"neighbours": 1})
    assert stats["config"]["neighbours"] == 1
    assert ids(shop.recommend("related", item_ids=["A"], limit=1)) == ["B"]


def test_recommendations_survive_restart_and_snapshot(tmp_path) -> None:
    with Engine.open(tmp_path / "d") as engine:
        _shop(engine)
        before = {
            "related": engine.recommend("related", item_ids=["A"]),
            "personal": engine.recommend("personal", customer_id="u3"),
            "search": engine.recommend("search", phrase="tent"),
        }
    with Engine.open(tmp_path / "d") as engine:  # replay of the log
        assert engine.recommend("related", item_ids=["A"]) == before["related"]
        assert engine.recommend("personal", customer_id="u3") == before["personal"]
        engine.snapshot()
        stats = engine.recommendation_stats()
    with Engine.open(tmp_path / "d") as engine:  # from the snapshot: no rebuild
        restored = engine.recommendation_stats()
        assert restored["built"] is True
        for key in ("as_of_s", "related_pairs", "bytes", "phrases", "categories"):
            assert restored[key] == stats[key], key
        assert engine.recommend("search", phrase="tent") == before["search"]
        assert engine.recommend("personal", customer_id="u3") == before["personal"]
        assert engine.recommend("related", item_ids=["A"]) == before["related"]


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("related", {"item_ids": ["A"]}),
        ("popular", {"category": "Outdoor"}),
        ("popular", {"filters": 'colour = "red"'}),
        ("personal", {}),
        ("search", {"phrase": "tent"}),
        ("alternatives", {"item_ids": ["A"], "category": "Outdoor"}),
    ],
)
def test_batch_kernel_agrees_with_single_lookups(shop: Engine, kind, kwargs) -> None:
    # u12 orders C after the build (a dirty contact: its bought list is read live)
    shop.append_events(
        [
            {
                "customer_id": "u12",
                "type": "order",
                "ts": T0 + 9 * DAY,
                "item_id": "C",
                "order_id": "late",
                "amount": 1.0,
            }
        ]  # fmt: skip
    )
    people = ["u1", "u3", "u12", "f1", "nobody", "v1", "ghost"]
    batch = shop.recommend_batch(kind, people, limit=4, **kwargs)
    for person, got in zip(people, batch, strict=True):
        single = shop.recommend(
            kind, customer_id=None if person == "ghost" else person, limit=4, **kwargs
        )
        assert got == single, person


def test_server_schedule_rebuilds_until_stopped(shop: Engine) -> None:
    from segd.server.recs_schedule import recs_schedule_loop

    shop.upsert_items([{"item_id": "Z", "category": "Garden/Tools", "price": 1.0}])
    stop = threading.Event()
    loop = threading.Thread(target=recs_schedule_loop, args=(shop, 0.05, stop))
    loop.start()
    try:
        deadline = threading.Event()
        for _ in range(200):  # the new category appears once a rebuild ran
            if "Garden" in (shop.recs.model.node_index if shop.recs.model else {}):
                break
            deadline.wait(0.05)
        assert shop.recommend("popular", category="Garden") == [("Z", 0.0)]
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()


def test_identity_merge_survivor_holds_the_bought_items(shop: Engine) -> None:
    # u3 bought A and C; "web-u3" is the same person on another device with a view of B
    shop.append_events(
        [
            {
                "customer_id": "web-u3",
                "type": "order",
                "ts": T0 + 9 * DAY,
                "item_id": "B",
                "order_id": "w1",
                "amount": 1.0,
            }
        ]  # fmt: skip
    )
    shop.rebuild_recommendations()
    assert "B" in ids(shop.recommend("related", item_ids=["A"], customer_id="u3"))
    shop.merge("u3", "web-u3")
    for who in ("u3", "web-u3"):  # the merged id gives the survivor
        got = ids(shop.recommend("related", item_ids=["A"], customer_id=who))
        assert "B" not in got and "C" not in got, who
    batch = shop.recommend_batch("related", ["u3", "web-u3"], item_ids=["A"])
    assert (
        batch[0]
        == batch[1]
        == shop.recommend("related", item_ids=["A"], customer_id="u3")
    )


def test_cached_lookup_keeps_every_check(shop: Engine) -> None:
    """A resolved lookup is cached per (model, catalog version, arguments): a repeated
    call must still check what is its own, and raise exactly what the first would."""
    assert ids(shop.recommend("related", item_ids=["A"], limit=3))[:2] == ["B", "C"]
    with pytest.raises(ItemNotFound) as err:  # same arguments, unknown item: cached
        shop.recommend("related", item_ids=["A", "nope"], limit=3)
    assert err.value.item_id == "nope"
    with pytest.raises(InvalidInput):
        shop.recommend("related", limit=3)
    with pytest.raises(InvalidInput):
        shop.recommend("related", item_ids=[], limit=3)
    with pytest.raises(InvalidInput):  # 3.0 == 3 and hashes alike: not a cache hit
        shop.recommend("related", item_ids=["A"], limit=3.0)  # type: ignore[arg-type]
    with pytest.raises(ItemNotFound):  # item ids are checked for every kind
        shop.recommend("popular", item_ids=["nope"])
    shop.recommend("popular")
    with pytest.raises(ItemNotFound):
        shop.recommend("popular", item_ids=["nope"])
    with pytest.raises(ContactNotFound):
        shop.recommend("popular", customer_id="no-such-contact")
    # filters as a list are not cached (unhashable) but give the same answer
    text = shop.recommend("popular", filters='colour = "red"')
    listed = [{"field": "colour", "op": "=", "value": "red"}]
    assert shop.recommend("popular", filters=listed) == text


def test_cached_lookup_follows_catalog_and_model(shop: Engine) -> None:
    before = ids(shop.recommend("related", item_ids=["A"]))
    assert "B" in before
    shop.upsert_items([{"item_id": "B", "in_stock": False}])  # a new catalog version
    assert "B" not in ids(shop.recommend("related", item_ids=["A"]))
    shop.upsert_items([{"item_id": "B", "in_stock": True}])
    assert ids(shop.recommend("related", item_ids=["A"])) == before
    shop.rebuild_recommendations({"neighbours": 1})  # a new model
    assert ids(shop.recommend("related", item_ids=["A"], limit=1)) == ["B"]
    got = shop.recommend("related", item_ids=["A"], limit=3)
    assert got[0][0] == "B" and all(s <= got[0][1] for _, s in got)


@pytest.mark.parametrize("kind", ["personal", "popular", "related"])
def test_encoded_batch_is_the_batch(shop: Engine, kind) -> None:
    """The RecommendBatch bytes (written by the kernel) parse to the batch's lists."""
    from segd.v1 import recommendations_pb2 as pb

    people = ["u1", "u3", "ghost", "f1", "", "é-ü"]
    kwargs = {"item_ids": ["A"]} if kind == "related" else {}
    raw = shop.recs.recommend_batch_encoded(kind, people, limit=4, **kwargs)
    msg = pb.RecommendBatchResponse.FromString(raw)
    batch = shop.recommend_batch(kind, people, limit=4, **kwargs)
    assert [r.customer_id for r in msg.results] == people
    for res, want in zip(msg.results, batch, strict=True):
        assert list(res.item_ids) == [i for i, _ in want]
        assert list(res.scores) == [s for _, s in want]
    assert (
        pb.RecommendBatchResponse.FromString(
            shop.recs.recommend_batch_encoded(kind, [], limit=4, **kwargs)
        ).results
        == []
    )


def test_client_batch_decoder_reads_protobuf() -> None:
    """decode_batch_results (the client's RecommendBatch reader) against the protobuf
    runtime's own encoding, unknown fields included; malformed bytes raise."""
    from segd.native import recs as kernels
    from segd.v1 import recommendations_pb2 as pb

    msg = pb.RecommendBatchResponse(
        results=[
            pb.ContactRecommendations(
                customer_id="c1", item_ids=["A", "é"], scores=[1.5, -0.25]
            ),
            pb.ContactRecommendations(customer_id="", item_ids=[], scores=[]),
            pb.ContactRecommendations(customer_id="c3", item_ids=["B"], scores=[3.0]),
        ]
    )
    raw = msg.SerializeToString()
    assert kernels.decode_batch_results(raw, {}) == {
        "c1": [("A", 1.5), ("é", -0.25)],
        "": [],
        "c3": [("B", 3.0)],
    }
    # an unknown varint field (9) before the results is skipped
    assert kernels.decode_batch_results(b"\x48\x05" + raw, {})["c3"] == [("B", 3.0)]
    for bad in (raw[:-3], b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x02\x12\x05"):
        with pytest.raises(ValueError):
            kernels.decode_batch_results(bad, {})
    # a message whose last contact is malformed adds none of its contacts
    kept: dict = {"earlier": []}
    with pytest.raises(ValueError):
        kernels.decode_batch_results(raw[:-3], kept)
    assert kept == {"earlier": []}


def test_large_batch_split_over_threads_is_the_same(shop: Engine) -> None:
    from segd.recs import PARALLEL_BATCH

    people = ["u1", "u3", "u12", "f1", "nobody", "v1", "ghost"] * (PARALLEL_BATCH // 6)
    assert len(people) > PARALLEL_BATCH
    whole = shop.recommend_batch("personal", people, limit=4)
    alone = {p: shop.recommend_batch("personal", [p], limit=4)[0] for p in set(people)}
    assert whole == [alone[p] for p in people]
    odd = people[:-1]  # halves of different sizes
    assert shop.recommend_batch("personal", odd, limit=4) == whole[:-1]


def test_result_pairs_are_not_left_to_the_cycle_collector(shop: Engine) -> None:
    """(item_id, score) tuples hold a str and a float, so they cannot be in a cycle:
    the kernels untrack them at once (a mass send's 10,000 tuples would otherwise
    count as long-lived objects and bring full collections closer, the RecommendBatch
    p99 of BENCHMARKS.md); the per-contact lists stay tracked (callers may mutate)."""
    import gc

    from segd.native import recs as kernels

    single = shop.recommend("related", item_ids=["A"])
    assert single and not any(gc.is_tracked(pair) for pair in single)
    raw = shop.recs.recommend_batch_encoded("personal", ["u1", "v1"])
    decoded = kernels.decode_batch_results(raw, {})
    assert decoded == dict(
        zip(["u1", "v1"], shop.recommend_batch("personal", ["u1", "v1"]), strict=True)
    )
    for pairs in [*decoded.values(), *shop.recommend_batch("personal", ["u1", "v1"])]:
        assert gc.is_tracked(pairs)
        assert pairs and not any(gc.is_tracked(pair) for pair in pairs)
    import numpy as np

    with pytest.raises(ValueError, match="2 pairs counted, 1 item ids"):
        kernels.pair_lists(
            ["A"], np.ones(2, dtype=np.float32), np.array([1, 1], dtype=np.int64)
        )
