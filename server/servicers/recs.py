"""RecommendationService: Recommend, RecommendBatch (streamed), Rebuild, Status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc

from segd.errors import InvalidInput
from segd.v1 import recommendations_pb2 as pb
from segd.v1 import recommendations_pb2_grpc

DEFAULT_LIMIT = 10
BATCH_CHUNK = 1024  # contacts per streamed message ...
BATCH_CHUNK_ITEMS = 20_000  # ... fewer for a large limit (message size ~ items)
MAX_BATCH = 100_000


def lookup_args(req: Any) -> dict[str, Any]:
    """Engine.recommend keyword arguments of a RecommendRequest."""
    return {
        "item_ids": list(req.item_ids) or None,
        "category": req.category or None,
        "phrase": req.phrase or None,
        "filters": req.filters or None,
        "limit": req.limit or DEFAULT_LIMIT,
        "exclude_bought": not req.include_bought,
        "event": req.event or "order",
    }


def status_message(stats: dict[str, Any]) -> pb.RecsStatus:
    if not stats.get("built"):
        return pb.RecsStatus(built=False)
    return pb.RecsStatus(
        built=True,
        as_of_ms=int(stats["as_of_s"]) * 1000,
        items=stats["items"],
        contacts=stats["contacts"],
        categories=stats["categories"],
        phrases=stats["phrases"],
        related_pairs=stats["related_pairs"],
        alternative_pairs=stats["alternative_pairs"],
        bytes=stats["bytes"],
        build_seconds=stats["build_seconds"],
        dirty_contacts=stats.get("dirty_contacts", 0),
        config_json=json.dumps(stats["config"], sort_keys=True),
    )


class RecsServicer(recommendations_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def Recommend(self, request: Any, context: grpc.ServicerContext) -> Any:
        result = self._engine.recommend(
            request.kind,
            customer_id=request.customer_id or None,
            **lookup_args(request),
        )
        items = [pb.RecommendedItem(item_id=i, score=s) for i, s in result]
        if request.with_details and items:
            details = self._engine.describe_items([i.item_id for i in items])
            for item, d in zip(items, details, strict=True):
                item.name = d["name"] or ""
                item.category = d["category"] or ""
                if d["price"] is not None:
                    item.price, item.has_price = d["price"], True
        model = self._engine.recs.model
        as_of = 0 if model is None else model.as_of_s * 1000
        return pb.RecommendResponse(items=items, model_as_of_ms=as_of)

    def RecommendBatch(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        ids = list(request.customer_ids)
        if len(ids) > MAX_BATCH:
            raise InvalidInput.at(
                "customer_ids", f"{len(ids)} contacts, at most {MAX_BATCH} per call"
            )
        args = lookup_args(request.request)
        limit = args["limit"] if type(args["limit"]) is int and args["limit"] > 0 else 1
        chunk = max(1, min(BATCH_CHUNK, BATCH_CHUNK_ITEMS // limit))
        for lo in range(0, len(ids), chunk):
            # one kernel call and one encoded message per chunk: no Python object per
            # contact (the bytes are parsed by the C protobuf runtime)
            raw = self._engine.recs.recommend_batch_encoded(
                request.request.kind, ids[lo : lo + chunk], **args
            )
            yield pb.RecommendBatchResponse.FromString(raw)

    def Rebuild(self, request: Any, context: grpc.ServicerContext) -> Any:
        config = None
        if request.config_json:
            try:
                config = json.loads(request.config_json)
            except ValueError as exc:
                raise InvalidInput.at("config_json", f"not JSON: {exc}") from None
            if not isinstance(config, dict):
                raise InvalidInput.at("config_json", "expected a JSON object")
        self._engine.rebuild_recommendations(config)
        return status_message(self._engine.recommendation_stats())

    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:
        return status_message(self._engine.recommendation_stats())
