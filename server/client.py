"""``SegdClient``: a thin, typed Python client for the segd gRPC API.

    from segd.server.client import SegdClient
    with SegdClient("127.0.0.1:50051", token="s3cret") as segd:
        segd.ingest_events([{"customer_id": "c1", "ts": 1735689600, "type": "view"}])
        segd.count('gender = "m" and age >= 35')          # -> int
        segd.members("in segment \\"vip\\"", limit=500)     # -> list[str]

Queries are DSL text (``str``), an AST ``dict`` or a ``Condition`` message; saved segments
are referenced with ``segment="vip"``. Every failed call raises ``SegdRpcError`` with the
status code and message. Calls that are safe to repeat are retried on UNAVAILABLE (bounded,
exponential backoff with jitter). Every ingest call carries a fresh idempotency key
(``new_idempotency_key``), kept across its retries, so the server applies a batch once
however often it is sent.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import numpy as np
import pyarrow as pa
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segd.native import recs as recs_kernels
from segd.server import convert, rpc_status
from segd.timeutil import datetime_to_ms, ms_to_datetime
from segd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
    segments_pb2,
    segments_pb2_grpc,
)

DEFAULT_ADDRESS = "127.0.0.1:50051"
TableLike: TypeAlias = pa.Table | pa.RecordBatch | Iterable[dict[str, Any]]


class SegdRpcError(Exception):
    """A failed call: ``code`` (grpc.StatusCode), ``message``, field ``violations``
    (``[(field, description)]`` from INVALID_ARGUMENT), the input error's structure
    ``info`` (``{"kind": "events", "row": "12", "column": "ts", "reason": ...}``, from
    the ErrorInfo detail) and the server's ``error_id`` (INTERNAL)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[tuple[str, str]] | None = None,
        error_id: str | None = None,
        info: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations or []
        self.error_id = error_id
        self.info = info or {}

    @property
    def row(self) -> int | None:
        """0-based row of the bad value in its batch, when the server named one."""
        return int(self.info["row"]) if "row" in self.info else None

    @property
    def column(self) -> str | None:
        return self.info.get("column")

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> SegdRpcError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        violations: list[tuple[str, str]] = []
        error_id = None
        info: dict[str, str] = {}
        trailers = (
            err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        )
        for key, value in trailers or ():
            if key == rpc_status.DETAILS_KEY:
                violations = rpc_status.decode_violations(value)
                decoded = rpc_status.decode_error_info(value)
                if decoded is not None:
                    info = decoded[1]
            elif key == "segd-error-id":
                error_id = value
        return cls(code, message or "", violations, error_id, info)


@dataclass(frozen=True)
class IngestResult:
    rows: int  # rows applied by this call (or stream)
    sequence: int  # server-wide sequence number of the last event applied
    batches: int = 1
    duplicates: int = 0  # events dropped: their event_id was seen before


def to_arrow_ipc(data: TableLike) -> bytes:
    """A table, record batch or iterable of dicts -> one Arrow IPC stream."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    elif not isinstance(data, pa.Table):
        data = pa.Table.from_pylist(list(data))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return sink.getvalue().to_pybytes()


EVENT_STRING_COLUMNS = ("customer_id", "type", "item_id", "order_id", "event_id")


def to_event_columns(data: TableLike) -> ingest_pb2.EventColumns:
    """An events table (docs/data-model.md columns), record batch or iterable of dicts
    -> ``EventColumns``, the typed columnar batch: NULL strings are sent empty (the
    server reads an empty optional string as NULL), NULL amounts as unset; every other
    column is a string property."""
    import numpy as np
    import pyarrow.compute as pc

    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    elif not isinstance(data, pa.Table):
        data = pa.Table.from_pylist(list(data))
    out = ingest_pb2.EventColumns()
    rows = data.num_rows
    for name in data.column_names:
        column = data[name]
        if name in ("ts", "ts_ms"):
            if pa.types.is_timestamp(column.type):
                ms = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
            else:  # integer epoch seconds, as the Arrow path reads them
                ms = pc.multiply(column.cast(pa.int64()), 1000)
            out.ts_ms.extend(ms.to_numpy(zero_copy_only=False).tolist())
        elif name == "amount":
            amount = column.cast(pa.float64())
            if amount.null_count:
                valid = amount.is_valid().to_numpy(zero_copy_only=False)
                out.amount_set.extend(valid.tolist())
            filled = pc.fill_null(amount, 0.0).to_numpy(zero_copy_only=False)
            out.amount.extend(filled.tolist())
        else:
            target = (
                getattr(out, name)
                if name in EVENT_STRING_COLUMNS
                else out.properties[name]
            )
            arr = pc.fill_null(column.cast(pa.string()), "").combine_chunks()
            if rows == 0:
                target.offsets.append(0)
                continue
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
                arr.offset : arr.offset + rows + 1
            ]
            start, end = int(offsets[0]), int(offsets[-1])
            target.offsets.extend((offsets - start).tolist())
            target.data = arr.buffers()[2][start:end].to_pybytes()
    return out


def new_idempotency_key() -> str:
    """A fresh key for one ingest call (random, 32 hex digits)."""
    return uuid.uuid4().hex


def _now_ms(now: dt.datetime | float | int | None) -> int:
    """``now`` (a datetime, naive = UTC as in the engine, or epoch seconds) -> wire ms;
    0 (unset: the server's clock) for None."""
    if now is None:
        return 0
    if isinstance(now, dt.datetime):
        return datetime_to_ms(now)
    return round(float(now) * 1000)


def query_fields(query: Any = None, segment: str | None = None) -> dict[str, Any]:
    """The request fields for a query: ``dsl``, ``condition`` or ``segment``."""
    if segment is not None:
        if query is not None:
            raise TypeError("give a query or segment=, not both")
        return {"segment": segment}
    if isinstance(query, str):
        return {"dsl": query}
    if isinstance(query, dict):
        return {"condition": convert.ast_to_condition(query)}
    if isinstance(query, common_pb2.Condition):
        return {"condition": query}
    raise TypeError(f"a query is DSL text, an AST dict or a Condition, got {query!r}")


def segment_to_dict(segment: segments_pb2.Segment) -> dict[str, Any]:
    return {
        "name": segment.name,
        "dsl": segment.dsl,
        "kind": "static"
        if segment.kind == segments_pb2.SEGMENT_KIND_STATIC
        else "dynamic",
        "version": segment.version,
        "created_ms": segment.created_ms,
        "updated_ms": segment.updated_ms,
        "count": segment.count if segment.count >= 0 else None,
        "ast": convert.condition_to_ast(segment.condition),
    }


def warning_to_dict(w: segments_pb2.QueryWarning) -> dict[str, str]:
    """A QueryWarning as plain data: field (AST path), message, subject, value,
    suggestion."""
    return {
        "field": w.field,
        "message": w.message,
        "subject": w.subject,
        "value": w.value,
        "suggestion": w.suggestion,
    }


def _ms_to_iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")


def _value(v: common_pb2.Value) -> Any:
    """A Value as JSON data (timestamps as ISO text)."""
    kind = v.WhichOneof("kind")
    if kind == "timestamp_ms":
        return _ms_to_iso(v.timestamp_ms)
    if kind == "list_value":
        return [_value(x) for x in v.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(v, kind)


def evidence_to_dict(e: segments_pb2.Evidence) -> dict[str, Any]:
    """Evidence as plain data: ``{"summary": ..., "<kind>": {...}}``."""
    kind = e.WhichOneof("kind")
    out: dict[str, Any] = {"summary": e.summary}
    if kind == "attribute":
        a = e.attribute
        out["attribute"] = {"attribute": a.attribute, "value": _value(a.value)}
        if a.derived_from:
            out["attribute"]["derived_from"] = a.derived_from
    elif kind == "aggregate":
        g = e.aggregate
        out["aggregate"] = {"aggregate": g.aggregate, "value": _value(g.value)}
    elif kind == "event":
        v = e.event
        out["event"] = {
            "event": v.event,
            "matching_events": v.matching_events,
            "window_from": _ms_to_iso(v.window_from_ms)
            if v.HasField("window_from_ms")
            else None,
            "window_to": _ms_to_iso(v.window_to_ms)
            if v.HasField("window_to_ms")
            else None,
            "count_min": v.count_min,
            "count_max": v.count_max if v.HasField("count_max") else None,
            "last_times": [_ms_to_iso(t) for t in v.last_times_ms],
        }
        if v.HasField("sum"):
            out["event"]["sum"] = v.sum
        if v.then_no:
            out["event"]["then_no"] = v.then_no
        if v.merged_from:
            out["event"]["merged_from"] = {
                c: int(k) for c, k in (m.rsplit(":", 1) for m in v.merged_from)
            }
    elif kind == "segment":
        out["segment"] = {"segment": e.segment.segment, "static": e.segment.static}
    return out


def explain_node_to_dict(node: segments_pb2.ExplainNode) -> dict[str, Any]:
    """An ExplainNode tree as plain data that mirrors it: condition, kind, operator,
    count, duration_ms, then matched / evidence (when a contact was explained) and
    children (and / or / not / dynamic segment references only)."""

    def one(n: segments_pb2.ExplainNode) -> dict[str, Any]:
        out: dict[str, Any] = {
            "condition": n.condition,
            "kind": n.kind,
            "operator": n.operator,
            "count": n.count,
            "duration_ms": n.duration_ms,
        }
        if n.HasField("matched"):
            out["matched"] = n.matched
        if n.HasField("evidence"):
            out["evidence"] = evidence_to_dict(n.evidence)
        return out

    root = one(node)
    stack = [(node, root)]
    while stack:  # no recursion: segment references can nest deeper than an AST
        src, dst = stack.pop()
        if src.children:
            dst["children"] = []
            for child in src.children:
                d = one(child)
                dst["children"].append(d)
                stack.append((child, d))
    return root


def explain_response_to_dict(resp: segments_pb2.ExplainResponse) -> dict[str, Any]:
    """The ExplainResponse as plain data (what ``segctl segment explain --json`` prints)."""
    out: dict[str, Any] = {
        "count": resp.count,
        "contacts": resp.contacts,
        "count_meaning": resp.count_meaning,
        "now": _ms_to_iso(resp.now_ms),
        "duration_ms": resp.duration_ms,
    }
    if resp.customer_id:
        out["customer_id"] = resp.customer_id
        out["member"] = resp.contact_matched
        out["contact_attributes"] = {
            k: _value(v) for k, v in sorted(resp.contact_attributes.items())
        }
    out["warnings"] = [warning_to_dict(w) for w in resp.warnings]
    out["tree"] = explain_node_to_dict(resp.plan)
    return out


@dataclass(frozen=True)
class CountResult:
    count: int
    warnings: list[dict[str, str]]  # see warning_to_dict
    duration_ms: float = 0.0


@dataclass(frozen=True)
class SampleResult:
    customer_ids: list[str]
    total_size: int
    warnings: list[dict[str, str]]


class SegdClient:
    """A connection to one segd server. Thread-safe; close it (or use ``with``)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        token: str | None = None,
        tls_ca: str | bytes | None = None,
        timeout: float | None = 30.0,
        *,
        retries: int = 4,
        backoff_seconds: float = 0.1,
        max_message_mb: int = 64,
    ) -> None:
        """``tls_ca``: a PEM path or bytes of the CA to trust (turns TLS on); ``timeout``:
        the default deadline of each call in seconds (None: no deadline)."""
        options = [
            ("grpc.max_send_message_length", max_message_mb * 1024 * 1024),
            ("grpc.max_receive_message_length", max_message_mb * 1024 * 1024),
        ]
        if tls_ca is not None:
            ca = tls_ca
            if isinstance(ca, str):
                with open(ca, "rb") as f:
                    ca = f.read()
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self.address = address
        self.timeout = timeout
        self._retries = retries
        self._backoff = backoff_seconds
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.ingest_stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self.segments_stub = segments_pb2_grpc.SegmentServiceStub(self._channel)
        self.admin_stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.health_stub = health_pb2_grpc.HealthStub(self._channel)
        self.recs_stub = recommendations_pb2_grpc.RecommendationServiceStub(
            self._channel
        )
        self._recommend_batch_raw = self._channel.unary_stream(
            "/segd.v1.RecommendationService/RecommendBatch",
            request_serializer=recommendations_pb2.RecommendBatchRequest.SerializeToString,
            response_deserializer=None,  # bytes: see recommend_batch
        )

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SegdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, timeout: float | None | str) -> float | None:
        return self.timeout if timeout == "default" else timeout  # type: ignore[return-value]

    def call(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None | str = "default",
        idempotent: bool = True,
    ) -> Any:
        """Invoke a unary stub method with the token and deadline; retry UNAVAILABLE."""
        attempt = 0
        while True:
            try:
                return method(
                    request, timeout=self._timeout(timeout), metadata=self._metadata
                )
            except grpc.RpcError as err:
                retry = (
                    idempotent
                    and attempt < self._retries
                    and err.code() == grpc.StatusCode.UNAVAILABLE
                )
                if not retry:
                    raise SegdRpcError.from_rpc(err) from None
            delay = self._backoff * (2**attempt)
            time.sleep(delay * (0.5 + random.random()))
            attempt += 1

    # ------------------------------------------------------------ ingest

    def upsert_contacts(
        self,
        data: TableLike,
        *,
        idempotency_key: str | None = None,
        on_conflict: str = "",
    ) -> int:
        """Insert or update contacts (``customer_id`` + attribute columns); rows applied.
        Retried on UNAVAILABLE under one idempotency key (fresh unless given). Rows with
        a NULL customer_id are named by link columns; `on_conflict`: reject or merge."""
        req = ingest_pb2.UpsertContactsRequest(
            arrow_ipc=to_arrow_ipc(data),
            idempotency_key=idempotency_key or new_idempotency_key(),
            on_conflict=on_conflict,
        )
        return self.call(self.ingest_stub.UpsertContacts, req).rows

    def upsert_items(
        self, data: TableLike, *, idempotency_key: str | None = None
    ) -> int:
        """Insert or update catalog items (``item_id``, ``category``, ...); rows applied."""
        req = ingest_pb2.UpsertItemsRequest(
            arrow_ipc=to_arrow_ipc(data),
            idempotency_key=idempotency_key or new_idempotency_key(),
        )
        return self.call(self.ingest_stub.UpsertItems, req).rows

    def ingest_events(
        self,
        data: TableLike | ingest_pb2.EventBatch | ingest_pb2.EventColumns,
        *,
        idempotency_key: str | None = None,
        on_conflict: str = "",
    ) -> IngestResult:
        """Append one batch of events (all or nothing). Retried on UNAVAILABLE under one
        idempotency key (fresh unless given), so a retry never applies it twice. Events
        may name their contact by link columns; `on_conflict`: reject or merge."""
        key = idempotency_key or new_idempotency_key()
        if isinstance(data, ingest_pb2.EventBatch):
            req = ingest_pb2.IngestEventsRequest(
                events=data, idempotency_key=key, on_conflict=on_conflict
            )
        elif isinstance(data, ingest_pb2.EventColumns):
            req = ingest_pb2.IngestEventsRequest(
                columns=data, idempotency_key=key, on_conflict=on_conflict
            )
        else:
            req = ingest_pb2.IngestEventsRequest(
                arrow_ipc=to_arrow_ipc(data),
                idempotency_key=key,
                on_conflict=on_conflict,
            )
        resp = self.call(self.ingest_stub.IngestEvents, req)
        return IngestResult(resp.rows, resp.sequence, duplicates=resp.duplicates)

    def stream_events(
        self,
        batches: Iterable[TableLike],
        *,
        on_ack: Callable[[ingest_pb2.IngestAck], None] | None = None,
        timeout: float | None | str = None,
        source: ingest_pb2.EventSource | None = None,
        columns: bool = False,
    ) -> IngestResult:
        """Append many batches over one StreamEvents stream; ``on_ack`` sees each ack.

        A bad batch raises ``SegdRpcError`` (INVALID_ARGUMENT, "batch N: ..."); the
        batches acknowledged before it stay applied. ``source`` (a file's content
        digest) goes with the first batch: content loaded before is refused with
        ALREADY_EXISTS unless ``source.force``. Batches go as Arrow IPC, or with
        ``columns`` as typed ``EventColumns``."""

        def requests() -> Iterator[ingest_pb2.IngestEventsRequest]:
            for i, b in enumerate(batches):
                key = new_idempotency_key()
                if columns:
                    req = ingest_pb2.IngestEventsRequest(
                        columns=to_event_columns(b), idempotency_key=key
                    )
                else:
                    req = ingest_pb2.IngestEventsRequest(
                        arrow_ipc=to_arrow_ipc(b), idempotency_key=key
                    )
                if i == 0 and source is not None:
                    req.source.CopyFrom(source)
                yield req

        rows = sequence = count = duplicates = 0
        try:
            for ack in self.ingest_stub.StreamEvents(
                requests(), timeout=self._timeout(timeout), metadata=self._metadata
            ):
                rows, sequence, count = rows + ack.rows, ack.sequence, count + 1
                duplicates += ack.duplicates
                if on_ack is not None:
                    on_ack(ack)
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None
        return IngestResult(rows, sequence, count, duplicates)

    def merge_contacts(self, customer_id: str, merged_ids: list[str]) -> int:
        """Merge each of `merged_ids` into `customer_id` (docs/data-model.md
        "Identity"); the number merged. Not retried: a repeat would find them merged."""
        req = ingest_pb2.MergeContactsRequest(
            customer_id=customer_id, merged_ids=merged_ids
        )
        return self.call(self.ingest_stub.MergeContacts, req, idempotent=False).merged

    def link_identity(self, customer_id: str, kind: str, value: str) -> str:
        """Link (kind, value) to a contact; the value as stored (normalised). A repeat
        is a no-op, so it is retried like a read."""
        req = ingest_pb2.LinkIdentityRequest(
            customer_id=customer_id, kind=kind, value=value
        )
        return self.call(self.ingest_stub.LinkIdentity, req).value

    def unlink_identity(self, customer_id: str, kind: str, value: str) -> None:
        req = ingest_pb2.UnlinkIdentityRequest(
            customer_id=customer_id, kind=kind, value=value
        )
        self.call(self.ingest_stub.UnlinkIdentity, req, idempotent=False)

    def resolve(self, kind: str, value: str) -> str | None:
        """The customer_id a link value (or a possibly merged customer_id) names."""
        req = ingest_pb2.ResolveRequest(kind=kind, value=value)
        resp = self.call(self.ingest_stub.Resolve, req)
        return resp.customer_id if resp.found else None

    def get_contact(self, customer_id: str, recent_events: int = 10) -> dict[str, Any]:
        """Profile, links, aggregates (times ISO or None) and latest events."""
        req = ingest_pb2.GetContactRequest(
            customer_id=customer_id, recent_events=recent_events
        )
        r = self.call(self.ingest_stub.GetContact, req)
        links: dict[str, list[str]] = {}
        for link in r.links:
            links.setdefault(link.kind, []).append(link.value)

        def iso(ms: int) -> str | None:
            return _ms_to_iso(ms) if ms else None

        return {
            "customer_id": r.customer_id,
            "profile": {k: _value(v) for k, v in sorted(r.profile.items())},
            "links": links,
            "aggregates": {
                "orders_count": r.orders_count,
                "revenue": r.revenue,
                "first_order": iso(r.first_order_ms),
                "last_order": iso(r.last_order_ms),
                "last_visit": iso(r.last_visit_ms),
                "last_email_open": iso(r.last_email_open_ms),
            },
            "events": [
                {
                    "type": e.type,
                    "time": _ms_to_iso(e.ts_ms),
                    "merged_from": e.merged_from or None,
                }
                for e in r.events
            ],
        }

    # ------------------------------------------------------------ segments

    def count(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        now: Any = None,
        timeout: float | None | str = "default",
    ) -> int:
        """How many contacts match (DSL text, AST dict, Condition, or segment=NAME)."""
        return self.count_result(query, segment=segment, now=now, timeout=timeout).count

    def count_result(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        now: Any = None,
        timeout: float | None | str = "default",
    ) -> CountResult:
        """The count with the query's warnings (unknown catalog values)."""
        req = segments_pb2.CountRequest(
            now_ms=_now_ms(now), **query_fields(query, segment)
        )
        resp = self.call(self.segments_stub.Count, req, timeout=timeout)
        return CountResult(
            resp.count, [warning_to_dict(w) for w in resp.warnings], resp.duration_ms
        )

    def members_page(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        page_size: int = 1000,
        page_token: str = "",
        now: Any = None,
    ) -> segments_pb2.MembersResponse:
        """One page of members (``customer_ids``, ``next_page_token``, ``total_size``)."""
        req = segments_pb2.MembersRequest(
            now_ms=_now_ms(now),
            page_size=page_size,
            page_token=page_token,
            **query_fields(query, segment),
        )
        return self.call(self.segments_stub.Members, req)

    def members(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        limit: int | None = None,
        page_size: int = 10_000,
        now: Any = None,
    ) -> list[str]:
        """Matching customer_ids (all, or the first ``limit``), fetched page by page."""
        out: list[str] = []
        token = ""
        while True:
            size = page_size if limit is None else min(page_size, limit - len(out))
            if size <= 0:
                return out
            page = self.members_page(
                query, segment=segment, page_size=size, page_token=token, now=now
            )
            out.extend(page.customer_ids)
            token = page.next_page_token
            if not token:
                return out

    def sample(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        size: int = 10,
        seed: int = 0,
        now: Any = None,
    ) -> list[str]:
        """Up to ``size`` random members (0: the server's default of 10)."""
        return self.sample_result(
            query, segment=segment, size=size, seed=seed, now=now
        ).customer_ids

    def sample_result(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        size: int = 10,
        seed: int = 0,
        now: Any = None,
    ) -> SampleResult:
        """The sample with the segment's size and the query's warnings."""
        req = segments_pb2.SampleRequest(
            now_ms=_now_ms(now), size=size, seed=seed, **query_fields(query, segment)
        )
        resp = self.call(self.segments_stub.Sample, req)
        return SampleResult(
            list(resp.customer_ids),
            resp.total_size,
            [warning_to_dict(w) for w in resp.warnings],
        )

    def export(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        chunk_size: int = 10_000,
        now: Any = None,
        timeout: float | None | str = None,
        on_warning: Callable[[dict[str, str]], None] | None = None,
    ) -> Iterator[list[str]]:
        """Stream every member in chunks (no deadline by default: exports can be long).
        ``on_warning`` sees each of the query's warnings (before the first chunk)."""
        req = segments_pb2.ExportRequest(
            now_ms=_now_ms(now), chunk_size=chunk_size, **query_fields(query, segment)
        )
        try:
            for chunk in self.segments_stub.Export(
                req, timeout=self._timeout(timeout), metadata=self._metadata
            ):
                if on_warning is not None:
                    for w in chunk.warnings:
                        on_warning(warning_to_dict(w))
                if chunk.customer_ids:
                    yield list(chunk.customer_ids)
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None

    def export_file(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        format: str = "csv",
        columns: Sequence[str] = (),
        chunk_size: int = 10_000,
        now: Any = None,
        timeout: float | None | str = None,
        on_warning: Callable[[dict[str, str]], None] | None = None,
        on_rows: Callable[[int, int], None] | None = None,
    ) -> Iterator[bytes]:
        """The members with profile ``columns`` as a ``csv`` or ``parquet`` file,
        streamed as byte pieces to write one after the other (``Export`` with a
        format). ``on_rows(rows_so_far, members)`` is called with every piece."""
        formats = {
            "csv": segments_pb2.EXPORT_FORMAT_CSV,
            "parquet": segments_pb2.EXPORT_FORMAT_PARQUET,
        }
        if format not in formats:
            raise ValueError(f"format is csv or parquet, got {format!r}")
        req = segments_pb2.ExportRequest(
            now_ms=_now_ms(now),
            chunk_size=chunk_size,
            format=formats[format],
            columns=list(columns),
            **query_fields(query, segment),
        )
        yield from self._file_stream(
            self.segments_stub.Export, req, timeout, on_warning, on_rows
        )

    def export_hashes(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        channel: str,
        identifiers: Sequence[str] = (),
        format: str = "lines",
        chunk_size: int = 10_000,
        now: Any = None,
        timeout: float | None | str = None,
        on_warning: Callable[[dict[str, str]], None] | None = None,
        on_rows: Callable[[int, int], None] | None = None,
    ) -> Iterator[bytes]:
        """The retargeting export (``ExportHashes``): SHA-256 of the normalised email /
        phone of the members ``channel`` cannot reach, as ``lines`` or ``csv`` bytes."""
        formats = {
            "lines": segments_pb2.HASH_FORMAT_LINES,
            "csv": segments_pb2.HASH_FORMAT_CSV,
        }
        if format not in formats:
            raise ValueError(f"format is lines or csv, got {format!r}")
        req = segments_pb2.ExportHashesRequest(
            now_ms=_now_ms(now),
            chunk_size=chunk_size,
            channel=channel,
            identifiers=list(identifiers),
            format=formats[format],
            **query_fields(query, segment),
        )
        yield from self._file_stream(
            self.segments_stub.ExportHashes, req, timeout, on_warning, on_rows
        )

    def _file_stream(
        self,
        method: Any,
        req: Any,
        timeout: float | None | str,
        on_warning: Callable[[dict[str, str]], None] | None,
        on_rows: Callable[[int, int], None] | None,
    ) -> Iterator[bytes]:
        try:
            for msg in method(
                req, timeout=self._timeout(timeout), metadata=self._metadata
            ):
                if on_warning is not None:
                    for w in msg.warnings:
                        on_warning(warning_to_dict(w))
                if on_rows is not None:
                    on_rows(msg.rows, msg.total_size)
                if msg.data:
                    yield msg.data
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None

    def create_segment(
        self,
        name: str,
        query: Any,
        *,
        static: bool = False,
        now: Any = None,
        include_count: bool = True,
    ) -> dict:
        """Save a segment; ``now`` is when a static one freezes (and the count's time).
        With ``include_count`` a dynamic one is evaluated too (``count`` is set)."""
        kind = (
            segments_pb2.SEGMENT_KIND_STATIC
            if static
            else segments_pb2.SEGMENT_KIND_DYNAMIC
        )
        req = segments_pb2.CreateRequest(
            name=name,
            kind=kind,
            now_ms=_now_ms(now),
            include_count=include_count,
            **query_fields(query),
        )
        return segment_to_dict(
            self.call(self.segments_stub.Create, req, idempotent=False).segment
        )

    def get_segment(
        self, name: str, *, now: Any = None, include_count: bool = True
    ) -> dict:
        req = segments_pb2.GetRequest(
            name=name, now_ms=_now_ms(now), include_count=include_count
        )
        return segment_to_dict(self.call(self.segments_stub.Get, req).segment)

    def list_segments(
        self, *, include_counts: bool = False, now: Any = None
    ) -> list[dict]:
        req = segments_pb2.ListRequest(
            include_counts=include_counts, now_ms=_now_ms(now)
        )
        return [
            segment_to_dict(s) for s in self.call(self.segments_stub.List, req).segments
        ]

    def update_segment(
        self,
        name: str,
        query: Any,
        *,
        version: int | None = None,
        now: Any = None,
        include_count: bool = True,
    ) -> dict:
        req = segments_pb2.UpdateRequest(
            name=name,
            version=version or 0,
            now_ms=_now_ms(now),
            include_count=include_count,
            **query_fields(query),
        )
        return segment_to_dict(self.call(self.segments_stub.Update, req).segment)

    def delete_segment(self, name: str) -> None:
        self.call(self.segments_stub.Delete, segments_pb2.DeleteRequest(name=name))

    def segment_changes(
        self,
        segment: str | None = None,
        *,
        from_position: int = 0,
        since: Any = None,
        until: Any = None,
        follow: bool = False,
        chunk_size: int = 10_000,
        timeout: float | None | str = None,
    ) -> Iterator[dict[str, Any]]:
        """Membership changes from the log position `from_position` on, one dict per
        change (``segment, customer_id, change, at_ms, cause, position``). With
        ``follow`` the stream waits for new changes until cancelled; after a
        reconnect, pass ``from_position`` = the last ``position`` seen + 1."""
        req = segments_pb2.ChangesRequest(
            segment=segment or "",
            from_position=from_position,
            since_ms=_now_ms(since),
            until_ms=_now_ms(until),
            follow=follow,
            chunk_size=chunk_size,
        )
        names = {
            segments_pb2.CHANGE_KIND_ENTERED: "entered",
            segments_pb2.CHANGE_KIND_EXITED: "exited",
        }
        try:
            for msg in self.segments_stub.Changes(
                req, timeout=self._timeout(timeout), metadata=self._metadata
            ):
                for c in msg.changes:
                    yield {
                        "segment": c.segment,
                        "customer_id": c.customer_id,
                        "change": names.get(c.change, "unspecified"),
                        "at_ms": c.at_ms,
                        "cause": c.cause,
                        "position": c.position,
                    }
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None

    def segment_history(self, name: str) -> list[dict[str, Any]]:
        """Members at the end of each UTC day: ``[{"day": "YYYY-MM-DD", "count": n}]``."""
        resp = self.call(
            self.segments_stub.History,
            segments_pb2.SegmentHistoryRequest(segment=name),
        )
        return [{"day": d.day, "count": d.count} for d in resp.days]

    def explain(
        self,
        query: Any = None,
        *,
        segment: str | None = None,
        customer_id: str | None = None,
        now: Any = None,
    ) -> dict:
        """The query's tree with per-node counts over the whole base; with
        ``customer_id`` also its verdict and evidence per node (explain_response_to_dict)."""
        req = segments_pb2.ExplainRequest(
            now_ms=_now_ms(now),
            customer_id=customer_id or "",
            **query_fields(query, segment),
        )
        return explain_response_to_dict(self.call(self.segments_stub.Explain, req))

    # ------------------------------------------------------------ admin

    # ------------------------------------------------------------ recommendations

    def recommend(
        self,
        kind: str,
        *,
        item_ids: list[str] | None = None,
        customer_id: str | None = None,
        category: str | None = None,
        phrase: str | None = None,
        filters: str | None = None,
        limit: int = 10,
        exclude_bought: bool = True,
        event: str = "order",
        details: bool = False,
        timeout: float | None | str = "default",
    ) -> list[dict[str, Any]]:
        """Engine.recommend over gRPC: ``{item_id, score}`` dicts, best first; with
        ``details`` also ``name``, ``category`` and ``price`` (None when unset)."""
        req = recommendations_pb2.RecommendRequest(
            kind=kind, item_ids=item_ids or [], customer_id=customer_id or "",
            category=category or "", phrase=phrase or "", filters=filters or "",
            limit=limit, include_bought=not exclude_bought, event=event,
            with_details=details,
        )  # fmt: skip
        resp = self.call(self.recs_stub.Recommend, req, timeout=timeout)
        out = []
        for item in resp.items:
            row: dict[str, Any] = {"item_id": item.item_id, "score": item.score}
            if details:
                row["name"] = item.name or None
                row["category"] = item.category or None
                row["price"] = item.price if item.has_price else None
            out.append(row)
        return out

    def recommend_batch(
        self,
        kind: str,
        customer_ids: list[str],
        *,
        limit: int = 10,
        timeout: float | None | str = "default",
        **kwargs: Any,
    ) -> dict[str, list[tuple[str, float]]]:
        """customer_id -> [(item_id, score), ...] for a mass send (streamed)."""
        req = self._batch_request(kind, customer_ids, limit, kwargs)
        out: dict[str, list[tuple[str, float]]] = {}
        try:
            # the messages as bytes, decoded natively: parsing 1,000 contacts' message
            # objects in Python costs more than the lookups
            for raw in self._recommend_batch_raw(
                req, timeout=self._timeout(timeout), metadata=self._metadata
            ):
                recs_kernels.decode_batch_results(raw, out)
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None
        return out

    def recommend_batch_arrays(
        self,
        kind: str,
        customer_ids: list[str],
        *,
        limit: int = 10,
        timeout: float | None | str = "default",
        **kwargs: Any,
    ) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
        """``recommend_batch`` as flat arrays for a mass send: (customer ids, items
        per contact int64, item ids, scores float64), contact i's items following
        contact i-1's. Same request and errors; the reply builds no list and no
        tuples per contact, so a large send leaves the caller's garbage collector
        nothing to walk (the dict form adds ~1,000 long-lived lists per 1,000
        contacts, which brings full collections of the caller's heap closer)."""
        req = self._batch_request(kind, customer_ids, limit, kwargs)
        cust: list[str] = []
        counts: list[int] = []
        items: list[str] = []
        scores: list[float] = []
        try:
            for raw in self._recommend_batch_raw(
                req, timeout=self._timeout(timeout), metadata=self._metadata
            ):
                recs_kernels.decode_batch_flat(raw, cust, counts, items, scores)
        except grpc.RpcError as err:
            raise SegdRpcError.from_rpc(err) from None
        return (
            cust,
            np.asarray(counts, dtype=np.int64),
            items,
            np.asarray(scores, dtype=np.float64),
        )

    @staticmethod
    def _batch_request(
        kind: str, customer_ids: list[str], limit: int, kwargs: dict[str, Any]
    ) -> Any:
        base = recommendations_pb2.RecommendRequest(
            kind=kind, limit=limit, item_ids=kwargs.get("item_ids") or [],
            category=kwargs.get("category") or "", phrase=kwargs.get("phrase") or "",
            filters=kwargs.get("filters") or "", event=kwargs.get("event", "order"),
            include_bought=not kwargs.get("exclude_bought", True),
        )  # fmt: skip
        return recommendations_pb2.RecommendBatchRequest(
            request=base, customer_ids=customer_ids
        )

    def rebuild_recommendations(
        self, config: dict | None = None, *, timeout: float | None | str = None
    ) -> dict[str, Any]:
        """Build the model now; its status (a dict of RecsStatus)."""
        req = recommendations_pb2.RebuildRequest(
            config_json=json.dumps(config) if config else ""
        )
        resp = self.call(self.recs_stub.Rebuild, req, timeout=timeout, idempotent=False)
        return json_format.MessageToDict(resp, preserving_proto_field_name=True)

    def recommendation_status(self) -> dict[str, Any]:
        resp = self.call(self.recs_stub.Status, recommendations_pb2.RecsStatusRequest())
        return json_format.MessageToDict(resp, preserving_proto_field_name=True)

    def stats(self) -> dict[str, Any]:
        resp = self.call(self.admin_stub.Stats, admin_pb2.StatsRequest())
        out: dict[str, Any] = {}
        for field in resp.DESCRIPTOR.fields:
            value = getattr(resp, field.name)
            out[field.name] = dict(value) if field.message_type else value
        return out

    def snapshot(self, *, timeout: float | None | str = None) -> dict[str, Any]:
        """Take a snapshot now (AdminService.Snapshot): path, wal_seq, bytes, seconds.
        FAILED_PRECONDITION when the server runs in memory."""
        resp = self.call(
            self.admin_stub.Snapshot, admin_pb2.SnapshotRequest(), timeout=timeout
        )
        return {
            "path": resp.path,
            "wal_seq": resp.wal_seq,
            "bytes": resp.bytes,
            "seconds": resp.seconds,
        }

    def health(
        self, service: str = "", *, timeout: float | None | str = "default"
    ) -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN`` (no token needed)."""
        req = health_pb2.HealthCheckRequest(service=service)
        resp = self.call(self.health_stub.Check, req, timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until health is SERVING; SegdRpcError(DEADLINE_EXCEEDED) otherwise."""
        end = time.monotonic() + timeout
        status = "UNREACHABLE"
        while time.monotonic() < end:
            try:
                status = self.health(timeout=max(0.1, min(1.0, end - time.monotonic())))
                if status == "SERVING":
                    return
            except SegdRpcError as err:
                status = err.code.name
            time.sleep(0.05)
        raise SegdRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{self.address} not SERVING after {timeout}s (last: {status})",
        )
