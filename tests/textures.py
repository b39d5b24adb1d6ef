"""Texture classes a tiny encoder learns in a few CPU steps (a stand-in for generator fingerprints),
and photo crops as the real class.

Each generator class is a texture under random colour and noise, so an encoder must look at
structure, not mean colour, as with real generator fingerprints. "real" is a random crop of one
of the photographs the installed packages ship (synthbench's pool), as real images are photos.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

TEXTURES = ("real", "stripes", "checks", "rings", "dots", "diagonals")


def texture(label: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``label``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(3, 6)
    if label == "stripes":
        base = np.sin(2 * np.pi * freq * xx + phase)
    elif label == "checks":
        base = np.sign(np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy))
    elif label == "rings":
        base = np.sin(2 * np.pi * freq * np.hypot(xx - 0.5, yy - 0.5) * 2 + phase)
    elif label == "dots":
        base = (np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy + phase) > 0.6) * 2.0 - 1
    elif label == "diagonals":
        base = np.sign(np.sin(2 * np.pi * freq * (xx + yy) + phase))
    elif label == "real":
        return _photo_crop(rng, size)
    else:
        raise ValueError(f"unknown texture {label!r}; known: {TEXTURES}")
    colour = rng.uniform(0.2, 0.8, 3)
    img = colour[None, None, :] + 0.25 * base[..., None] + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _sampler(size: int):
    from synthray.data.synthbench.crops import CropConfig, CropSampler
    from synthray.data.synthbench.photos import find_photos

    return CropSampler([p.load() for p in find_photos()[0]], size, CropConfig())


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    from synthray.data.synthbench.crops import to_uint8

    return to_uint8(_sampler(size).sample(rng))


def write_textures(root: str | Path, labels: Iterable[str], per_class: int, seed: int = 0, size: int = 32) -> Path:
    """A plain-folder tree ``<root>/<label>/NNN.png``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(texture(label, rng, size)).save(root / label / f"{i:03d}.png")
    return root
