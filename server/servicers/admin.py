"""AdminService: ``Engine.stats()`` plus the server's own uptime and version."""

from __future__ import annotations

import time
from typing import Any

import grpc

from segd.server.servicers.ingest import EventSequence
from segd.v1 import admin_pb2, admin_pb2_grpc

SERVER_VERSION = "0.1.0"


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, engine: Any, sequence: EventSequence) -> None:
        self._engine = engine
        self._sequence = sequence
        self._started_ms = int(time.time() * 1000)
        self._started_mono = time.monotonic()

    def Stats(self, request: Any, context: grpc.ServicerContext) -> Any:
        s = dict(self._engine.stats())
        memory = {k: _int(v) for k, v in dict(s.get("memory_bytes") or {}).items()}
        total = memory.pop("total", sum(memory.values()))
        return admin_pb2.StatsResponse(
            contacts=_int(s.get("contacts")),
            events=_int(s.get("events")),
            items=_int(s.get("items")),
            segments=_int(s.get("segments")),
            event_types={
                str(k): _int(v) for k, v in dict(s.get("event_types") or {}).items()
            },
            memory_bytes=memory,
            memory_total_bytes=total,
            bytes_per_event=float(s.get("bytes_per_event") or 0.0),
            bytes_per_contact=float(s.get("bytes_per_contact") or 0.0),
            uptime_ms=int((time.monotonic() - self._started_mono) * 1000),
            version=SERVER_VERSION,
            engine_version=str(s.get("version", "")),
            started_ms=self._started_ms,
            events_sequence=self._sequence.value,
            storage=str(getattr(self._engine, "data_dir", None) or "memory"),
            fsync=self._fsync_mode(),
            wal_seq=self._wal_seq(),
        )

    def _fsync_mode(self) -> str:
        wal = getattr(self._engine, "_wal", None)
        return wal.fsync_mode if wal is not None else ""

    def _wal_seq(self) -> int:
        wal = getattr(self._engine, "_wal", None)
        return wal.last_seq if wal is not None else 0

    def Snapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        t0 = time.perf_counter()
        # Written by a forked child (the engine's default): writers wait only for the
        # fork, not for the files (docs/storage.md, "Snapshots").
        info = self._engine.snapshot()  # FailedPrecondition in memory
        return admin_pb2.SnapshotResponse(
            path=str(getattr(info, "path", "") or getattr(info, "directory", "")),
            wal_seq=int(getattr(info, "wal_seq", 0) or 0),
            bytes=int(getattr(info, "bytes", 0) or getattr(info, "size", 0) or 0),
            seconds=time.perf_counter() - t0,
        )
