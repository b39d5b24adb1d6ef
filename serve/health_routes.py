"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from serve.admission import Gate
from serve.api_settings import INDEX_SIZE_TTL_S, PROBE_TIMEOUT_S, READY_STATES
from serve.route_kit import RouteKit
from serve.schemas import Health, Ready

log = logging.getLogger(__name__)


def add_health_routes(app: FastAPI, kit: RouteKit, gate: Gate) -> None:
    """Adds /healthz, /readyz and /metrics to ``app`` (``gate``: readiness says no while draining)."""
    backend, metrics, auth = kit.backend, kit.metrics, kit.settings.auth

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
        if time.monotonic() - kit.index_size_read > INDEX_SIZE_TTL_S:
            try:
                metrics.set_index_size(await asyncio.wait_for(backend.generators(), PROBE_TIMEOUT_S))
                metrics.set_discovery(await asyncio.wait_for(backend.inbox_stats(), PROBE_TIMEOUT_S))
                kit.index_size_read = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a scrape still returns the other metrics
                log.warning("index size not refreshed for /metrics: %s", exc)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)
