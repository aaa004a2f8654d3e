"""RecommendationService over a real gRPC server on 127.0.0.1, and ``segctl recs``."""

from __future__ import annotations

import json

import grpc
import pytest

from segd import Engine
from segd.server.client import SegdRpcError

from ..unit.test_recs import _shop
from .conftest import run_segctl


@pytest.fixture
def recs_srv(make_server):
    engine = _shop(Engine())
    engine.upsert_items(
        [{"item_id": "B", "name": "Camping stove"}, {"item_id": "C", "name": "Mug"}]
    )
    return make_server(engine=engine)


def test_recommend_over_grpc(recs_srv) -> None:
    with recs_srv.client() as c:
        got = c.recommend("related", item_ids=["A"], limit=2, details=True)
        assert [r["item_id"] for r in got] == ["B", "C"]
        assert got[0]["name"] == "Camping stove"
        assert got[0]["category"] == "Outdoor/Cookware/Stoves"
        assert got[0]["price"] == 3000.0
        assert got == [{**r, "score": pytest.approx(r["score"], rel=1e-6)} for r in got]
        popular = c.recommend(
            "popular", filters='colour = "red", size = "S", price < 5000'
        )
        assert popular == [{"item_id": "H", "score": 3.0}]
        with pytest.raises(SegdRpcError) as err:
            c.recommend("related", item_ids=["nope"])
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope" in str(err.value)
        with pytest.raises(SegdRpcError) as err:
            c.recommend("popular", filters="colur = 'red'")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_streams_every_contact(recs_srv) -> None:
    ids = ["u1", "u3", "ghost"] * 400  # 1,200 contacts: several streamed chunks
    with recs_srv.client() as c:
        got = c.recommend_batch("personal", ids, limit=3)
        assert set(got) == {"u1", "u3", "ghost"}
        single = c.recommend("personal", customer_id="u3", limit=3)
        assert [i for i, _ in got["u3"]] == [r["item_id"] for r in single]
        status = c.rebuild_recommendations({"neighbours": 5})
        assert status["built"] is True
        assert json.loads(status["config_json"])["neighbours"] == 5
        assert c.recommendation_status()["related_pairs"] == status["related_pairs"]


def test_batch_as_flat_arrays(recs_srv) -> None:
    """recommend_batch_arrays: the same answers as recommend_batch, flat and in the
    order asked (a repeated id is answered each time), errors the same."""
    ids = ["u1", "u3", "ghost", "v1"] * 300  # 1,200 contacts: several chunks
    with recs_srv.client() as c:
        by_contact = c.recommend_batch("personal", ids, limit=3)
        cust, counts, items, scores = c.recommend_batch_arrays("personal", ids, limit=3)
        assert cust == ids
        assert counts.dtype == "int64" and scores.dtype == "float64"
        assert int(counts.sum()) == len(items) == len(scores)
        pos = 0
        for cid, k in zip(cust, counts.tolist(), strict=True):
            mine = zip(
                items[pos : pos + k], scores[pos : pos + k].tolist(), strict=True
            )
            got = list(mine)
            assert got == by_contact[cid]
            pos += k
        with pytest.raises(SegdRpcError) as err:
            c.recommend_batch_arrays("personal", ids, limit=0, filters="colur = 1")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_segctl_recs(recs_srv) -> None:
    r = run_segctl(recs_srv, "recs", "related", "A", "--limit", "2")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["item", "name", "category", "price", "score"]
    assert lines[1].split()[:3] == ["B", "Camping", "stove"]
    r = run_segctl(recs_srv, "recs", "popular", "--category", "Fashion", "--json")
    assert [row["item_id"] for row in json.loads(r.out)] == ["K", "J", "H", "I"]
    r = run_segctl(recs_srv, "recs", "personal", "u3", "--limit", "1", "--json")
    assert json.loads(r.out)[0]["item_id"] == "B"
    r = run_segctl(recs_srv, "recs", "alternatives", "A", "--json")
    assert [row["item_id"] for row in json.loads(r.out)] == ["D"]
    r = run_segctl(recs_srv, "recs", "related", "nope")
    assert r.code != 0 and "nope" in r.err
    r = run_segctl(recs_srv, "recs", "status")
    assert r.code == 0 and "related pairs" in r.out
