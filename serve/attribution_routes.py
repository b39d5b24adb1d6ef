"""The attribution route: /v1/attribute (with optional explanations)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Security

from serve.api_settings import ERRORS, explain_request
from serve.errors import ApiError, rejected_images
from serve.route_kit import RouteKit
from serve.schemas import AttributeResponse
from serve.uploads import ValidImage


def add_attribution_routes(app: FastAPI, kit: RouteKit) -> None:
    """Adds POST /v1/attribute to ``app``."""
    backend, settings, metrics = kit.backend, kit.settings, kit.metrics

    @app.post(
        "/v1/attribute",
        response_model=AttributeResponse,
        responses=ERRORS,
        openapi_extra=kit.uploads_body,
        dependencies=[Security(kit.may_read)],
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
        images, bad = await kit.images_of(request, "attribute")
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
        embedded = await kit.embed_all(images)
        bad = kit.decode_failures(images, embedded)
        if bad:
            raise rejected_images(bad)
        searched = time.perf_counter()
        answers = await backend.attribute(
            np.stack([e.vector for e, _ in embedded]),
            kit.embedding_version(embedded),
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
