"""The HTTP API (FastAPI): the app, its error bodies, auth and request metrics.

HTTP parsing lives in the ``serve.*_routes`` modules this app is assembled from (and
``discovery_api``); the work is done by a :class:`~serve.api_settings.Backend` (in the
Serve app, the ingress deployment calling the encoder and index-owner deployments).
:func:`create_api` builds one app per ingress replica, with that replica's metrics.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serve.admission import Admission, Gate
from serve.api_settings import (  # noqa: F401 - re-exported: callers import these from serve.api
    GENERATOR_NAME,
    NAME_PATTERN,
    RESERVED_NAMES,
    ApiSettings,
    Backend,
    ExplainSettings,
    canonical_generator,
    explain_request,
    upload_body,
)
from serve.attribution_routes import add_attribution_routes
from serve.auth import KEY_HEADER
from serve.discovery_api import add_discovery_routes
from serve.errors import ApiError, retry_after
from serve.generator_routes import add_generator_routes
from serve.health_routes import add_health_routes
from serve.metrics import ServiceMetrics, route_template
from serve.route_kit import RouteKit
from serve.uploads import ACCEPTED_TYPES  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def _error_response(request: Request, exc: ApiError) -> JSONResponse:
    request.scope["synthray.error"] = exc.code
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


class _Metered:
    """ASGI middleware: request count, latency and error kind per route template."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            scope.setdefault("synthray.error", "internal")
            raise
        finally:
            self.metrics.observe_request(
                route_template(scope),
                scope["method"],
                status[0],
                time.perf_counter() - start,
                scope.get("synthray.error"),
            )


def create_api(backend: Backend, settings: ApiSettings, metrics: ServiceMetrics, gate: Gate | None = None) -> FastAPI:
    """The FastAPI app of one ingress replica.

    Args:
        backend: does the work (encoder, index).
        settings: limits, auth, model version.
        metrics: this replica's metric families (served at /metrics).
        gate: admission (the bound on requests in progress, draining); None: admit everything.
    Returns:
        a FastAPI app (OpenAPI at /docs and /openapi.json).
    """
    app = FastAPI(
        title="synthray",
        version="1",
        description="Detects AI-generated images and attributes them to their generator (kNN over a "
        "contrastive embedding index); enroll a new generator with a few dozen images. "
        f"Write endpoints need an API key ({KEY_HEADER} header or Bearer token).",
    )
    gate = gate if gate is not None else Gate()
    # Starlette runs the middleware added last outermost: _Metered wraps Admission, so the
    # requests the gate refuses are counted too.
    app.add_middleware(Admission, gate=gate)
    app.add_middleware(_Metered, metrics=metrics)
    auth = settings.auth
    uploads_body = upload_body(settings.limits.max_files)
    key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def presented(api_key: str | None, token: HTTPAuthorizationCredentials | None) -> str | None:
        return api_key or (token.credentials if token else None)

    async def keyed_read(
        api_key: str | None = Security(key_header), token: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> None:
        auth.check(presented(api_key, token), write=False)

    async def open_read() -> None:
        """Reads need no key on this server: the schema declares none for them."""

    may_read = keyed_read if auth.read_requires_key else open_read

    async def may_write(
        api_key: str | None = Security(key_header), token: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> None:
        key = presented(api_key, token)
        auth.check(key, write=True)
        wait = settings.write_rate.take(key)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                f"too many writes with this key; retry in {wait:.1f} s",
                headers=retry_after(wait),
                retry_after_s=round(wait, 2),
            )

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(tuple(e.get("loc", ())) == ("path", "name") for e in exc.errors()):
            try:  # a generator name the schema's pattern refuses: the same answer as everywhere else
                canonical_generator(request.path_params.get("name", ""))
            except ApiError as named:
                return _error_response(request, named)
        return _error_response(
            request,
            ApiError(
                422,
                "invalid_request",
                "the request does not match the API",
                errors=[{k: str(v) for k, v in e.items()} for e in exc.errors()],
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Allow (RFC 9110) names every method of the path; Starlette's names one route's only.
            methods = {
                m
                for route in app.routes
                if getattr(route, "methods", None)
                and route.matches({**request.scope, "method": "GET"})[0] != Match.NONE
                for m in route.methods
            }
            headers["Allow"] = ", ".join(sorted(methods - {"HEAD"}))
        return _error_response(
            request,
            ApiError(
                exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail), headers=headers
            ),
        )

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error_response(
            request,
            ApiError(500, "internal", f"internal error ({type(exc).__name__}); the service keeps running, see its log"),
        )

    kit = RouteKit(backend, settings, metrics, may_read, may_write, uploads_body)
    add_attribution_routes(app, kit)
    add_generator_routes(app, kit)
    add_discovery_routes(app, kit)
    add_health_routes(app, kit, gate)
    return app


async def call(response: Awaitable[Any]) -> Any:
    """Awaits a deployment call, re-raising an :class:`ApiError` it raised as itself."""
    try:
        return await response
    except ApiError:
        raise
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ApiError):
            raise cause from None
        raise


__all__ = [
    "ACCEPTED_TYPES",
    "ApiSettings",
    "Backend",
    "ExplainSettings",
    "call",
    "canonical_generator",
    "create_api",
    "explain_request",
]
