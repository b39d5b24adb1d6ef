"""A small data set a tiny encoder can learn in a few CPU steps, ingested once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthray.config import IngestConfig, TrainConfig, from_dict
from synthray.data.ingest import ingest

CLASSES = ["real", "stripes", "checks", "rings"]


def _image(label: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    # Each class has its own texture under random colour and noise, so the encoder must
    # look at structure (as with generator fingerprints), not at mean colour.
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(3, 6)
    if label == "stripes":
        base = np.sin(2 * np.pi * freq * xx + phase)
    elif label == "checks":
        base = np.sign(np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy))
    elif label == "rings":
        base = np.sin(2 * np.pi * freq * np.hypot(xx - 0.5, yy - 0.5) * 2 + phase)
    else:
        base = rng.normal(0, 0.6, (size, size))
    colour = rng.uniform(0.2, 0.8, 3)
    img = colour[None, None, :] + 0.25 * base[..., None] + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def texture_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for label in CLASSES:
        (root / label).mkdir()
        for i in range(60):
            Image.fromarray(_image(label, rng)).save(root / label / f"{i:03d}.png")
    out = tmp_path_factory.mktemp("texture_shards")
    # A quarter to validation: the kNN accuracy needs a dozen queries per class.
    cfg = from_dict(IngestConfig, {"use_ray": False, "max_rows_per_shard": 60,
                                   "split": {"val_fraction": 0.25, "test_fraction": 0.1}})
    ingest("folder", root, out, cfg)
    return out


def tiny_train_config(shards: Path, run_dir: Path, **overrides) -> TrainConfig:
    """A config that trains a small timm backbone at 32 px in seconds per epoch."""
    data = {
        "shards": str(shards),
        "run_dir": str(run_dir),
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.003,
        "warmup_epochs": 0.2,
        "steps_per_epoch": 8,
        "val_batches": 4,
        "knn_k": 5,
        "knn_val_per_class": 12,
        "encoder": {"backbone": "resnet10t", "embedding_dim": 32, "head_hidden_dim": 64},
        "preprocess": {"resolution": 32, "device": "cpu"},
        "pipeline": {"batch_size": 32, "samples_per_class": 4, "shuffle_buffer": 64},
    }
    for key, value in overrides.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(TrainConfig, data)
