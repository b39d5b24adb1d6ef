"""The service's attribution rule: per-class similarity scores, a calibrated is-AI margin,
per-class acceptance for naming, and enrollment that cannot swallow real photographs.

A neighbour vote counts references, so whichever class has more references nearby wins, and
"real", the most varied class, loses to any tight generator cluster. Here every class is
scored alone: ``s_c`` is the mean cosine similarity of the query's ``k`` nearest references
*of class c* (fewer when c has fewer), so a class's reference count does not decide the answer.

- is-AI: the margin ``max_c (s_c - s_real - (t_c - t))`` over generators c, where ``t`` is the
  threshold calibrated on real validation photographs at the target false-positive rate and
  ``t_c >= t`` a generator's own, stricter threshold (set at enrollment, see below). The image
  is flagged when the margin reaches ``t``.
- label: ``real`` when not flagged; otherwise the flagged generator with the highest ``s_c``,
  or ``unknown`` when that score is below the generator's acceptance (its own images' scores
  at the calibrated ``unknown_rate``): an image of a generator the index has never seen is
  AI, but no known generator's. So ``label`` and ``is_ai`` always agree: ``real`` if and only
  if not flagged.
- enrollment: a sample set that mostly scores as real is refused; the new generator's
  acceptance comes from its own samples, leave-one-out; and its threshold ``t_c`` is raised
  until the real calibration photographs stored with the index are flagged no more often than
  before (within ``max_fpr_increase``).

Here: :func:`attribute`, the rule applied to a store's hits. The pieces live beside it and
are importable from here as before: :class:`Thresholds` (``thresholds.py``), the per-class
scores (``scores.py``), :func:`decide` (``decision.py``), :func:`calibrate`
(``calibration.py``) and the enrollment check (``enrollment_check.py``).

Everything here is numpy: no Ray, no torch, no store.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

# The pieces of the rule are re-exported here (``X as X``), where the service, the index
# build, evaluation and the tests import them.
from synthray.attribution.calibration import calibrate as calibrate
from synthray.attribution.decision import Decision as Decision
from synthray.attribution.decision import decide as decide
from synthray.attribution.enrollment_check import EnrollmentCheck as EnrollmentCheck
from synthray.attribution.enrollment_check import EnrollmentRefused as EnrollmentRefused
from synthray.attribution.enrollment_check import check_enrollment as check_enrollment
from synthray.attribution.openset import UNKNOWN
from synthray.attribution.scores import ClassScores as ClassScores
from synthray.attribution.scores import class_scores as class_scores
from synthray.attribution.scores import topk_mean as topk_mean
from synthray.attribution.thresholds import Thresholds as Thresholds


@dataclasses.dataclass
class Attribution:
    """The answer for one image."""

    label: str  # "real", a generator name, or "unknown"
    nearest_class: str  # the best-scoring generator (also when the label is real or unknown)
    is_ai_score: float  # the is-AI margin; flagged when >= the calibrated threshold
    is_ai: bool  # label != "real"
    confidence: float  # the winning class's score minus the runner-up's (0: a tie)
    mean_similarity: float  # the label's class score s_c (for "unknown": the nearest generator's)
    unknown_reason: str | None  # "far" | "empty_index" | None
    votes: dict[str, float]  # every class's score s_c (classes with references)
    neighbours: list[dict[str, Any]]  # [{generator, similarity, origin, source_path}], nearest first

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attribute(
    hits: Sequence[Mapping[str, Sequence[float]]],
    neighbours: Sequence[Sequence[Any]],
    t: Thresholds | None,
    k: int,
    open_set: bool = True,
) -> list[Attribution]:
    """Attributions of N queries.

    Args:
        hits: per query, each class's nearest-reference similarities (the store's ``class_hits``).
        neighbours: per query, its nearest references overall, nearest first (evidence shown
            with the answer; objects with ``generator``, ``similarity``, ``origin``, ``source_path``).
        t: the calibrated thresholds (None: an uncalibrated index, is-AI margin threshold 0).
        k: references per class.
        open_set: answer "unknown" below a generator's acceptance.
    """
    t = t or Thresholds()
    cs = class_scores(hits, k=k)
    out: list[Attribution] = []
    if not cs.classes:
        return [Attribution(UNKNOWN, UNKNOWN, 0.0, False, 0.0, 0.0, "empty_index", {}, []) for _ in hits]
    d = decide(cs, t, open_set)
    for i in range(len(hits)):
        row = cs.scores[i]
        finite = np.sort(row[np.isfinite(row)])[::-1]
        label = d.labels[i]
        own = row[cs.classes.index(label)] if label in cs.classes else d.generator_score[i]
        out.append(
            Attribution(
                label=label,
                nearest_class=d.nearest[i],
                is_ai_score=float(d.is_ai_score[i]),
                is_ai=bool(d.is_ai[i]),
                confidence=float(finite[0] - finite[1]) if len(finite) > 1 else 1.0,
                mean_similarity=float(own),
                unknown_reason=d.reasons[i],
                votes={c: float(x) for c, x in zip(cs.classes, row) if np.isfinite(x)},
                neighbours=[
                    {
                        "generator": nb.generator,
                        "similarity": float(nb.similarity),
                        "origin": getattr(nb, "origin", ""),
                        "source_path": getattr(nb, "source_path", ""),
                    }
                    for nb in neighbours[i]
                ],
            )
        )
    return out
