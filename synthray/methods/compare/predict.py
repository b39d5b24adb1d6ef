"""What a comparison asks of a fitted method: its predictions over the test set, timed, and
explanations of a few chosen test images."""

from __future__ import annotations

import time

import numpy as np
import torch

from synthray.config import PreprocessConfig
from synthray.data.schema import REAL
from synthray.methods.base import Method, Prediction
from synthray.methods.compare.settings import ExplainFigureConfig
from synthray.methods.compare.testset import TestSet, finalized
from synthray.methods.explain import Explanation, explain_score


def predict_all(
    method: Method, test: TestSet, preprocess: PreprocessConfig, device: torch.device, batch_size: int
) -> tuple[Prediction, float]:
    """The method's predictions for the whole test set and its inference images/s (model time only)."""
    parts, seconds = [], 0.0
    for s in range(0, len(test.labels), batch_size):
        x = finalized(test, slice(s, s + batch_size), preprocess, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        parts.append(method.predict(x))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
    return Prediction.concat(parts), (len(test.labels) / seconds if seconds > 0 else float("inf"))


def pick_explained(test: TestSet, seen: list[str], held_out: list[str], n: int) -> list[int]:
    """Indices of the test images to explain: a seen generator's, a zero-shot one's, then real, then any."""
    order: list[int] = []
    for group in ([c for c in seen if c != REAL], list(held_out), [REAL]):
        hits = np.flatnonzero(np.isin(test.labels, group))
        if len(hits):
            order.append(int(hits[0]))
    order += [i for i in range(len(test.labels)) if i not in order]
    return order[:n]


def explain_method(
    method: Method, images: torch.Tensor, predicted: list[str], cfg: ExplainFigureConfig
) -> list[Explanation | None]:
    """Explanations of the method's predicted label for each image (None where it has no score)."""
    out: list[Explanation | None] = []
    for img, label in zip(images, predicted):
        fn = method.score_fn(label)
        out.append(None if fn is None else explain_score(fn, img, cfg.kinds, cfg.lime))
    return out
