"""IngestService: typed or Arrow IPC batches -> ``Engine.upsert_* / append_events``.

This layer only converts (protobuf -> Arrow, in ``segd.server.convert``); every value is
validated once, by the engine, which names the row and column of the first bad value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pyarrow as pa

from segd.errors import InvalidInput, SegdError
from segd.server import convert
from segd.v1 import ingest_pb2, ingest_pb2_grpc


class EventSequence:
    """Server-wide count of events applied through the API: the acks' ``sequence``.

    The lock spans the engine call and the increment, so sequence numbers follow the order
    in which batches were applied (the engine serialises writers anyway).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0


def _batch(request: Any, typed_field: str, convert_typed: Any) -> pa.Table | list[dict]:
    kind = request.WhichOneof("batch")
    if kind == "arrow_ipc":
        return convert.read_arrow_ipc(request.arrow_ipc)
    if kind == typed_field:
        return convert_typed(getattr(request, typed_field))
    raise InvalidInput.at("batch", f"one of {typed_field}, arrow_ipc is required")


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, engine: Any, sequence: EventSequence) -> None:
        self._engine = engine
        self._sequence = sequence

    def UpsertContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, "contacts", convert.contacts_to_rows)
        report = self._engine.upsert_contacts(batch)
        return ingest_pb2.UpsertContactsResponse(rows=report.rows)

    def UpsertItems(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, "items", convert.items_to_rows)
        report = self._engine.upsert_items(batch)
        return ingest_pb2.UpsertItemsResponse(rows=report.rows)

    def _append(self, request: Any) -> tuple[Any, int]:
        """(LoadReport, sequence after it) of one events request."""
        batch = _batch(request, "events", convert.events_to_table)
        source: dict[str, Any] = {}
        if request.HasField("source") and request.source.digest:
            source = {
                "source": request.source.digest,
                "source_name": request.source.name,
                "force": request.source.force,
            }
        with self._sequence.lock:
            report = self._engine.append_events(batch, **source)
            self._sequence.value += report.rows
            return report, self._sequence.value

    def IngestEvents(self, request: Any, context: grpc.ServicerContext) -> Any:
        report, sequence = self._append(request)
        return ingest_pb2.IngestEventsResponse(
            rows=report.rows, sequence=sequence, duplicates=report.duplicates
        )

    def StreamEvents(
        self, request_iterator: Any, context: grpc.ServicerContext
    ) -> Iterator:
        for index, request in enumerate(request_iterator):
            try:
                report, sequence = self._append(request)
            except SegdError as exc:
                # Name the batch: the earlier ones were acknowledged and stay applied.
                raise _in_batch(exc, index) from exc
            yield ingest_pb2.IngestAck(
                batch_index=index,
                rows=report.rows,
                sequence=sequence,
                duplicates=report.duplicates,
            )

    def MergeContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MergeContacts is reserved: identity resolution is not implemented yet",
        )


def _in_batch(exc: SegdError, index: int) -> SegdError:
    """An input error of a stream's batch `index`: named by the batch, structure kept.
    Other errors (ALREADY_EXISTS for a file loaded before) pass unchanged."""
    return exc.in_stream_batch(index) if isinstance(exc, InvalidInput) else exc
