"""The HTTP API (FastAPI): routes, error bodies, auth and request metrics.

HTTP parsing lives here and only here; the work is done by a :class:`Backend` (in the
Serve app, the ingress deployment calling the encoder and index-owner deployments).
:func:`create_api` builds one app per ingress replica, with that replica's metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

import numpy as np
from fastapi import FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serve.auth import KEY_HEADER, KeyCheck
from serve.discovery_api import add_discovery_routes
from serve.admission import Admission, Gate
from serve.errors import ApiError, rejected_images, retry_after
from serve.metrics import ServiceMetrics, route_template
from serve.rate import RateLimit
from serve.schemas import (
    AttributeResponse,
    DeleteResponse,
    EnrollResponse,
    ErrorBody,
    GeneratorList,
    Health,
    Ready,
    NAME_REGEX,
)
from serve.uploads import ACCEPTED_TYPES, Limits, ValidImage, parse_uploads, validate_uploads

log = logging.getLogger(__name__)

#: Enrollment names: letters, digits and ``_ . + -`` or spaces inside (``SD1.4``, ``DALL-E 3``, ``my-gan_v2``).
NAME_PATTERN = re.compile(NAME_REGEX)
#: The generator name path parameter, as the schema declares it.
GENERATOR_NAME = Path(
    description="generator name (1-64 characters: letters, digits, '_', '.', '+', '-', spaces "
    "inside); 'real' and 'unknown' are the service's own labels (409)",
    pattern=NAME_REGEX,
)
#: Labels the service itself answers with; no generator may take them.
RESERVED_NAMES = ("real", "unknown")
#: How long /readyz and /metrics wait for the other deployments.
PROBE_TIMEOUT_S = 10.0
#: /metrics reads the index size at most this often.
INDEX_SIZE_TTL_S = 5.0


class Backend(Protocol):
    """What the routes need done (implemented by the Serve ingress over deployment handles)."""

    async def embed(self, data: bytes) -> Any: ...  # serve.encoder.Embedded
    async def encoder_info(self) -> dict[str, Any]: ...
    async def index_info(self) -> dict[str, Any]: ...
    async def attribute(
        self,
        vectors: np.ndarray,
        model_version: str | None = None,
        hashes: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
    ) -> list[dict[str, Any]]: ...
    async def enroll(
        self,
        generator: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        images: Sequence[bytes] | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]: ...
    async def generators(self) -> dict[str, dict[str, int]]: ...
    async def delete_generator(self, generator: str) -> dict[str, Any]: ...
    async def class_references(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray: ...
    async def explain(
        self, data: bytes, references: np.ndarray, kinds: list[str], lime_samples: int
    ) -> dict[str, Any]: ...
    # discovery (serve.inbox_owner)
    async def discoveries(self, refresh: bool) -> dict[str, Any]: ...
    async def discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]: ...
    async def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]: ...
    async def add_feedback(
        self,
        label: str,
        hashes: Sequence[str],
        vectors: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
        note: str = "",
    ) -> dict[str, Any]: ...
    async def list_feedback(self) -> dict[str, Any]: ...
    async def enroll_feedback(self, label: str) -> dict[str, Any]: ...
    async def inbox_stats(self) -> dict[str, Any]: ...


#: Serve deployment states in which every replica serves the pinned version (scaling is fine).
READY_STATES = ("HEALTHY", "UPSCALING", "DOWNSCALING")


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
    """Limits of ``?explain=`` on /v1/attribute (an explanation costs ~1 + lime_samples forward passes)."""

    max_images: int = 4  # images a request may ask explanations for (more: 422 too_many_to_explain)
    lime_samples: int = 150  # occluded views per LIME explanation unless the request sets lime_samples
    max_lime_samples: int = 1000  # the most a request may ask for
    references: int = 16  # the target class's references nearest the image that the explained score looks at


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """Per-app settings of the HTTP layer."""

    limits: Limits
    auth: KeyCheck
    model_version: str  # of the encoder (answers carry it)
    explain: ExplainSettings = ExplainSettings()
    keep_images: bool = False  # send the bytes of answered images to the inbox (discovery.keep_images)
    write_rate: RateLimit = dataclasses.field(default_factory=lambda: RateLimit(0, 1))  # per key; 0 = none


def explain_request(query: Mapping[str, str], settings: ExplainSettings) -> tuple[list[str], int]:
    """The explanation kinds and LIME views a request asks for (``([], n)``: none).

    ``explain`` is a comma-separated list of ``saliency`` and ``lime``; ``true``/``all``
    mean both, ``false``/``none``/empty mean none.

    Raises:
        ApiError: 422 ``invalid_explain`` or ``invalid_lime_samples``.
    """
    from synthray.methods.explain_config import EXPLAIN_KINDS  # (not .explain: that imports torch)

    raw = query.get("explain", "").strip().lower()
    if raw in ("", "false", "none", "0"):
        kinds: list[str] = []
    elif raw in ("true", "all", "1"):
        kinds = list(EXPLAIN_KINDS)
    else:
        kinds = list(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
        bad = [k for k in kinds if k not in EXPLAIN_KINDS]
        if bad or not kinds:
            raise ApiError(
                422,
                "invalid_explain",
                f"explain={query.get('explain')!r}: give a comma-separated list of "
                f"{', '.join(EXPLAIN_KINDS)}, or 'all'",
                allowed=list(EXPLAIN_KINDS),
            )
    samples = settings.lime_samples
    if "lime_samples" in query:
        try:
            samples = int(query["lime_samples"])
        except ValueError:
            samples = -1
        if not 10 <= samples <= settings.max_lime_samples:
            raise ApiError(
                422,
                "invalid_lime_samples",
                f"lime_samples={query['lime_samples']!r} must be an integer from 10 to {settings.max_lime_samples}",
                max=settings.max_lime_samples,
            )
    return kinds, samples


def canonical_generator(name: str) -> str:
    """The enrollment name checked and spelled as the rest of synthray spells it.

    Raises:
        ApiError: 422 ``invalid_generator_name``; 409 ``reserved_generator_name``.
    """
    from synthray.data.generators import normalize_generator

    if not NAME_PATTERN.match(name):
        raise ApiError(
            422,
            "invalid_generator_name",
            f"generator name {name!r} must match {NAME_PATTERN.pattern} (1-64 characters: letters, digits, "
            "'_', '.', '+', '-', spaces inside)",
            pattern=NAME_PATTERN.pattern,
        )
    canonical = normalize_generator(name)
    if canonical.lower() in RESERVED_NAMES:
        # 409: a well-formed name that conflicts with the service's own labels (not a malformed one).
        raise ApiError(
            409,
            "reserved_generator_name",
            f"{name!r} means {canonical!r}, a label the service answers with; real images are not "
            "enrolled, only generators",
            reserved=list(RESERVED_NAMES),
        )
    return canonical


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


def upload_body(max_files: int) -> dict[str, Any]:
    """The OpenAPI request body of the image routes, with the limits the server enforces."""
    images = {"type": "array", "minItems": 1, "maxItems": max_files}
    return {
        "requestBody": {
            "required": True,
            "description": f"1 to {max_files} images as multipart file parts, as JSON with base64 data, or one raw "
            "image body; each a decodable image (JPEG, PNG, WebP, BMP, TIFF, GIF) of at least 8 px a "
            "side, within the request's byte limit and the per-image pixel limit",
            "content": {
                # Only file parts: a text field is refused (400 bad_multipart), so none is declared.
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "additionalProperties": False,
                        "properties": {"files": {**images, "items": {"type": "string", "format": "binary"}}},
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {
                                **images,
                                "items": {
                                    "oneOf": [
                                        {
                                            "type": "string",
                                            "format": "byte",
                                            "description": "base64 (a data: URL is accepted)",
                                        },
                                        {
                                            "type": "object",
                                            "required": ["data"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "data": {"type": "string", "format": "byte"},
                                            },
                                        },
                                    ]
                                },
                            }
                        },
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 409, 413, 415, 422, 429, 503)}


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
    limits, auth = settings.limits, settings.auth
    uploads_body = upload_body(limits.max_files)
    key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False)
    bearer = HTTPBearer(auto_error=False)
    index_size_read = [0.0]

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

    async def images_of(request: Request, endpoint: str) -> tuple[list[ValidImage], list[dict[str, str]]]:
        uploads = await parse_uploads(request, limits)
        good, bad = await asyncio.to_thread(validate_uploads, uploads, limits)
        metrics.images.labels(endpoint, "valid").inc(len(good))
        metrics.images.labels(endpoint, "rejected").inc(len(bad))
        return good, bad

    async def embed_all(images: list[ValidImage]) -> list[tuple[Any, float]]:
        """Every image through the encoder at once (the encoder batches them); (answer, ms) each."""

        async def one(img: ValidImage) -> tuple[Any, float]:
            t = time.perf_counter()
            out = await backend.embed(img.data)
            return out, (time.perf_counter() - t) * 1000

        return list(await asyncio.gather(*(one(img) for img in images)))

    def embedding_version(embedded: Sequence[tuple[Any, float]]) -> str | None:
        """The one model version that embedded a request's images (the index checks it).

        Raises:
            ApiError: 503 ``model_mismatch`` when encoder replicas of two versions shared the request.
        """
        versions = {getattr(e, "model_version", "") for e, _ in embedded} - {""}
        if len(versions) > 1:
            raise ApiError(
                503,
                "model_mismatch",
                f"encoder replicas of model versions {sorted(versions)} answered "
                "one request (a rollout in progress?); nothing was answered or written, retry shortly",
            )
        return versions.pop() if versions else None

    def decode_failures(images: list[ValidImage], embedded: list[tuple[Any, float]]) -> list[dict[str, str]]:
        return [
            {"file": img.name, "reason": "corrupt", "message": f"the encoder could not decode it: {e.error}"}
            for img, (e, _) in zip(images, embedded)
            if e.error
        ]

    @app.post(
        "/v1/attribute",
        response_model=AttributeResponse,
        responses=_ERRORS,
        openapi_extra=uploads_body,
        dependencies=[Security(may_read)],
        summary="Attribute one or several images",
    )
    async def attribute(request: Request) -> AttributeResponse:
        """Per image: real / a generator / unknown, the is-AI score, the vote and the nearest references.

        A request with any invalid image is refused whole (4xx, every bad file listed).

        ``?explain=saliency,lime`` (or ``all``) adds an ``explanation`` per image: which
        pixels make it look like the class it was attributed to (the nearest class when the
        label is "unknown"), as base64 PNG maps. ``lime_samples`` sets LIME's occluded
        views. Explanations cost seconds per image on a CPU, so a request may ask them for
        a few images only.
        """
        start = time.perf_counter()
        kinds, lime_samples = explain_request(request.query_params, settings.explain)
        images, bad = await images_of(request, "attribute")
        if bad:
            raise rejected_images(bad)
        if kinds and len(images) > settings.explain.max_images:
            raise ApiError(
                422,
                "too_many_to_explain",
                f"explanations are given for at most "
                f"{settings.explain.max_images} images per request, this one has {len(images)}; send "
                "them in smaller requests or without explain",
                max=settings.explain.max_images,
            )
        validated = time.perf_counter()
        embedded = await embed_all(images)
        bad = decode_failures(images, embedded)
        if bad:
            raise rejected_images(bad)
        searched = time.perf_counter()
        answers = await backend.attribute(
            np.stack([e.vector for e, _ in embedded]),
            embedding_version(embedded),
            [img.content_hash for img in images],
            [img.data for img in images] if settings.keep_images else None,
        )
        end = time.perf_counter()
        metrics.unknown_rate.observe([a["label"] == "unknown" for a in answers])
        results = []
        for img, (e, ms), a in zip(images, embedded, answers):
            metrics.batch_size.observe(e.batch_size)
            metrics.attributions.labels(a["label"]).inc()
            results.append(
                {
                    **{
                        k: a[k]
                        for k in (
                            "label",
                            "is_ai",
                            "is_ai_score",
                            "confidence",
                            "nearest_class",
                            "mean_similarity",
                            "unknown_reason",
                            "votes",
                        )
                    },
                    "file": img.name,
                    "model_version": settings.model_version,
                    "encoder_batch_size": e.batch_size,
                    "neighbours": [{k: n[k] for k in ("generator", "similarity", "origin")} for n in a["neighbours"]],
                    "timing": {
                        "validate_ms": (validated - start) * 1000,
                        "embed_ms": ms,
                        "search_ms": (end - searched) * 1000,
                        "total_ms": (end - start) * 1000,
                    },
                }
            )
        if kinds:
            explained = await asyncio.gather(
                *(
                    explain_one(img, e.vector, a, kinds, lime_samples)
                    for img, (e, _), a in zip(images, embedded, answers)
                )
            )
            for result, explanation in zip(results, explained):
                result["explanation"] = explanation
        return AttributeResponse(model_version=settings.model_version, results=results)

    async def explain_one(
        img: ValidImage, vector: np.ndarray, answer: dict[str, Any], kinds: list[str], lime_samples: int
    ) -> dict[str, Any] | None:
        """The explanation of one attribution; None when there is nothing to explain (empty index)."""
        if answer["unknown_reason"] == "empty_index":
            return None
        target = answer["nearest_class"]  # the label, or the class an "unknown" came closest to
        refs = await backend.class_references(vector, target, settings.explain.references)
        out = await backend.explain(img.data, refs, kinds, lime_samples)
        metrics.explanations.labels(",".join(kinds)).inc()
        return {"target": target, "references": len(refs), **out}

    @app.post(
        "/v1/generators/{name}/samples",
        response_model=EnrollResponse,
        openapi_extra=uploads_body,
        responses={**_ERRORS, 500: {"model": ErrorBody}},
        dependencies=[Security(may_write)],
        summary="Enroll images of a generator (few-shot)",
    )
    async def enroll(request: Request, name: str = GENERATOR_NAME) -> EnrollResponse:
        """Embeds the images and adds them to the index under ``name``; they count from the next query.

        Good files are enrolled and bad ones reported; when no file can be enrolled the
        request fails (4xx) and the index is unchanged. Re-sending the same images adds nothing.
        """
        start = time.perf_counter()
        generator = canonical_generator(name)
        images, bad = await images_of(request, "enroll")
        embedded = await embed_all(images) if images else []
        bad = bad + decode_failures(images, embedded)
        keep = [i for i, (e, _) in enumerate(embedded) if not e.error]
        if not keep:
            metrics.enrollments.labels("rejected").inc()
            raise rejected_images(bad)
        result = await backend.enroll(
            generator,
            np.stack([embedded[i][0].vector for i in keep]),
            [images[i].content_hash for i in keep],
            [images[i].name for i in keep],
            [images[i].data for i in keep],
            embedding_version([embedded[i] for i in keep]),
        )
        rejected = bad + result["rejected"]
        if result["enrolled"] == 0 and result["unchanged"] == 0:
            metrics.enrollments.labels("rejected").inc()
            raise rejected_images(rejected)
        metrics.enrollments.labels("partial" if rejected else "ok").inc()
        metrics.enrolled.labels(generator).inc(result["enrolled"])
        index_size_read[0] = 0.0  # the next scrape re-reads the index size
        counts = result["counts"]
        return EnrollResponse(
            generator=generator,
            enrolled=result["enrolled"],
            unchanged=result["unchanged"],
            rejected=rejected,
            total=counts["trained"] + counts["enrolled"],
            counts=counts,
            calibration=result.get("calibration"),
            model_version=settings.model_version,
            timing_ms=(time.perf_counter() - start) * 1000,
        )

    @app.get(
        "/v1/generators",
        response_model=GeneratorList,
        responses=_ERRORS,
        dependencies=[Security(may_read)],
        summary="Generators in the index",
    )
    async def list_generators() -> GeneratorList:
        """Every label in the index with its reference count and whether it is trained and/or enrolled."""
        counts = await backend.generators()
        rows = [
            {
                "name": g,
                "count": c["trained"] + c["enrolled"],
                "trained": c["trained"] > 0,
                "enrolled": c["enrolled"] > 0,
                "counts": c,
            }
            for g, c in counts.items()
        ]
        return GeneratorList(model_version=settings.model_version, generators=rows, total=sum(r["count"] for r in rows))

    @app.delete(
        "/v1/generators/{name}",
        response_model=DeleteResponse,
        responses={**_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
        dependencies=[Security(may_write)],
        summary="Delete a generator's enrolled samples",
    )
    async def delete_generator(name: str = GENERATOR_NAME) -> DeleteResponse:
        """Removes the enrolled references of ``name`` (409 for a generator that has only trained ones)."""
        from synthray.data.generators import normalize_generator

        generator = normalize_generator(name)
        result = await backend.delete_generator(generator)  # (a malformed name never gets here: 422)
        metrics.deleted.labels(generator).inc(result["deleted"])
        index_size_read[0] = 0.0
        return DeleteResponse(generator=generator, **result)

    add_discovery_routes(
        app,
        backend,
        settings.model_version,
        metrics,
        may_read,
        may_write,
        canonical_generator,
        uploads_body,
        images_of,
        embed_all,
        decode_failures,
        embedding_version,
    )

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> Health:
        """The ingress is up (no dependency is asked)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, summary="Readiness")
    async def readyz() -> Any:
        """Ready when the encoder and the index owner answer and agree on the model version
        (and the service is not stopping: a load balancer should send nothing more)."""
        if gate.draining:
            return JSONResponse(
                Ready(status="not_ready", reason="shutting down: finishing the requests in progress").model_dump(),
                status_code=503,
            )
        try:
            enc, idx = await asyncio.wait_for(
                asyncio.gather(backend.encoder_info(), backend.index_info()), PROBE_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not ready"
            return JSONResponse(
                Ready(status="not_ready", reason=f"{type(exc).__name__}: {exc}").model_dump(), status_code=503
            )
        if enc["model_version"] != idx["model_version"]:
            return JSONResponse(
                Ready(
                    status="not_ready",
                    reason=f"encoder {enc['model_version']} and index {idx['model_version']} disagree",
                ).model_dump(),
                status_code=503,
            )
        # The two answers above come from one replica each: the others are judged by Serve's own
        # health checks (each replica refused to start with weights other than the pinned ones).
        deployments = getattr(backend, "deployments", None)
        if deployments is not None:
            try:
                states = await asyncio.wait_for(deployments(), PROBE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the controller not answering is "not ready"
                states = {"controller": f"{type(exc).__name__}: {exc}"}
            bad = {name: state for name, state in states.items() if state not in READY_STATES}
            if bad:
                return JSONResponse(
                    Ready(status="not_ready", reason=f"deployments not healthy: {bad}").model_dump(), status_code=503
                )
        return Ready(
            status="ready",
            model_version=idx["model_version"],
            references=idx["references"],
            store=idx["store"],
            calibrated=idx["calibrated"],
            writes_enabled=auth.writes_enabled,
            warning=idx.get("calibration_warning"),
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Prometheus text format; the index size is re-read at most every few seconds."""
        if time.monotonic() - index_size_read[0] > INDEX_SIZE_TTL_S:
            try:
                metrics.set_index_size(await asyncio.wait_for(backend.generators(), PROBE_TIMEOUT_S))
                metrics.set_discovery(await asyncio.wait_for(backend.inbox_stats(), PROBE_TIMEOUT_S))
                index_size_read[0] = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a scrape still returns the other metrics
                log.warning("index size not refreshed for /metrics: %s", exc)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

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
