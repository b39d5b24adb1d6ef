"""A look at the benchmark: a few test images of every class in one picture (``samples.png``).

The fakes keep the colour and content of real crops and differ in their generator's
fingerprint, so at a glance the classes look alike; that is the point of the benchmark,
and the picture shows it before any number does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from synthray.plots import pyplot, save_figure

SAMPLES_NAME = "samples.png"


def _strip(files: Sequence[Path], side: int) -> np.ndarray:
    """The images side by side, each resized to ``side`` (a 2-px white gap between them)."""
    gap = np.ones((side, 2, 3))
    parts: list[np.ndarray] = []
    for f in files:
        with Image.open(f) as im:
            parts += [np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.NEAREST)) / 255.0, gap]
    return np.concatenate(parts[:-1], axis=1) if parts else np.ones((side, side, 3))


def sample_grid(
    root: str | Path, classes: Sequence[str], per_class: int = 3, columns: int = 4, split: str = "test", side: int = 96
) -> Path:
    """Draws ``per_class`` images of each class's ``split`` (the first by file name) into
    ``<root>/samples.png``, ``columns`` classes a row; returns the path."""
    root = Path(root)
    plt = pyplot()
    rows = max(1, math.ceil(len(classes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * per_class * 0.9, rows * 1.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), classes):
        files = sorted((root / name / split).glob("*.png"))[:per_class]
        ax.imshow(_strip(files, side))
        ax.set_title(name, fontsize=7)
    fig.suptitle(f"synthbench: up to {per_class} {split} images of each of its {len(classes)} classes", fontsize=9)
    return save_figure(fig, root / SAMPLES_NAME, dpi=100)
