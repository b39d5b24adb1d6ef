"""The thesis's kNN vote, and the threshold helpers every calibration uses.

Per query, from its k nearest references (label, cosine similarity):
- votes: one per neighbour (majority, as the thesis) or its similarity (weighted);
- the predicted class: most votes; ties go to the class whose nearest voter is closest;
- is-AI score: the share of vote mass on non-real neighbours;
- agreement: the winner's share of the vote mass.
This is the closed-set attribution of the thesis's evaluation (Table 4.3, the sample-size
sweep) and of the compared methods. The service answers with the per-class rule of
:mod:`synthray.attribution.rule`, where the count of references per class does not decide
the answer. Everything here is numpy: no Ray, no torch.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from synthray.data.schema import REAL

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
# How far a threshold stays from a calibration value when there is no other value on the far
# side to go halfway to. Re-embedding the same image in another batch moves its similarities
# and vote shares by ~1e-8 (measured 7e-9 on an is-AI score); a threshold one float step away
# flipped such an image at query time. 1e-6 is far above that jitter and far below any gap
# that means something.
MARGIN = 1e-6


@dataclasses.dataclass
class Votes:
    """The vote of N queries over their k neighbours (arrays, for evaluation at scale)."""

    classes: list[str]  # vote columns
    votes: np.ndarray  # (N, C) vote mass per class
    predicted: np.ndarray  # (N,) int index into ``classes`` (the winner, before open-set)
    is_ai_score: np.ndarray  # (N,) share of vote mass on non-real neighbours, in [0, 1]
    agreement: np.ndarray  # (N,) winner's share of the vote mass
    mean_similarity: np.ndarray  # (N,) mean cosine similarity of the k neighbours

    def labels(self) -> list[str]:
        """The winners' names (closed set: every query is named)."""
        return [self.classes[i] for i in self.predicted]


def vote(
    labels: np.ndarray, similarities: np.ndarray, weighted: bool = True, classes: Sequence[str] | None = None
) -> Votes:
    """Votes of N queries from their neighbours' labels and similarities.

    Args:
        labels: (N, k) class names of the neighbours, nearest first (str array).
        similarities: (N, k) cosine similarities, nearest first.
        weighted: similarity-weighted votes (clamped at 0) instead of one vote each.
        classes: vote columns (default: the sorted distinct labels).
    Returns:
        :class:`Votes`.
    """
    labels = np.asarray(labels, dtype=object)
    sims = np.asarray(similarities, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != sims.shape or labels.shape[1] == 0:
        raise ValueError(f"labels and similarities must both be (N, k>=1), got {labels.shape} and {sims.shape}")
    names = list(classes) if classes is not None else sorted({str(x) for x in labels.ravel()})
    col = {c: i for i, c in enumerate(names)}
    try:
        idx = np.vectorize(lambda s: col[str(s)], otypes=[np.int64])(labels)
    except KeyError as exc:
        raise ValueError(f"neighbour label {exc.args[0]!r} not among classes {names}") from exc
    n, k = idx.shape
    w = np.clip(sims, 0, None) if weighted else np.ones_like(sims)
    votes = np.zeros((n, len(names)))
    np.add.at(votes, (np.repeat(np.arange(n), k), idx.ravel()), w.ravel())
    # Tie-break as synthray.models.knn: the class whose nearest voter is closest wins.
    first_rank = np.full((n, len(names)), k, dtype=np.int64)
    np.minimum.at(first_rank, (np.repeat(np.arange(n), k), idx.ravel()), np.tile(np.arange(k), n))
    best = votes.max(axis=1, keepdims=True)
    tied = np.isclose(votes, best, rtol=0, atol=1e-9) & (votes > 0) | (best == 0)
    predicted = np.where(tied, first_rank, k + 1).argmin(axis=1)
    total = votes.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    real_col = col.get(REAL)
    real_mass = votes[:, real_col] if real_col is not None else np.zeros(n)
    is_ai = np.where(total > 0, 1.0 - real_mass / safe, 0.5)
    agreement = np.where(total > 0, votes[np.arange(n), predicted] / safe, 0.0)
    return Votes(
        classes=names,
        votes=votes,
        predicted=predicted,
        is_ai_score=is_ai,
        agreement=agreement,
        mean_similarity=sims.mean(axis=1),
    )


def quantile_threshold(values: np.ndarray, rate: float) -> float:
    """The threshold t that rejects (values < t) at most ``rate`` of the values.

    Exact on the sample: of the thresholds that reject the most values within the rate,
    t lies halfway between the largest rejected value and the smallest kept one, so
    re-embedding the same images (float jitter ~1e-7 between batch sizes and devices)
    does not flip the values next to it. When nothing may be rejected, t is ``MARGIN`` below
    the smallest value (a new query clearly below everything seen is still rejected).
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if len(x) == 0:
        raise ValueError("no values to calibrate on")
    allowed = int(np.floor(rate * len(x) + 1e-9))  # how many may fall below t
    kept = x[allowed] if allowed else x[0]  # the smallest value that must stay; ties with it stay too
    rejected = x[x < kept]
    return float((rejected[-1] + kept) / 2) if len(rejected) else float(kept - MARGIN)


def fpr_threshold(real_scores: np.ndarray, target_fpr: float) -> float:
    """The threshold t that flags (scores >= t) at most ``target_fpr`` of the real images,
    and of those the one flagging the most: halfway between the largest unflagged score and
    the smallest flagged one (same decisions on the sample, a margin for float jitter). When
    no real image may be flagged, t is ``MARGIN`` above the largest real score."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    if len(s) == 0:
        raise ValueError("no real validation images to calibrate the is-AI threshold on")
    levels = np.unique(s)
    flagged = (len(s) - np.searchsorted(s, levels, side="left")) / len(s)  # share >= each level
    ok = np.flatnonzero(flagged <= target_fpr + 1e-12)
    if len(ok) == 0:  # even the largest score is too common: flag no real image
        return float(levels[-1] + MARGIN)
    i = int(ok[0])  # ascending: the first level that meets the target flags the most fakes
    return float(levels[i] if i == 0 else (levels[i - 1] + levels[i]) / 2)
