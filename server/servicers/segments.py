"""SegmentService: counts, members, samples, exports, saved segments and explain."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc

from segd.errors import InvalidInput, OutOfRange
from segd.server import convert
from segd.server.servicers import deadline_of
from segd.v1 import segments_pb2 as pb
from segd.v1 import segments_pb2_grpc

DEFAULT_PAGE_SIZE = 1000
DEFAULT_SAMPLE_SIZE = 10
DEFAULT_CHUNK_SIZE = 10_000
MAX_PAGE_SIZE = 100_000  # also the largest sample and export chunk


def query_of(request: Any) -> Any:
    """The request's query for the engine: DSL text, an AST dict, or a saved-segment ref."""
    kind = request.WhichOneof("query")
    if kind == "dsl":
        if not request.dsl.strip():
            raise InvalidInput.at("dsl", "the segment text is empty")
        return request.dsl
    if kind == "condition":
        return convert.condition_to_ast(request.condition)
    if kind == "segment":
        if not request.segment:
            raise InvalidInput.at("segment", "a segment name is required")
        return {"segment": request.segment}
    fields = "dsl, condition" + (
        ", segment" if "segment" in request.DESCRIPTOR.fields_by_name else ""
    )
    raise InvalidInput.at("query", f"one of {fields} is required")


def _now(now_ms: int) -> float | None:
    return now_ms / 1000.0 if now_ms else None


def _size(value: int, default: int, field: str) -> int:
    """AIP-158 page sizes: 0 = default, over the maximum = the maximum, negative = error."""
    if value < 0:
        raise InvalidInput.at(field, f"must be >= 0, got {value}")
    return min(value or default, MAX_PAGE_SIZE)


def _query_key(request: Any) -> str:
    """What a page token is bound to: the query and its size, not the token itself."""
    kind = request.WhichOneof("query")
    body = (
        getattr(request, kind).SerializeToString()
        if kind == "condition"
        else (getattr(request, kind) if kind else "").encode()
    )
    return hashlib.sha256(f"{kind}:".encode() + body).hexdigest()[:16]


def _encode_token(offset: int, now_ms: int, key: str) -> str:
    raw = json.dumps({"o": offset, "n": now_ms, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, key: str) -> tuple[int, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, now_ms, token_key = int(data["o"]), int(data["n"]), str(data["k"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput.at("page_token", "malformed page token") from exc
    if token_key != key or offset < 0:
        raise InvalidInput.at("page_token", "the token belongs to another query")
    return offset, now_ms


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def _evaluate(
        self, request: Any, context: grpc.ServicerContext, now: float | None
    ) -> Any:
        return self._engine.segment(
            query_of(request), now=now, deadline=deadline_of(context)
        )

    def _count_of(
        self, name: str, context: grpc.ServicerContext, now_ms: int = 0
    ) -> int:
        ref = {"segment": name}
        return int(
            self._engine.segment(
                ref, now=_now(now_ms), deadline=deadline_of(context)
            ).count()
        )

    def Count(self, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        result = self._evaluate(request, context, _now(request.now_ms))
        return pb.CountResponse(
            count=result.count(),
            duration_ms=(time.perf_counter() - start) * 1e3,
            warnings=convert.warnings_to_proto(result.warnings),
        )

    def Members(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _size(request.page_size, DEFAULT_PAGE_SIZE, "page_size")
        key = _query_key(request)
        if request.page_token:
            offset, now_ms = _decode_token(request.page_token, key)
        else:
            # Pin the clock on the first page so relative periods hold still while paging.
            offset, now_ms = 0, request.now_ms or int(time.time() * 1000)
        result = self._evaluate(request, context, now_ms / 1000.0)
        total = result.count()
        if offset > total:
            raise OutOfRange(
                f"page_token: offset {offset} is past the end ({total} members)"
            )
        ids = result.ids(offset=offset, limit=size)
        end = offset + len(ids)
        token = _encode_token(end, now_ms, key) if end < total else ""
        return pb.MembersResponse(
            customer_ids=ids,
            next_page_token=token,
            total_size=total,
            warnings=convert.warnings_to_proto(result.warnings),
        )

    def Sample(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _size(request.size, DEFAULT_SAMPLE_SIZE, "size")
        result = self._evaluate(request, context, _now(request.now_ms))
        ids = result.sample(size, seed=request.seed)
        return pb.SampleResponse(
            customer_ids=ids,
            total_size=result.count(),
            warnings=convert.warnings_to_proto(result.warnings),
        )

    def Export(self, request: Any, context: grpc.ServicerContext) -> Iterator:
        chunk = _size(request.chunk_size, DEFAULT_CHUNK_SIZE, "chunk_size")
        result = self._evaluate(request, context, _now(request.now_ms))
        total = result.count()
        warnings = convert.warnings_to_proto(result.warnings)
        sent = False
        for ids in result.iter_ids(chunk=chunk):
            yield pb.ExportResponse(
                customer_ids=ids, total_size=total, warnings=[] if sent else warnings
            )
            sent = True
        if not sent:
            yield pb.ExportResponse(total_size=0, warnings=warnings)

    def Create(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = request.name or _missing("name")
        saved = self._engine.create_segment(
            name,
            query_of(request),
            static=request.kind == pb.SEGMENT_KIND_STATIC,
            now=_now(request.now_ms),
        )
        count = self._count_of(name, context, request.now_ms)
        segment = convert.segment_to_proto(saved, count)
        return pb.CreateResponse(segment=segment)

    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:
        saved = self._engine.get_segment(request.name or _missing("name"))
        count = self._count_of(saved.name, context, request.now_ms)
        segment = convert.segment_to_proto(saved, count)
        return pb.GetResponse(segment=segment)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        out = []
        for saved in self._engine.list_segments():
            count = (
                self._count_of(saved.name, context, request.now_ms)
                if request.include_counts
                else -1
            )
            out.append(convert.segment_to_proto(saved, count))
        return pb.ListResponse(segments=out)

    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = request.name or _missing("name")
        saved = self._engine.update_segment(
            name,
            query_of(request),
            version=request.version or None,
            now=_now(request.now_ms),
        )
        count = self._count_of(name, context, request.now_ms)
        segment = convert.segment_to_proto(saved, count)
        return pb.UpdateResponse(segment=segment)

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._engine.delete_segment(request.name or _missing("name"))
        return pb.DeleteResponse()

    def Explain(self, request: Any, context: grpc.ServicerContext) -> Any:
        """One compile, one evaluation: the tree with whole-base counts and, with a
        customer_id, its verdict and evidence per node (Engine.explain)."""
        explanation = self._engine.explain(
            query_of(request),
            request.customer_id or None,
            now=_now(request.now_ms),
            deadline=deadline_of(context),
        )
        return convert.explanation_to_proto(explanation)


def _missing(field: str) -> str:
    raise InvalidInput.at(field, "is required")
