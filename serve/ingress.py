"""The ingress deployment: the HTTP API of :mod:`serve.api` over the other two deployments.

The FastAPI app is built per replica, after the constructor
(``__serve_build_asgi_app__``), so its routes, auth and metrics close over this replica's
handles and registry rather than a module-level app frozen at import.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
from ray import serve

from serve.api import ApiSettings, ExplainSettings, call, create_api
from serve.auth import KeyCheck, resolve_api_key
from serve.metrics import ServiceMetrics
from serve.uploads import Limits

log = logging.getLogger(__name__)


@serve.ingress()
class Ingress:
    """HTTP in, deployment calls out.

    Args:
        encoder: handle of the encoder deployment.
        index: handle of the index-owner deployment.
        limits: ``Limits`` fields (max_bytes, max_pixels, max_files).
        api_key_env: environment variable holding the API key.
        api_key_file: file holding the API key (wins over the variable), or None.
        read_requires_key: reads need the key too.
        explain: ``ExplainSettings`` fields (None: the defaults).
        writer: handle of the deployment that takes every write (None: ``index`` itself); it
            also holds the discoveries.
        discovery: ``DiscoveryConfig`` fields (the ingress reads ``keep_images`` and ``window_s``).
    """

    async def __init__(self, encoder: Any, index: Any, limits: dict[str, int], api_key_env: str,
                       api_key_file: str | None = None, read_requires_key: bool = False,
                       explain: dict[str, int] | None = None, writer: Any = None,
                       discovery: dict[str, Any] | None = None) -> None:
        from synthray.config import from_dict
        from synthray.discovery.config import DiscoveryConfig

        self.encoder = encoder
        self.index = index
        self.writer = writer if writer is not None else index
        self.limits = Limits(**limits)
        self.explain_settings = ExplainSettings(**(explain or {}))
        self.auth = KeyCheck(resolve_api_key(api_key_env, api_key_file), read_requires_key, api_key_env)
        if not self.auth.writes_enabled:
            log.warning("no API key configured ($%s): enrollment and deletion are disabled", api_key_env)
        self.discovery_cfg = from_dict(DiscoveryConfig, discovery or {})
        self.metrics = ServiceMetrics(window_s=self.discovery_cfg.window_s)
        self.model_version = (await self.encoder_info())["model_version"]

    def __serve_build_asgi_app__(self) -> Any:
        keep = self.discovery_cfg.enabled and self.discovery_cfg.keep_images
        return create_api(self, ApiSettings(self.limits, self.auth, self.model_version, self.explain_settings, keep),
                          self.metrics)

    # -- serve.api.Backend over the deployment handles -------------------------------------
    async def embed(self, data: bytes) -> Any:
        return await call(self.encoder.embed.remote(data))

    async def encoder_info(self) -> dict[str, Any]:
        return await call(self.encoder.describe.remote())

    async def deployments(self) -> dict[str, str]:
        """``{deployment: status}`` of this application, from the Serve controller."""
        import asyncio

        app = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)
        return {name: str(getattr(d.status, "value", d.status)) for name, d in status.applications[app].deployments.items()}

    async def index_info(self) -> dict[str, Any]:
        return await call(self.index.info.remote())

    async def attribute(self, vectors: np.ndarray, model_version: str | None = None, hashes: Sequence[str] | None = None,
                        images: Sequence[bytes] | None = None) -> list[dict[str, Any]]:
        return await call(self.index.attribute.remote(vectors, model_version, hashes, images))

    async def enroll(self, generator: str, vectors: np.ndarray, hashes: Sequence[str], names: Sequence[str],
                     images: Sequence[bytes] | None = None, model_version: str | None = None) -> dict[str, Any]:
        return await call(self.writer.enroll.remote(generator, vectors, list(hashes), list(names),
                                                    list(images) if images is not None else None, model_version))

    async def generators(self) -> dict[str, dict[str, int]]:
        return await call(self.index.generators.remote())

    async def delete_generator(self, generator: str) -> dict[str, Any]:
        return await call(self.writer.delete_generator.remote(generator))

    async def class_references(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray:
        return await call(self.index.class_references.remote(vector, generator, k))

    async def explain(self, data: bytes, references: np.ndarray, kinds: list[str], lime_samples: int) -> dict[str, Any]:
        return await call(self.encoder.explain.remote(data, references, kinds, lime_samples))

    # discovery: grouping, enrollment and feedback live with the one writer
    async def discoveries(self, refresh: bool) -> dict[str, Any]:
        return await call(self.writer.list_discoveries.remote(refresh))

    async def discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]:
        return await call(self.writer.get_discovery.remote(discovery_id, members))

    async def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]:
        return await call(self.writer.enroll_discovery.remote(discovery_id, name))

    async def add_feedback(self, label: str, hashes: Sequence[str], vectors: np.ndarray | None = None,
                           names: Sequence[str] | None = None, images: Sequence[bytes] | None = None,
                           note: str = "") -> dict[str, Any]:
        return await call(self.writer.add_feedback.remote(label, list(hashes), vectors, names, images, note))

    async def list_feedback(self) -> dict[str, Any]:
        return await call(self.writer.list_feedback.remote())

    async def enroll_feedback(self, label: str) -> dict[str, Any]:
        return await call(self.writer.enroll_feedback.remote(label))

    async def inbox_stats(self) -> dict[str, Any]:
        return await call(self.writer.inbox_stats.remote())
