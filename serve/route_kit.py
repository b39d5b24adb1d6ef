"""What every route group of the API shares (:func:`serve.api.create_api` builds one per app):
the backend, settings, metrics and auth dependencies, and the steps from an upload to
embeddings that the image routes all take."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Sequence

from fastapi import Request

from serve.api_settings import ApiSettings
from serve.errors import ApiError
from serve.metrics import ServiceMetrics
from serve.uploads import ValidImage, parse_uploads, validate_uploads


@dataclasses.dataclass
class RouteKit:
    """The shared parts of one app's routes."""

    backend: Any  # serve.api_settings.Backend
    settings: ApiSettings
    metrics: ServiceMetrics
    may_read: Callable[..., Any]  # auth dependencies (FastAPI Security)
    may_write: Callable[..., Any]
    uploads_body: dict[str, Any]  # the image routes' OpenAPI request body
    # When /metrics last read the index size (monotonic s); a write sets it to 0 so the next scrape re-reads.
    index_size_read: float = 0.0

    def index_changed(self) -> None:
        self.index_size_read = 0.0

    async def images_of(self, request: Request, endpoint: str) -> tuple[list[ValidImage], list[dict[str, str]]]:
        uploads = await parse_uploads(request, self.settings.limits)
        good, bad = await asyncio.to_thread(validate_uploads, uploads, self.settings.limits)
        self.metrics.images.labels(endpoint, "valid").inc(len(good))
        self.metrics.images.labels(endpoint, "rejected").inc(len(bad))
        return good, bad

    async def embed_all(self, images: list[ValidImage]) -> list[tuple[Any, float]]:
        """Every image through the encoder at once (the encoder batches them); (answer, ms) each."""

        async def one(img: ValidImage) -> tuple[Any, float]:
            t = time.perf_counter()
            out = await self.backend.embed(img.data)
            return out, (time.perf_counter() - t) * 1000

        return list(await asyncio.gather(*(one(img) for img in images)))

    def embedding_version(self, embedded: Sequence[tuple[Any, float]]) -> str | None:
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

    def decode_failures(self, images: list[ValidImage], embedded: list[tuple[Any, float]]) -> list[dict[str, str]]:
        return [
            {"file": img.name, "reason": "corrupt", "message": f"the encoder could not decode it: {e.error}"}
            for img, (e, _) in zip(images, embedded)
            if e.error
        ]
