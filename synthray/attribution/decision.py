"""The rule's decision for a batch of queries: ``real``, a generator, or ``unknown``, from
their per-class scores and the calibrated thresholds (see :mod:`synthray.attribution.rule`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from synthray.attribution.scores import ClassScores
from synthray.attribution.openset import UNKNOWN
from synthray.attribution.thresholds import Thresholds
from synthray.data.schema import REAL


@dataclasses.dataclass
class Decision:
    """The rule's answer for N queries (arrays, for evaluation at scale)."""

    labels: list[str]  # real | a generator | unknown
    nearest: list[str]  # the best-scoring generator (also when the label is real or unknown)
    is_ai: np.ndarray  # (N,) bool
    is_ai_score: np.ndarray  # (N,) the margin of :meth:`ClassScores.is_ai_score`
    generator_score: np.ndarray  # (N,) s_c of the nearest generator
    reasons: list[str | None]  # "far" when flagged but below every acceptance, else None


def decide(cs: ClassScores, t: Thresholds, open_set: bool = True) -> Decision:
    """Applies the rule to per-class scores (see :mod:`synthray.attribution.rule`)."""
    margins = cs.margins(t)
    n = len(cs.scores)
    gen_cols = [j for j, c in enumerate(cs.classes) if c != REAL]
    score = cs.is_ai_score(t)
    flagged = score >= t.ai_threshold
    if gen_cols:
        # Among the generators whose own threshold the image meets, the most similar one; when
        # none meets it, the most similar generator overall (reported as "nearest").
        gs = cs.scores[:, gen_cols]
        meets = margins[:, gen_cols] >= t.ai_threshold
        best_meeting = np.where(meets, gs, -np.inf).argmax(axis=1)
        best_any = gs.argmax(axis=1)
        pick = np.where(meets.any(axis=1), best_meeting, best_any)
        nearest = [cs.classes[gen_cols[j]] for j in pick]
        gscore = gs[np.arange(n), pick]
    else:
        nearest, gscore = [UNKNOWN] * n, np.full(n, -np.inf)
    labels: list[str] = []
    reasons: list[str | None] = []
    for i in range(n):
        if not flagged[i]:
            labels.append(REAL)
            reasons.append(None)
        elif open_set and gscore[i] < t.acceptance.get(nearest[i], -np.inf):
            labels.append(UNKNOWN)
            reasons.append("far")
        else:
            labels.append(nearest[i])
            reasons.append(None)
    return Decision(labels, nearest, flagged, score, gscore, reasons)
