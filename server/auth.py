"""Bearer-token authentication: the first interceptor, so nothing runs unauthenticated.

Every call must carry ``authorization: Bearer <token>`` metadata, except the health and
reflection services (load balancers and grpcurl probe them without credentials). A missing
or wrong token ends the call with UNAUTHENTICATED before the handler is reached.
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


class AuthInterceptor(grpc.ServerInterceptor):
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

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.startswith(EXEMPT_PREFIXES):
            return continuation(details)
        reason = self._reason(details.invocation_metadata)
        if reason is None:
            return continuation(details)

        def wrap(_behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                def deny_stream(
                    _request: Any, context: grpc.ServicerContext
                ) -> Iterator:
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                    yield  # pragma: no cover  (makes this a generator, like the handler)

                return deny_stream

            def deny(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

            return deny

        return rewrap(continuation(details), wrap)
