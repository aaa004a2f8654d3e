"""RfmService: compute, matrix, transitions, daily history and configuration (docs/rfm.md)."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from segd.errors import InvalidInput
from segd.v1 import rfm_pb2 as pb
from segd.v1 import rfm_pb2_grpc

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _at(ms: int) -> float | None:
    return ms / 1000.0 if ms else None


def status_message(status: dict) -> pb.RfmStatus:
    if not status.get("computed"):
        return pb.RfmStatus(computed=False, transitions=status.get("transitions", 0))
    return pb.RfmStatus(
        computed=True,
        as_of_ms=_ms(status["as_of_s"]),
        window_days=status["window_days"],
        scale=status["scale"],
        method=status["method"],
        contacts=status["contacts"],
        scored=status["scored"],
        segments=status["segments"],
        transitions=status["transitions"],
    )


def _config_response(config: dict, report: dict | None) -> pb.ConfigResponse:
    msg = struct_pb2.Struct()
    json_format.ParseDict(config, msg)
    overlaps = [o["message"] for o in (report or {}).get("overlaps", [])]
    return pb.ConfigResponse(config=msg, overlaps=overlaps)


class RfmServicer(rfm_pb2_grpc.RfmServiceServicer):
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def Compute(self, request: Any, context: grpc.ServicerContext) -> Any:
        thresholds = None
        if request.HasField("thresholds"):
            t = request.thresholds
            thresholds = {"r": list(t.r), "f": list(t.f), "m": list(t.m)}
        before = len(self._engine.rfm_state.transitions)
        t0 = time.perf_counter()
        self._engine.rfm_compute(
            as_of=_at(request.as_of_ms),
            window_days=request.window_days or None,
            scale=request.scale or None,
            method=request.method or None,
            thresholds=thresholds,
            table=False,  # the response carries the status, not the rows
        )
        ms = (time.perf_counter() - t0) * 1000
        status = self._engine.rfm_status()
        return pb.ComputeResponse(
            status=status_message(status),
            new_transitions=status["transitions"] - before,
            duration_ms=ms,
        )

    def Matrix(self, request: Any, context: grpc.ServicerContext) -> Any:
        by = request.by or "rf"
        table = self._engine.rfm_matrix(as_of=_at(request.as_of_ms), by=by)
        latest = self._engine.rfm_state.latest
        if request.as_of_ms or latest is None:
            as_of_ms = request.as_of_ms or _ms(time.time())
            scale = self._engine.rfm_state.config.scale
        else:
            as_of_ms, scale = _ms(latest.as_of), latest.scale
        cells = [
            pb.MatrixCell(
                r=row.get("r") or 0,
                f=row.get("f") or 0,
                m=row.get("m") or 0,
                segment=row.get("segment") or "",
                count=row["count"],
                share=row["share"],
            )
            for row in table.to_pylist()
        ]
        return pb.MatrixResponse(by=by, as_of_ms=as_of_ms, scale=scale, cells=cells)

    def Transitions(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.limit < 0:
            raise InvalidInput.at("limit", f"must be >= 0, got {request.limit}")
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        table = self._engine.rfm_transitions(
            since=_at(request.since_ms),
            until=_at(request.until_ms),
            to=request.to or None,
            from_=request.from_value or None,
        )
        total = table.num_rows
        rows = table.slice(max(0, total - limit)).to_pylist()
        return pb.TransitionsResponse(
            transitions=[
                pb.Transition(
                    customer_id=r["customer_id"],
                    at_ms=_ms(r["at"].timestamp()),
                    from_code=r["from_code"] or "",
                    to_code=r["to_code"] or "",
                    from_segment=r["from_segment"] or "",
                    to_segment=r["to_segment"] or "",
                )
                for r in rows
            ],
            total_size=total,
        )

    def History(self, request: Any, context: grpc.ServicerContext) -> Any:
        table = self._engine.rfm_history(
            since=request.since or None, until=request.until or None
        )
        return pb.HistoryResponse(
            counts=[pb.DailyCount(**row) for row in table.to_pylist()]
        )

    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:
        return status_message(self._engine.rfm_status())

    def GetConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        from segd.rfm import rules_report

        return _config_response(
            self._engine.rfm_config(), rules_report(self._engine.rfm_state.config)
        )

    def SetConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        config = json_format.MessageToDict(request.config)
        report = self._engine.rfm_set_config(config)
        return _config_response(self._engine.rfm_config(), report)
