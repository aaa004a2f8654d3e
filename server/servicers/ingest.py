"""IngestService: typed or Arrow IPC batches -> ``Engine.upsert_* / append_events``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pyarrow as pa

from segd.errors import InvalidInput
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


def _rows(batch: pa.Table | list[dict]) -> int:
    return batch.num_rows if isinstance(batch, pa.Table) else len(batch)


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, engine: Any, sequence: EventSequence) -> None:
        self._engine = engine
        self._sequence = sequence

    def UpsertContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, "contacts", convert.contacts_to_rows)
        if _rows(batch):
            self._engine.upsert_contacts(batch)
        return ingest_pb2.UpsertContactsResponse(rows=_rows(batch))

    def UpsertItems(self, request: Any, context: grpc.ServicerContext) -> Any:
        batch = _batch(request, "items", convert.items_to_rows)
        if _rows(batch):
            self._engine.upsert_items(batch)
        return ingest_pb2.UpsertItemsResponse(rows=_rows(batch))

    def _append(self, request: Any) -> tuple[int, int]:
        batch = _batch(request, "events", convert.events_to_table)
        rows = _rows(batch)
        with self._sequence.lock:
            if rows:
                self._engine.append_events(batch)
            self._sequence.value += rows
            return rows, self._sequence.value

    def IngestEvents(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows, sequence = self._append(request)
        return ingest_pb2.IngestEventsResponse(rows=rows, sequence=sequence)

    def StreamEvents(
        self, request_iterator: Any, context: grpc.ServicerContext
    ) -> Iterator:
        for index, request in enumerate(request_iterator):
            try:
                rows, sequence = self._append(request)
            except InvalidInput as exc:
                # Name the batch: the earlier ones were acknowledged and stay applied.
                raise InvalidInput(f"batch {index}: {exc}", exc.violations) from exc
            yield ingest_pb2.IngestAck(batch_index=index, rows=rows, sequence=sequence)

    def MergeContacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MergeContacts is reserved: identity resolution is not implemented yet",
        )
