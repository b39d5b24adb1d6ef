"""The attribution rule: a kNN vote with an is-AI score and an open-set "unknown".

Per query, from its k nearest references (label, cosine similarity):
- votes: one per neighbour (majority, as the thesis) or its similarity (weighted);
- the predicted class: most votes; ties go to the class whose nearest voter is closest;
- is-AI score: the share of vote mass on non-real neighbours (an AUC-ready score);
- agreement: the winner's share of the vote mass;
- "unknown" when the neighbours are too far (mean similarity below ``min_similarity``)
  or disagree too much (agreement below ``min_agreement``): an image of a generator the
  index has never seen lands between clusters, not inside one.
Thresholds are calibrated on validation images (:func:`calibrate`) and stored with the
index, never hard-coded. Everything here is numpy: no Ray, no torch.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.attribution.config import AttributionConfig
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
class Thresholds:
    """Calibrated open-set and is-AI thresholds (stored in the index's metadata)."""

    min_similarity: float = -1.0  # mean neighbour similarity below this -> unknown ("far")
    min_agreement: float = 0.0  # winner's vote share below this -> unknown ("split")
    ai_threshold: float = 0.5  # is-AI score >= this -> flagged AI
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)  # how they were chosen

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Thresholds":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"Thresholds: unknown keys {sorted(unknown)}")
        return cls(**d)


@dataclasses.dataclass
class Votes:
    """The vote of N queries over their k neighbours (arrays, for evaluation at scale)."""

    classes: list[str]  # vote columns
    votes: np.ndarray  # (N, C) vote mass per class
    predicted: np.ndarray  # (N,) int index into ``classes`` (the winner, before open-set)
    is_ai_score: np.ndarray  # (N,) share of vote mass on non-real neighbours, in [0, 1]
    agreement: np.ndarray  # (N,) winner's share of the vote mass
    mean_similarity: np.ndarray  # (N,) mean cosine similarity of the k neighbours

    def labels(self, thresholds: Thresholds | None = None) -> list[str]:
        """Predicted labels; "unknown" where a threshold rejects (none given = closed set)."""
        names = [self.classes[i] for i in self.predicted]
        if thresholds is None:
            return names
        reason = unknown_reasons(self, thresholds)
        return [UNKNOWN if r else n for n, r in zip(names, reason)]


def vote(labels: np.ndarray, similarities: np.ndarray, weighted: bool = True,
         classes: Sequence[str] | None = None) -> Votes:
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
    # Tie-break as synthray.attribution.knn: the class whose nearest voter is closest wins.
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
    return Votes(classes=names, votes=votes, predicted=predicted, is_ai_score=is_ai,
                 agreement=agreement, mean_similarity=sims.mean(axis=1))


def unknown_reasons(v: Votes, t: Thresholds) -> list[str | None]:
    """Why each query is "unknown": "far", "split" (both: "far"), or None when it is not."""
    far = v.mean_similarity < t.min_similarity
    split = v.agreement < t.min_agreement
    return ["far" if f else "split" if s else None for f, s in zip(far, split)]


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


def calibrate(v: Votes, true_labels: Sequence[str], cfg: AttributionConfig) -> Thresholds:
    """Thresholds from validation images of classes the index knows.

    Args:
        v: the votes of the validation queries (searched against the index).
        true_labels: their true classes (all present in the index).
        cfg: ``unknown_rate`` (share of these allowed to come out unknown) and ``target_fpr``.
    Returns:
        :class:`Thresholds`, with a ``calibration`` record of what was measured.
    """
    y = np.asarray([str(t) for t in true_labels], dtype=object)
    if len(y) != len(v.predicted):
        raise ValueError(f"{len(y)} labels for {len(v.predicted)} queries")
    half = cfg.unknown_rate / 2
    t = Thresholds(min_similarity=quantile_threshold(v.mean_similarity, half),
                   min_agreement=quantile_threshold(v.agreement, half))
    real = y == REAL
    if real.any():
        t.ai_threshold = fpr_threshold(v.is_ai_score[real], cfg.target_fpr)
        if t.ai_threshold > v.is_ai_score.max():
            # More than target_fpr of the real images sit in all-AI neighbourhoods: no threshold
            # meets the target except one that flags nothing. Say so instead of failing quietly.
            log.warning("is-AI threshold: more than %.0f%% of real validation images score %.2f or more; "
                        "at the requested false-positive rate nothing is flagged (the encoder does not "
                        "separate real from AI well enough; the is-AI score's AUC still ranks them)",
                        100 * cfg.target_fpr, v.is_ai_score[real].max())
    reasons = unknown_reasons(v, t)
    flagged = v.is_ai_score >= t.ai_threshold
    t.calibration = {
        "queries": int(len(y)),
        "real_queries": int(real.sum()),
        "unknown_rate_target": cfg.unknown_rate,
        "unknown_rate": float(np.mean([r is not None for r in reasons])),
        "target_fpr": cfg.target_fpr,
        "fpr": float(flagged[real].mean()) if real.any() else None,
        "tpr": float(flagged[~real].mean()) if (~real).any() else None,
        "k": cfg.k,
        "vote": cfg.vote,
    }
    return t


@dataclasses.dataclass
class Attribution:
    """The answer for one image."""

    label: str  # "real", a generator name, or "unknown"
    nearest_class: str  # the vote winner (also when the label is unknown)
    is_ai_score: float  # share of non-real neighbour weight in [0, 1]
    is_ai: bool  # is_ai_score >= the calibrated threshold
    confidence: float  # winner's share of the vote mass
    mean_similarity: float
    unknown_reason: str | None  # "far" | "split" | None
    votes: dict[str, float]  # vote mass per class, only classes with votes
    neighbours: list[dict[str, Any]]  # [{generator, similarity, origin, source_path}], nearest first

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attribute(neighbours: Sequence[Sequence[Any]], cfg: AttributionConfig,
              thresholds: Thresholds | None = None) -> list[Attribution]:
    """Attributions of N queries from their store neighbours.

    Args:
        neighbours: per query, its neighbours nearest first (objects with ``generator``,
            ``similarity``; :class:`synthray.index.Neighbour`).
        cfg: vote mode and whether open-set applies.
        thresholds: calibrated thresholds (None: closed set, 0.5 is-AI threshold).
    """
    out: list[Attribution | None] = [None] * len(neighbours)
    rows = [i for i, n in enumerate(neighbours) if len(n)]
    for i, n in enumerate(neighbours):
        if not len(n):  # an empty index: nothing to compare with
            out[i] = Attribution(UNKNOWN, UNKNOWN, 0.5, False, 0.0, 0.0, "empty_index", {}, [])
    if rows:
        k = min(len(neighbours[i]) for i in rows)
        labels = np.array([[nb.generator for nb in neighbours[i][:k]] for i in rows], dtype=object)
        sims = np.array([[nb.similarity for nb in neighbours[i][:k]] for i in rows], dtype=np.float64)
        v = vote(labels, sims, weighted=cfg.vote == "weighted")
        t = thresholds or Thresholds()
        reasons = unknown_reasons(v, t) if (cfg.open_set and thresholds is not None) else [None] * len(rows)
        for j, i in enumerate(rows):
            winner = v.classes[v.predicted[j]]
            score = float(v.is_ai_score[j])
            out[i] = Attribution(
                label=UNKNOWN if reasons[j] else winner,
                nearest_class=winner,
                is_ai_score=score,
                is_ai=score >= t.ai_threshold,
                confidence=float(v.agreement[j]),
                mean_similarity=float(v.mean_similarity[j]),
                unknown_reason=reasons[j],
                votes={c: float(x) for c, x in zip(v.classes, v.votes[j]) if x > 0},
                neighbours=[{"generator": nb.generator, "similarity": float(nb.similarity),
                             "origin": getattr(nb, "origin", ""), "source_path": getattr(nb, "source_path", "")}
                            for nb in neighbours[i][:k]],
            )
    return out  # type: ignore[return-value]
