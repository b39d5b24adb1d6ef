"""The discovery routes: the inbox's groups, one-call enrollment, feedback.

Added to the app of :func:`serve.api.create_api`; the work is done by the index owner (or
the writer, against a server) through the backend (:mod:`serve.inbox_owner`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request, Security

from serve.api_settings import canonical_generator
from serve.errors import ApiError, rejected_images
from serve.route_kit import RouteKit
from serve.schemas import (
    DiscoveryEnrollRequest,
    DiscoveryEnrollResponse,
    DiscoveryList,
    DiscoveryOut,
    EnrolledDiscovery,
    ErrorBody,
    FeedbackEnrollRequest,
    FeedbackEnrollResponse,
    FeedbackList,
    FeedbackRequest,
    FeedbackResponse,
    NAME_REGEX,
)

#: Discovery ids as the owner hands them out.
ID_PATTERN = re.compile(r"^d[0-9]{4,9}$")
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}


def feedback_label(label: str) -> str:
    """``real``, or the canonical generator name (``unknown`` is no label one can give)."""
    from synthray.data.generators import normalize_generator
    from synthray.data.schema import REAL

    return REAL if normalize_generator(label).lower() == REAL else canonical_generator(label)


def add_discovery_routes(app: FastAPI, kit: RouteKit) -> None:
    """Adds /v1/discoveries and /v1/feedback to ``app`` (the upload parsing, embedding and
    auth helpers are the other routes' own, from ``kit``)."""
    backend, metrics, model_version = kit.backend, kit.metrics, kit.settings.model_version
    may_read, may_write, upload_body = kit.may_read, kit.may_write, kit.uploads_body
    images_of, embed_all = kit.images_of, kit.embed_all
    decode_failures, embedding_version = kit.decode_failures, kit.embedding_version

    def checked_id(discovery_id: str) -> str:
        if not ID_PATTERN.match(discovery_id):
            raise ApiError(404, "unknown_discovery", f"no discovery {discovery_id!r}: ids look like d0001")
        return discovery_id

    @app.get(
        "/v1/discoveries",
        response_model=DiscoveryList,
        responses=_ERRORS,
        dependencies=[Security(may_read)],
        summary="Candidate new generators found among unknown answers",
    )
    async def list_discoveries(refresh: bool = False) -> DiscoveryList:
        """Groups of images the service answered ``unknown`` that look like one generator
        (HDBSCAN over their embeddings), largest first. Regrouped on a schedule; ``refresh=true``
        regroups now."""
        out = await backend.discoveries(refresh)
        metrics.set_discovery(out["inbox"])
        return DiscoveryList(model_version=model_version, **out)

    @app.get(
        "/v1/discoveries/{discovery_id}",
        response_model=DiscoveryOut | EnrolledDiscovery,
        responses=_ERRORS,
        dependencies=[Security(may_read)],
        summary="One discovery (or what it was enrolled as)",
    )
    async def get_discovery(discovery_id: str, members: bool = False) -> Any:
        """``members=true`` adds every member's content hash (to look the images up elsewhere)."""
        return await backend.discovery(checked_id(discovery_id), members)

    @app.post(
        "/v1/discoveries/{discovery_id}/enroll",
        response_model=DiscoveryEnrollResponse,
        responses={**_ERRORS, 500: {"model": ErrorBody}},
        dependencies=[Security(may_write)],
        summary="Enroll a discovery as a generator, in one call",
    )
    async def enroll_discovery(discovery_id: str, body: DiscoveryEnrollRequest) -> DiscoveryEnrollResponse:
        """Enrolls the discovery's members under ``name``; they leave the inbox and count from
        the next query. Enrolling it again under the same name changes nothing (200,
        ``already_enrolled``); another name, or a trained generator's, is 409."""
        name = canonical_generator(body.name)
        out = await backend.enroll_discovery(checked_id(discovery_id), name)
        if not out.get("already_enrolled"):
            metrics.enrolled.labels(name).inc(out["enrolled"])
            metrics.discovery_enrollments.inc()
        return DiscoveryEnrollResponse(model_version=model_version, **out)

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses=_ERRORS,
        dependencies=[Security(may_write)],
        summary="Label images the service has seen (by content hash)",
    )
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        """ "This image is real" / "this is generator X" for images answered recently or kept in
        the inbox, named by their sha256. Stored as labelled samples (GET /v1/feedback); they
        change no reference until enrolled (POST /v1/feedback/enroll)."""
        label = feedback_label(body.label)
        out = await backend.add_feedback(label, list(dict.fromkeys(body.hashes)), note=body.note)
        metrics.feedback.labels("hash").inc(out["stored"])
        return FeedbackResponse(model_version=model_version, **out)

    @app.post(
        "/v1/feedback/images",
        response_model=FeedbackResponse,
        responses=_ERRORS,
        openapi_extra=upload_body,
        dependencies=[Security(may_write)],
        summary="Label uploaded images",
    )
    async def feedback_images(
        request: Request,
        label: str = Query(..., pattern=NAME_REGEX, description="'real' or a generator name"),
        note: str = Query("", max_length=500),
    ) -> FeedbackResponse:
        """Like POST /v1/feedback, for images sent in the body (any upload format /v1/attribute takes)."""
        label = feedback_label(label)
        images, bad = await images_of(request, "feedback")
        embedded = await embed_all(images) if images else []
        bad = bad + decode_failures(images, embedded)
        if bad:
            raise rejected_images(bad)
        embedding_version(embedded)
        out = await backend.add_feedback(
            label,
            [i.content_hash for i in images],
            np.stack([e.vector for e, _ in embedded]),
            [i.name for i in images],
            [i.data for i in images],
            note,
        )
        metrics.feedback.labels("upload").inc(out["stored"])
        return FeedbackResponse(model_version=model_version, **out)

    @app.get(
        "/v1/feedback",
        response_model=FeedbackList,
        responses=_ERRORS,
        dependencies=[Security(may_read)],
        summary="Labelled images waiting to be enrolled",
    )
    async def list_feedback() -> FeedbackList:
        return FeedbackList(model_version=model_version, **await backend.list_feedback())

    @app.post(
        "/v1/feedback/enroll",
        response_model=FeedbackEnrollResponse,
        responses={**_ERRORS, 500: {"model": ErrorBody}},
        dependencies=[Security(may_write)],
        summary="Enroll every feedback image of one label",
    )
    async def enroll_feedback(body: FeedbackEnrollRequest) -> FeedbackEnrollResponse:
        """Adds the feedback images labelled ``label`` as references (``real``: real references);
        they leave the feedback list. The trained references are never changed."""
        label = feedback_label(body.label)
        out = await backend.enroll_feedback(label)
        metrics.enrolled.labels(label).inc(out["enrolled"])
        return FeedbackEnrollResponse(model_version=model_version, **out)
