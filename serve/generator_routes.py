"""The generator routes: few-shot enrollment, the list, deleting an enrollment."""

from __future__ import annotations

import time

import numpy as np
from fastapi import FastAPI, Request, Security

from serve.api_settings import ERRORS, GENERATOR_NAME, canonical_generator
from serve.errors import rejected_images
from serve.route_kit import RouteKit
from serve.schemas import DeleteResponse, EnrollResponse, ErrorBody, GeneratorList


def add_generator_routes(app: FastAPI, kit: RouteKit) -> None:
    """Adds enrollment, listing and deletion of generators to ``app``."""
    backend, settings, metrics = kit.backend, kit.settings, kit.metrics

    @app.post(
        "/v1/generators/{name}/samples",
        response_model=EnrollResponse,
        openapi_extra=kit.uploads_body,
        responses={**ERRORS, 500: {"model": ErrorBody}},
        dependencies=[Security(kit.may_write)],
        summary="Enroll images of a generator (few-shot)",
    )
    async def enroll(request: Request, name: str = GENERATOR_NAME) -> EnrollResponse:
        """Embeds the images and adds them to the index under ``name``; they count from the next query.

        Good files are enrolled and bad ones reported; when no file can be enrolled the
        request fails (4xx) and the index is unchanged. Re-sending the same images adds nothing.
        """
        start = time.perf_counter()
        generator = canonical_generator(name)
        images, bad = await kit.images_of(request, "enroll")
        embedded = await kit.embed_all(images) if images else []
        bad = bad + kit.decode_failures(images, embedded)
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
            kit.embedding_version([embedded[i] for i in keep]),
        )
        rejected = bad + result["rejected"]
        if result["enrolled"] == 0 and result["unchanged"] == 0:
            metrics.enrollments.labels("rejected").inc()
            raise rejected_images(rejected)
        metrics.enrollments.labels("partial" if rejected else "ok").inc()
        metrics.enrolled.labels(generator).inc(result["enrolled"])
        kit.index_changed()  # the next scrape re-reads the index size
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
        responses=ERRORS,
        dependencies=[Security(kit.may_read)],
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
        responses={**ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
        dependencies=[Security(kit.may_write)],
        summary="Delete a generator's enrolled samples",
    )
    async def delete_generator(name: str = GENERATOR_NAME) -> DeleteResponse:
        """Removes the enrolled references of ``name`` (409 for a generator that has only trained ones)."""
        from synthray.data.generators import normalize_generator

        generator = normalize_generator(name)
        result = await backend.delete_generator(generator)  # (a malformed name never gets here: 422)
        metrics.deleted.labels(generator).inc(result["deleted"])
        kit.index_changed()
        return DeleteResponse(generator=generator, **result)
