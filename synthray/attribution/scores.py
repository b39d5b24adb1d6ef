"""Per-class scores: ``s_c``, the mean cosine similarity of a query's ``k`` nearest references
*of class c*, so that a class's reference count does not decide the answer; and the is-AI
margin over them (see :mod:`synthray.attribution.rule`)."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from synthray.attribution.thresholds import Thresholds
from synthray.data.schema import REAL


@dataclasses.dataclass
class ClassScores:
    """Per-class scores of N queries over C classes."""

    classes: list[str]  # columns
    scores: np.ndarray  # (N, C) mean similarity of each class's nearest references; -inf: class has none

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 2 or self.scores.shape[1] != len(self.classes):
            raise ValueError(f"scores must be (N, {len(self.classes)}), got {self.scores.shape}")

    @property
    def real_col(self) -> int | None:
        return self.classes.index(REAL) if REAL in self.classes else None

    def real_score(self) -> np.ndarray:
        """(N,) ``s_real``; -inf when the index holds no real reference."""
        col = self.real_col
        return self.scores[:, col] if col is not None else np.full(len(self.scores), -np.inf)

    def margins(self, t: Thresholds) -> np.ndarray:
        """(N, C) ``s_c - s_real - (t_c - t)``; -inf in the real column and for absent classes."""
        with np.errstate(invalid="ignore"):  # -inf - -inf: a class absent beside an absent real
            out = np.nan_to_num(self.scores - self.real_score()[:, None], nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        if self.real_col is None:  # no real reference: nothing to weigh against, every image looks AI
            out = np.where(np.isfinite(self.scores), np.inf, -np.inf)
        for j, name in enumerate(self.classes):
            if name == REAL:
                out[:, j] = -np.inf
            elif name in t.class_thresholds:
                out[:, j] -= t.threshold_of(name) - t.ai_threshold
        return out

    def is_ai_score(self, t: Thresholds) -> np.ndarray:
        """(N,) the is-AI score: the largest per-generator margin (flagged when >= ``t.ai_threshold``)."""
        m = self.margins(t)
        return m.max(axis=1) if m.shape[1] else np.full(len(m), -np.inf)


def class_scores(
    hits: Sequence[Mapping[str, Sequence[float]]], classes: Sequence[str] | None = None, k: int | None = None
) -> ClassScores:
    """Per-class scores from each query's per-class neighbour similarities.

    Args:
        hits: per query, ``{class: similarities of its nearest references, most similar first}``.
        classes: the columns (default: every class seen, sorted).
        k: use at most the first k similarities of each class (None = all given).
    """
    names = list(classes) if classes is not None else sorted({c for h in hits for c in h})
    col = {c: j for j, c in enumerate(names)}
    scores = np.full((len(hits), len(names)), -np.inf)
    for i, h in enumerate(hits):
        for c, sims in h.items():
            if c in col and len(sims):
                scores[i, col[c]] = float(np.mean(np.asarray(sims, dtype=np.float64)[:k]))
    return ClassScores(names, scores)


def topk_mean(similarities: np.ndarray, k: int) -> np.ndarray:
    """(N, M) similarities to M references of one class -> (N,) mean of each row's k largest."""
    sims = np.asarray(similarities, dtype=np.float64)
    kk = min(k, sims.shape[1])
    if kk == 0:
        return np.full(len(sims), -np.inf)
    return -np.mean(np.partition(-sims, kk - 1, axis=1)[:, :kk], axis=1)
