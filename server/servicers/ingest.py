"""IngestService: typed or Arrow IPC batches -> ``Engine.upsert_* / append_events``.

This layer only converts (protobuf -> Arrow, in ``segd.server.convert``); every value is
validated once, by the engine, which names the row and column of the first bad value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pyarrow as pa

from segd.errors import InvalidInput, SegdError
from segd.server import convert
from segd.v1 import ingest_pb2, ingest_pb2_grpc


class EventSequence:
    """Server-wide count of events applied through the API: the acks' ``sequence``.

    The engine keeps it (``Engine.events_sequence``): it is assigned under the engine's
    write lock, so sequence numbers follow the order in which batches were applied, and a
    durable engine logs it with each batch, so it survives restarts and an idempotent
    repeat returns the original number.
    """

    def __init__(self, engine: Any = None) -> None:
        self.engine = engine

    @property
    def value(self) -> int:
        return int(getattr(self.engine, "events_sequence", 0))


def _batch(request: Any, typed: dict[str, Any]) -> pa.Table | list[dict]:
    """The request's batch for the engine; ``typed`` maps each typed oneof field to its
    converter (the Arrow IPC field is read as a table)."""
    kind = request.WhichOneof("batch")
    if kind == "arrow_ipc":
        return convert.read_arrow_ipc(request.arrow_ipc)
    if kind in typed:
        return typed[kind](getattr(request, kind))
    fields = ", ".join((*typed, "arrow_ipc"))
    raise InvalidInput.at("batch", f"one of {fields} is required")


EVENT_BATCH_FIELDS = {
    "events": convert.events_to_table,
    "columns": convert.columns_to_table,
}


def _rows(batch: pa.Table | list[dict]) -> int:
    return batch.num_rows if isinstance(batch, pa.Table) else len(batch)


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, engine: Any, sequence: EventSequence) -> None:
        self._engine = engine
        self._sequence = sequence

    def UpsertContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, {"contacts": convert.contacts_to_rows})
        rows = _rows(batch)
        if rows:
            key = request.idempotency_key or None
            rows = self._engine.upsert_contacts(
                batch,
                idempotency_key=key,
                on_conflict=request.on_conflict or "reject",
            ).rows
        return ingest_pb2.UpsertContactsResponse(rows=rows)

    def UpsertItems(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, {"items": convert.items_to_rows})
        rows = _rows(batch)
        if rows:
            key = request.idempotency_key or None
            rows = self._engine.upsert_items(batch, idempotency_key=key).rows
        return ingest_pb2.UpsertItemsResponse(rows=rows)

    def _append(self, request: Any) -> tuple[int, int, int]:
        """(rows applied, sequence, duplicates dropped) of one events request."""
        batch = _batch(request, EVENT_BATCH_FIELDS)
        if not _rows(batch):
            return 0, self._sequence.value, 0
        source: dict[str, Any] = {}
        if request.HasField("source") and request.source.digest:
            source = {
                "source": request.source.digest,
                "source_name": request.source.name,
                "force": request.source.force,
            }
        report = self._engine.append_events(
            batch,
            idempotency_key=request.idempotency_key or None,
            count_in_sequence=True,
            on_conflict=request.on_conflict or "reject",
            **source,
        )
        return report.rows, report.sequence, report.duplicate_events

    def IngestEvents(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows, sequence, duplicates = self._append(request)
        return ingest_pb2.IngestEventsResponse(
            rows=rows, sequence=sequence, duplicates=duplicates
        )

    def StreamEvents(
        self, request_iterator: Any, context: grpc.ServicerContext
    ) -> Iterator:
        for index, request in enumerate(request_iterator):
            try:
                rows, sequence, duplicates = self._append(request)
            except SegdError as exc:
                # Name the batch: the earlier ones were acknowledged and stay applied.
                raise _in_batch(exc, index) from exc
            yield ingest_pb2.IngestAck(
                batch_index=index, rows=rows, sequence=sequence, duplicates=duplicates
            )

    def MergeContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.merged_ids:
            raise InvalidInput.at("merged_ids", "name at least one contact to merge")
        if len(request.merged_ids) == 1:
            self._engine.merge(request.customer_id, request.merged_ids[0])
        else:  # all or nothing, one record
            self._engine.merge_many(
                [(request.customer_id, m) for m in request.merged_ids]
            )
        return ingest_pb2.MergeContactsResponse(merged=len(request.merged_ids))

    def LinkIdentity(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._engine.link(request.customer_id, request.kind, request.value)
        from segd.identity import normalize_link

        value = normalize_link(request.kind, request.value) or request.value
        return ingest_pb2.LinkIdentityResponse(value=value)

    def UnlinkIdentity(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._engine.unlink(request.customer_id, request.kind, request.value)
        return ingest_pb2.UnlinkIdentityResponse()

    def Resolve(self, request: Any, context: grpc.ServicerContext) -> Any:
        who = self._engine.resolve(request.kind, request.value)
        return ingest_pb2.ResolveResponse(found=who is not None, customer_id=who or "")

    def GetContact(self, request: Any, context: grpc.ServicerContext) -> Any:
        recent = request.recent_events or 10
        if not 0 < recent <= 1000:
            raise InvalidInput.at("recent_events", f"expected 1..1000, got {recent}")
        card = self._engine.contact(request.customer_id, recent)
        return convert.contact_to_proto(card)


def _in_batch(exc: SegdError, index: int) -> SegdError:
    """An input error of a stream's batch `index`: named by the batch, structure kept.
    Other errors (ALREADY_EXISTS for a file loaded before) pass unchanged."""
    return exc.in_stream_batch(index) if isinstance(exc, InvalidInput) else exc
