"""Admission to the API: a bound on the requests one ingress replica works on, and draining.

An overloaded or stopping service must answer at once, in the API's JSON error shape,
rather than leave a client waiting or drop its connection:

- beyond ``limit`` requests in progress, one more is answered 503 ``overloaded``;
- once draining (``synthray serve`` was asked to stop), new requests are answered 503
  ``shutting_down`` while the ones already admitted finish; the stopping process waits for
  ``in_flight`` to reach 0 before it takes the replicas down.

Both answers carry Retry-After and come before the request body is read. Probes, metrics and
the schema are never refused: an overloaded or draining service must still say so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from starlette.responses import JSONResponse

from serve.errors import ApiError, retry_after

#: Paths the gate never refuses (prefixes).
EXEMPT = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")


@dataclasses.dataclass
class Gate:
    """The admission state of one ingress replica (one event loop: no lock needed)."""

    limit: int = 0  # API requests in progress at once; 0 = no bound
    retry_after_s: float = 1.0
    in_flight: int = 0
    draining: bool = False

    def refusal(self) -> ApiError | None:
        """Why a new request is refused now, or None to admit it."""
        if self.draining:
            return ApiError(
                503,
                "shutting_down",
                "the service is stopping; retry after the Retry-After delay (another instance, or this one restarted)",
                headers=retry_after(self.retry_after_s),
            )
        if self.limit > 0 and self.in_flight >= self.limit:
            return ApiError(
                503,
                "overloaded",
                f"the service is at capacity ({self.limit} requests in progress "
                "here); retry after the Retry-After delay",
                headers=retry_after(self.retry_after_s),
            )
        return None


class Admission:
    """ASGI middleware applying a :class:`Gate` to every API request.

    Serve's proxy refuses too (the ingress's ``max_queued_requests``), but in plain text;
    the ingress is asynchronous and takes far more requests than the gate admits, so
    overload is answered here, in the API's shape, and the proxy's refusal is a last guard.
    """

    def __init__(self, app: Any, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        refused = self.gate.refusal()
        if refused is not None:
            scope["synthray.error"] = refused.code
            await JSONResponse(refused.body(), status_code=refused.status, headers=refused.headers)(
                scope, receive, send
            )
            return
        # Counted from the check on, with no await between: a request admitted before draining
        # began is always seen by the drain that waits for in_flight to reach 0.
        self.gate.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.in_flight -= 1
