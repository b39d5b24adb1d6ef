"""The encoder deployment: a checkpoint's embedder behind Serve's dynamic batching.

Each query image is one call to :meth:`Encoder.embed`; ``@serve.batch`` gathers the
calls that queued while it was busy, or arrive within ``batch_wait_timeout_s`` (up to
``max_batch_size``), into one forward pass. Both settings live in the deployment's ``user_config`` and are applied in
:meth:`Encoder.reconfigure`, so they change without restarting the replica (after Ray's
``serve/doc_code/batching_guide.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import numpy as np
from ray import serve
from synthray.errors import ConfigError

log = logging.getLogger(__name__)

#: Batching defaults; ``AppArgs`` passes its own through ``user_config``.
DEFAULT_BATCH = {"max_batch_size": 16, "batch_wait_timeout_s": 0.0}


@dataclasses.dataclass
class Embedded:
    """The encoder's answer for one image."""

    vector: np.ndarray | None  # (D,) unit vector; None when the image could not be decoded
    error: str | None  # why not
    batch_size: int  # how many images shared the forward pass
    batch_ms: float  # wall time of that forward pass (decode included)
    model_version: str = ""  # of the weights that embedded it (the index refuses other versions)


class Encoder:
    """Loads the checkpoint once per replica; embeds batches of encoded images.

    Args:
        checkpoint: the pinned checkpoint folder (``build_app`` resolves a run folder once, so
            every replica, including one started after a retrain, loads the same weights).
        device: "auto" | "cpu" | "cuda".
        model_version: the version the app was pinned to; a replica that loads other weights
            refuses to start (None: no check).
    """

    def __init__(self, checkpoint: str, device: str = "auto", model_version: str | None = None) -> None:
        from synthray.attribution import Embedder

        self.embedder = Embedder(checkpoint, device=device)
        if model_version is not None and self.embedder.model_version != model_version:
            raise RuntimeError(
                f"{checkpoint} holds model version {self.embedder.model_version}, the app is pinned "
                f"to {model_version}: refusing to start with other weights"
            )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Applies ``{"max_batch_size", "batch_wait_timeout_s"}`` (Serve calls this on deploy and on change)."""
        unknown = set(user_config) - set(DEFAULT_BATCH)
        if unknown:
            raise ConfigError(f"encoder user_config: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_BATCH)}")
        cfg = {**DEFAULT_BATCH, **user_config}
        if int(cfg["max_batch_size"]) < 1 or float(cfg["batch_wait_timeout_s"]) < 0:
            raise ValueError(f"encoder batching needs max_batch_size >= 1 and batch_wait_timeout_s >= 0, got {cfg}")
        self.embed.set_max_batch_size(int(cfg["max_batch_size"]))
        self.embed.set_batch_wait_timeout_s(float(cfg["batch_wait_timeout_s"]))
        log.info("encoder batching: %s", cfg)

    async def describe(self) -> dict[str, Any]:
        """Model version, embedding size, classes and device of the loaded checkpoint."""
        return self.embedder.describe()

    @serve.batch(
        max_batch_size=DEFAULT_BATCH["max_batch_size"], batch_wait_timeout_s=DEFAULT_BATCH["batch_wait_timeout_s"]
    )
    async def embed(self, images: list[bytes]) -> list[Embedded]:
        """One image per call; Serve hands this method the batch.

        The forward pass runs in a worker thread so the replica keeps queueing the next
        batch's calls meanwhile (larger batches under load).
        """
        return await asyncio.to_thread(self._embed_batch, images)

    async def explain(
        self, image: bytes, references: np.ndarray, kinds: list[str], lime_samples: int
    ) -> dict[str, Any]:
        """Saliency and/or LIME maps of one image's closeness to ``references`` (JSON-ready,
        maps as base64 PNGs; see ``synthray.methods.explain``).

        Not batched: LIME scores a few hundred occluded views of the image itself, which
        are a batch of their own. Runs in a worker thread like the embedding passes.
        """
        return await asyncio.to_thread(self._explain, image, references, kinds, lime_samples)

    def _explain(self, image: bytes, references: np.ndarray, kinds: list[str], lime_samples: int) -> dict[str, Any]:
        from synthray.methods.explain import ExplainConfig, explain_attribution

        start = time.perf_counter()
        cfg = ExplainConfig(n_samples=lime_samples)
        out = explain_attribution(self.embedder, image, references, kinds, cfg).to_dict("png")
        out["ms"] = (time.perf_counter() - start) * 1000
        return out

    def _embed_batch(self, images: list[bytes]) -> list[Embedded]:
        import torch

        start = time.perf_counter()
        pixels, errors = [], []
        for data in images:  # one by one, so a file that fails to decode fails alone
            try:
                pixels.append(self.embedder.views([data])[0])
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - the decoder's verdict on one file
                errors.append(f"{type(exc).__name__}: {exc}")
        vectors = iter(self.embedder.embed_pixels(torch.stack(pixels)) if pixels else ())
        ms = (time.perf_counter() - start) * 1000
        version = self.embedder.model_version
        return [Embedded(None if err else next(vectors), err, len(images), ms, version) for err in errors]
