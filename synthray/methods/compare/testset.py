"""The test images every method of a comparison is scored on, read and preprocessed once."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from synthray.config import PipelineConfig, PreprocessConfig


@dataclasses.dataclass
class TestSet:
    """The test images every method is scored on (uint8, so each method finalises them itself)."""

    pixels: np.ndarray  # (N, 3, R, R) uint8
    labels: np.ndarray  # (N,) true class names


def load_test_set(
    shards: str,
    classes: list[str],
    preprocess: PreprocessConfig,
    pipeline: PipelineConfig,
    per_class: int | None,
    seed: int,
) -> TestSet:
    """Every test-split image of ``classes`` (at most ``per_class`` each), preprocessed once."""
    from synthray.data.loader import iter_preprocessed

    pipe = dataclasses.replace(pipeline, balance="none")
    pixels, labels = [], []
    taken = dict.fromkeys(classes, 0)
    for batch in iter_preprocessed(shards, classes, preprocess, pipe, split="test", seed=seed):
        names = np.array([classes[i] for i in batch["label"]], dtype=object)
        keep = [j for j, n in enumerate(names) if per_class is None or taken[n] < per_class]
        for j in keep:
            taken[names[j]] += 1
        pixels.append(batch["image"][keep])
        labels.append(names[keep])
    if not pixels or sum(len(p) for p in pixels) == 0:
        raise ValueError(f"{shards} has no test-split image of {classes}")
    return TestSet(np.concatenate(pixels), np.concatenate(labels))


def finalized(
    test: TestSet, idx: slice | np.ndarray, preprocess: PreprocessConfig, device: torch.device
) -> torch.Tensor:
    """The images at ``idx`` as a method takes them (:func:`~synthray.data.preprocess.finalize_pixels`)."""
    from synthray.data.preprocess import finalize_pixels

    return finalize_pixels(test.pixels[idx], preprocess, device)
