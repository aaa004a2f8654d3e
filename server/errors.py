"""The one table from engine error categories to gRPC status codes, and its layer.

Only this module knows both ``segd.errors`` and gRPC. Lookup walks the exception's MRO,
so a new subclass of a category gets the category's code; a new *category* is caught by
``tests/integration/test_errors.py``, which requires an entry here for every subclass.
Anything that is not a ``SegdError`` is INTERNAL with an error id (logged once, with its
traceback), never UNKNOWN. A request that cannot be deserialised (bad bytes, nesting
beyond protobuf's limit) is INVALID_ARGUMENT: gRPC itself would answer INTERNAL without
an error id. Messages are capped (``MAX_MESSAGE_CHARS``) so that an error quoting a huge
input still fits the client's metadata limit (8 KiB by default).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import grpc

from segd import errors as E
from segd.server import rpc_status
from segd.server.handlers import Behavior, method_label, rewrap
from segd.server.logfmt import kv

log = logging.getLogger("segd.server")
MAX_MESSAGE_CHARS = 1000  # of the status message; each violation's text likewise

STATUS_BY_CATEGORY: dict[type[E.SegdError], grpc.StatusCode] = {
    E.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,  # incl. DslSyntaxError, InvalidQuery
    E.NotFound: grpc.StatusCode.NOT_FOUND,  # SegmentNotFound, ContactNotFound
    E.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    E.TooComplex: grpc.StatusCode.RESOURCE_EXHAUSTED,
    E.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    E.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    E.Conflict: grpc.StatusCode.ABORTED,
    E.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    # Durability (docs/storage.md): a failed log write changes nothing; retry later.
    E.StorageError: grpc.StatusCode.UNAVAILABLE,  # incl. LogFailed (fsync: fatal)
    E.StorageFull: grpc.StatusCode.RESOURCE_EXHAUSTED,  # ENOSPC: retry once space returns
    E.CorruptLog: grpc.StatusCode.DATA_LOSS,  # start-up only, never from a call
}


def _snapshot_categories() -> None:
    """segd.snapshot's errors: a failed snapshot write is UNAVAILABLE (retry), a corrupt
    snapshot DATA_LOSS (start-up falls back to an older one; this is for tools)."""
    from segd import snapshot

    STATUS_BY_CATEGORY[snapshot.SnapshotError] = grpc.StatusCode.UNAVAILABLE
    STATUS_BY_CATEGORY[snapshot.CorruptSnapshot] = grpc.StatusCode.DATA_LOSS


_snapshot_categories()

ERROR_ID_KEY = "segd-error-id"


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    """The mapped code of a ``SegdError`` (by its nearest category), else None."""
    for cls in type(exc).__mro__:
        code = STATUS_BY_CATEGORY.get(cls)
        if code is not None:
            return code
    return None


def abort_with(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    """Turn ``exc`` into the call's status (always raises, as ``context.abort`` does)."""
    code = status_for(exc)
    if code is None:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "internal error", exc_info=exc, extra=kv(method=method, error_id=error_id)
        )
        context.set_trailing_metadata(((ERROR_ID_KEY, error_id),))
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error (error id {error_id}; the server log has the details)",
        )
        return  # not reached: abort raises
    message = E.shorten(str(exc) or type(exc).__name__, MAX_MESSAGE_CHARS)
    violations = getattr(exc, "violations", None)
    if violations:
        details = rpc_status.encode_bad_request(
            code.value[0],
            message,
            [
                (E.shorten(v.where, 200), E.shorten(v.message, MAX_MESSAGE_CHARS))
                for v in violations[:10]
            ],
            _error_info(exc),
        )
        context.set_trailing_metadata(((rpc_status.DETAILS_KEY, details),))
    context.abort(code, message)


def _error_info(exc: BaseException) -> tuple[str, dict[str, str]]:
    """ErrorInfo of an input error: reason ``INVALID_INPUT`` and the error's attributes
    (``batch`` in a stream, ``kind``, ``row``, ``column``, ``reason``) that are set, as
    strings."""
    metadata = {
        key: str(value)
        for key in ("batch", "kind", "row", "column", "reason")
        if (value := getattr(exc, key, None)) is not None
    }
    return "INVALID_INPUT", metadata


def _already_aborted(context: grpc.ServicerContext) -> bool:
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


class _Unreadable:
    """Stands in for a request message that could not be deserialised."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def raise_invalid(self) -> None:
        reason = E.shorten(str(self.error) or type(self.error).__name__, 300)
        raise E.InvalidInput.at("request", f"cannot be read: {reason}")


def _tolerant(deserializer: Any) -> Any:
    """``deserializer`` that returns ``_Unreadable`` instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, nesting beyond protobuf's limit, ...
            return _Unreadable(exc)

    return deserialize


def _readable_stream(requests: Iterator) -> Iterator:
    for request in requests:
        if isinstance(request, _Unreadable):
            request.raise_invalid()
        yield request


def _checked(request: Any) -> Any:
    """The request, with unreadable messages turned into InvalidInput (streams lazily)."""
    if isinstance(request, _Unreadable):
        request.raise_invalid()
    if hasattr(request, "__next__"):  # a request stream
        return _readable_stream(request)
    return request


class ErrorLayer:
    """Maps exceptions escaping any handler kind to a status through ``STATUS_BY_CATEGORY``."""

    def wrap_method(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        label = method_label(method)

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                def stream_behavior(
                    request: Any, context: grpc.ServicerContext
                ) -> Iterator:
                    try:
                        yield from behavior(_checked(request), context)
                    except Exception as exc:
                        if _already_aborted(context):
                            raise
                        abort_with(exc, context, label)

                return stream_behavior

            def unary_behavior(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(_checked(request), context)
                except Exception as exc:
                    if _already_aborted(context):
                        raise
                    abort_with(exc, context, label)

            return unary_behavior

        return rewrap(handler, wrap, _tolerant)
