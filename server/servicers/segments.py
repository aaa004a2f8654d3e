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
from segd.segments.limits import Budget
from segd.server import convert
from segd.server.servicers import deadline_of
from segd.v1 import segments_pb2 as pb
from segd.v1 import segments_pb2_grpc

DEFAULT_PAGE_SIZE = 1000
DEFAULT_SAMPLE_SIZE = 10
DEFAULT_CHUNK_SIZE = 10_000
MAX_PAGE_SIZE = 100_000  # also the largest sample and export chunk
MAX_PAGE_TOKEN_CHARS = 512  # tokens this server issues are under 100 characters
# `now_ms` must name a day the calendar can print: year 1970 to 9999.
MAX_NOW_MS = 253_402_300_799_999


def budget_of(context: grpc.ServicerContext | None) -> Budget | None:
    """The call's deadline and cancellation, for parsing and conversion to poll."""
    if context is None:
        return None
    return Budget(deadline_of(context), lambda: not context.is_active())


def query_of(request: Any, context: grpc.ServicerContext | None = None) -> Any:
    """The request's query for the engine: DSL text, an AST dict, or a saved-segment ref.

    A typed ``Condition`` is converted here within the query limits (checked before its
    children are looked at), polling the call's deadline and cancellation.
    """
    kind = request.WhichOneof("query")
    if kind == "dsl":
        if not request.dsl.strip():
            raise InvalidInput.at("dsl", "the segment text is empty")
        return request.dsl
    if kind == "condition":
        return convert.condition_to_ast(request.condition, budget=budget_of(context))
    if kind == "segment":
        if not request.segment:
            raise InvalidInput.at("segment", "a segment name is required")
        return {"segment": request.segment}
    fields = "dsl, condition" + (
        ", segment" if "segment" in request.DESCRIPTOR.fields_by_name else ""
    )
    raise InvalidInput.at("query", f"one of {fields} is required")


def _now(now_ms: int) -> float | None:
    if not 0 <= now_ms <= MAX_NOW_MS:
        raise InvalidInput.at(
            "now_ms",
            f"must be 0 (the server's clock) or UTC milliseconds up to {MAX_NOW_MS} "
            f"(9999-12-31), got {now_ms}",
        )
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
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidInput.at("page_token", "malformed page token (too long)")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, now_ms, token_key = data["o"], data["n"], data["k"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInput.at("page_token", "malformed page token") from exc
    # JSON also reads Infinity, NaN, floats and huge integers: only our own ints pass.
    if not (
        type(offset) is int
        and type(now_ms) is int
        and type(token_key) is str
        and 0 <= offset < 2**32
        and 0 < now_ms <= MAX_NOW_MS
    ):
        raise InvalidInput.at("page_token", "malformed page token")
    if token_key != key:
        raise InvalidInput.at("page_token", "the token belongs to another query")
    return offset, now_ms


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def _prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The request's query read once (parsed / converted within the limits)."""
        return self._engine.prepare(
            query_of(request, context), deadline=budget_of(context)
        )

    def _evaluate(
        self, request: Any, context: grpc.ServicerContext, now: float | None
    ) -> Any:
        query = self._prepare(request, context)
        return self._engine.segment(query, now=now, deadline=deadline_of(context))

    def _count_of(
        self, name: str, context: grpc.ServicerContext, now_ms: int = 0
    ) -> int:
        ref = {"segment": name}
        return int(
            self._engine.segment(
                ref, now=_now(now_ms), deadline=deadline_of(context)
            ).count()
        )

    def _saved_count(
        self, saved: Any, wanted: bool, context: Any, now_ms: int = 0
    ) -> int:
        """A segment's count for a response: static ones know it, dynamic ones are
        evaluated only when the caller asked (-1 otherwise)."""
        if saved.static and saved.members is not None:
            return len(saved.members)
        return self._count_of(saved.name, context, now_ms) if wanted else -1

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
            _now(request.now_ms)
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
        responses: list[Any] = []
        self._engine.create_segment(
            name,
            self._prepare(request, context),
            static=request.kind == pb.SEGMENT_KIND_STATIC,
            now=_now(request.now_ms),
            count=request.include_count,
            deadline=deadline_of(context),
            respond=_responder(pb.CreateResponse, responses),
        )
        return responses[0]

    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:
        saved = self._engine.get_segment(request.name or _missing("name"))
        count = self._saved_count(saved, request.include_count, context, request.now_ms)
        return pb.GetResponse(segment=convert.segment_to_proto(saved, count))

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
        responses: list[Any] = []
        self._engine.update_segment(
            name,
            self._prepare(request, context),
            version=request.version or None,
            now=_now(request.now_ms),
            count=request.include_count,
            deadline=deadline_of(context),
            respond=_responder(pb.UpdateResponse, responses),
        )
        return responses[0]

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._engine.delete_segment(request.name or _missing("name"))
        return pb.DeleteResponse()

    def Explain(self, request: Any, context: grpc.ServicerContext) -> Any:
        """One compile, one evaluation: the tree with whole-base counts and, with a
        customer_id, its verdict and evidence per node (Engine.explain)."""
        explanation = self._engine.explain(
            query_of(request, context),
            request.customer_id or None,
            now=_now(request.now_ms),
            deadline=deadline_of(context),
        )
        return convert.explanation_to_proto(explanation)

    def Changes(self, request: Any, context: grpc.ServicerContext) -> Iterator:
        """The change log from ``from_position`` on, in chunks of positions; with
        ``follow``, then each new change as it is logged, until the client goes away."""
        chunk = _size(request.chunk_size, DEFAULT_CHUNK_SIZE, "chunk_size")
        if request.from_position < 0:
            raise InvalidInput.at("from_position", "expected a position >= 0")
        engine = self._engine
        name = request.segment or None
        if name is not None:
            engine.get_segment(name)  # NOT_FOUND for an unknown segment
        since = request.since_ms / 1000 if request.since_ms else None
        until = request.until_ms / 1000 if request.until_ms else None
        pos = request.from_position
        while True:
            end = engine.changes_position
            sent = False
            while pos < end:
                stop = min(end, pos + chunk)
                table = engine.segment_changes(name, since, until, start=pos, stop=stop)
                pos = stop
                if table.num_rows:
                    sent = True
                    yield _changes_message(table, pos, engine.clock)
            if not request.follow:
                if not sent:
                    yield pb.ChangesResponse(
                        next_position=pos, clock_ms=_clock_ms(engine.clock)
                    )
                return
            if not context.is_active():
                return
            live = engine.live
            with live.grown:
                if engine.changes_position <= pos:
                    live.grown.wait(0.5)

    def History(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = request.segment or _missing("segment")
        table = self._engine.segment_history(name)
        days = table.column("day").to_pylist()
        counts = table.column("count").to_pylist()
        return pb.SegmentHistoryResponse(
            days=[
                pb.SegmentHistoryDay(day=d.isoformat(), count=c)
                for d, c in zip(days, counts, strict=True)
            ]
        )


def _clock_ms(clock: float | None) -> int:
    return 0 if clock is None else round(clock * 1000)


def _changes_message(table: Any, next_position: int, clock: float | None) -> Any:
    kinds = {"entered": pb.CHANGE_KIND_ENTERED, "exited": pb.CHANGE_KIND_EXITED}
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    at_ms = table.column("at").cast("int64").to_pylist()
    return pb.ChangesResponse(
        changes=[
            pb.SegmentChange(
                segment=seg,
                customer_id=cid,
                change=kinds[change],
                at_ms=at,
                cause=cause,
                position=position,
            )
            for seg, cid, change, at, cause, position in zip(
                cols["segment"],
                cols["customer_id"],
                cols["change"],
                at_ms,
                cols["cause"],
                cols["position"],
                strict=True,
            )
        ],
        next_position=next_position,
        clock_ms=_clock_ms(clock),
    )


def _missing(field: str) -> str:
    raise InvalidInput.at(field, "is required")


def _responder(response_type: Any, out: list[Any]) -> Any:
    """``respond`` for Engine.create_segment / update_segment: builds and serialises the
    response before the segment is stored, so a response that cannot be sent leaves
    nothing saved."""

    def respond(saved: Any, count: int | None) -> None:
        response = response_type(
            segment=convert.segment_to_proto(saved, -1 if count is None else count)
        )
        response.SerializeToString()
        out.append(response)

    return respond
