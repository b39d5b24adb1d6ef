"""A trained checkpoint as an embedding function: encoded bytes or pixels -> unit vectors.

The same class embeds references (a callable class for Ray Data's ``map_batches``: the
checkpoint loads once per actor), queries in the Serve app, and evaluation sets. It
preprocesses exactly as validation did during training (the checkpoint's resolution and
normalisation, no augmentation), so references and queries share one space.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synthray.config import PreprocessConfig, TrainConfig, from_dict
from synthray.train.checkpoint import CheckpointError, latest_good, load_checkpoint

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder or a training run folder.

    A run folder (``<run_dir>/<run_name>``, Ray Train's ``checkpoint_*`` or the local
    trainer's ``checkpoints/epoch_*``) resolves to its newest loadable checkpoint.

    Raises:
        CheckpointError: nothing loadable there.
    """
    path = Path(path)
    if (path / "COMPLETE").is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first (synthray train) or pass the right folder")
    candidates = sorted(path.glob("checkpoint_*")) or sorted((path / "checkpoints").glob("epoch_*"))
    found = latest_good(candidates)
    if found is None:
        raise CheckpointError(
            f"{path} holds no loadable checkpoint (looked for checkpoint_*/ and checkpoints/epoch_*/)"
        )
    return found[0]


class Embedder:
    """Loads a checkpoint's encoder once; embeds batches.

    Args:
        checkpoint: checkpoint or run folder (see :func:`resolve_checkpoint`).
        device: "auto" (CUDA when present) | "cpu" | "cuda".
        batch_size: images per forward pass (bounds memory for large requests).
        views: native-scale crops averaged per image (crop modes); None = the training config's.
    """

    def __init__(
        self, checkpoint: str | Path, device: str = "auto", batch_size: int = 64, views: int | None = None
    ) -> None:
        from synthray.data.preprocess import Preprocessor, eval_preprocess, resolve_device
        from synthray.models import build_encoder

        self.checkpoint = resolve_checkpoint(checkpoint)
        loaded = load_checkpoint(self.checkpoint)
        meta = loaded["meta"]
        self.train_config: TrainConfig = from_dict(TrainConfig, meta["config"])
        self.classes: list[str] = list(meta["classes"])
        self.model_version: str = meta["model_version"]
        self.device = resolve_device(device)
        # Validation-time preprocessing of the training run: same size and scaling, no augmentation,
        # a deterministic crop; ``views`` crops of a large image are embedded and averaged.
        self.preprocess: PreprocessConfig = dataclasses.replace(
            eval_preprocess(self.train_config.preprocess),
            device=self.device.type,
            seed=None,
            views=views if views is not None else self.train_config.preprocess.views,
        )
        self.preprocessor = Preprocessor(self.preprocess)
        # The checkpoint holds every weight (and the input normalisation): the pretrained start
        # it was trained from is not read again.
        model = build_encoder(
            dataclasses.replace(self.train_config.encoder, weights=None, weights_path=None, pretrained=False)
        )
        model.load_state_dict(loaded["model"])
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda" and self.preprocess.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dim: int = int(self.model.embedding_dim)
        self.batch_size = batch_size
        log.info(
            "embedder: %s (model version %s, %d-d, %s)", self.checkpoint, self.model_version, self.dim, self.device
        )

    @property
    def held_out(self) -> list[str]:
        """Generators the training run kept out on purpose (zero-shot classes)."""
        return list(self.train_config.experiment.held_out)

    def pixels(self, images: Sequence[bytes]) -> torch.Tensor:
        """Encoded images -> uint8 (N, 3, R, R), the first (center) view, as explanations show it
        (raises on undecodable bytes)."""
        return self.preprocessor.prepare(images)

    def views(self, images: Sequence[bytes]) -> torch.Tensor:
        """Encoded images -> uint8 (N, V, 3, R, R): every view that :meth:`embed_pixels` averages."""
        return self.preprocessor.views(images)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 (N, 3, R, R), or views (N, V, 3, R, R) -> float32 (N, D) unit vectors (the
        normalised mean of an image's view embeddings)."""
        from synthray.data.preprocess import finalize_pixels

        pixels = torch.as_tensor(pixels)
        n, v = len(pixels), (pixels.shape[1] if pixels.ndim == 5 else 1)
        flat = pixels.reshape(n * v, *pixels.shape[-3:])
        out = []
        for s in range(0, len(flat), self.batch_size):
            x = finalize_pixels(flat[s : s + self.batch_size], self.preprocess, self.device)
            out.append(self.model(x).float().cpu())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        z = torch.cat(out).reshape(n, v, -1).mean(dim=1)
        return torch.nn.functional.normalize(z, dim=1).numpy()

    def embed_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> float32 (N, D) unit vectors."""
        return self.embed_pixels(self.views(images) if self.preprocess.views > 1 else self.pixels(images))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data ``map_batches`` form: adds an ``embedding`` column, drops the image bytes."""
        images = list(batch["image"])
        out = {k: v for k, v in batch.items() if k != "image"}
        out["embedding"] = self.embed_bytes(images)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "model_version": self.model_version,
            "dim": self.dim,
            "classes": self.classes,
            "held_out": self.held_out,
            "resolution": self.preprocess.resolution,
            "device": str(self.device),
        }


__all__ = ["CheckpointError", "Embedder", "resolve_checkpoint"]
