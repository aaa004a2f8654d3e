"""Bearer-token authentication: the first layer after metrics, so nothing runs unauthenticated.

Every call must carry ``authorization: Bearer <token>`` metadata, except the health and
reflection services (load balancers and grpcurl probe them without credentials). A missing
or wrong token ends the call with UNAUTHENTICATED before the handler is reached. The
check is a layer (``segd.server.handlers``): wrapped around each method once, it reads
the metadata of each call from the call's context.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

import grpc

from segd.server.handlers import Behavior, rewrap

EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class AuthLayer:
    """Rejects calls whose bearer token is not ``token`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _reason(self, metadata: Any) -> str | None:
        """Why the call is refused, or None when the token is right."""
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            return "missing 'authorization: Bearer <token>' metadata"
        given = values[0].encode() if isinstance(values[0], str) else values[0]
        if not hmac.compare_digest(given, self._expected):
            return "invalid bearer token"
        return None

    def wrap_method(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        if method.startswith(EXEMPT_PREFIXES):
            return handler
        reason_of = self._reason

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                def checked_stream(
                    request: Any, context: grpc.ServicerContext
                ) -> Iterator:
                    reason = reason_of(context.invocation_metadata())
                    if reason is not None:
                        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                    yield from behavior(request, context)

                return checked_stream

            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                reason = reason_of(context.invocation_metadata())
                if reason is not None:
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                return behavior(request, context)

            return checked

        return rewrap(handler, wrap)
