"""Calibrating the rule on validation images of the indexed classes: the is-AI threshold at a
target false-positive rate on real photographs, and each generator's acceptance at a target
share of its own images answered ``unknown``."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from synthray.attribution.scores import ClassScores
from synthray.attribution.decision import decide
from synthray.attribution.openset import UNKNOWN, fpr_threshold, quantile_threshold
from synthray.attribution.thresholds import Thresholds
from synthray.data.schema import REAL

log = logging.getLogger(__name__)


def calibrate(
    cs: ClassScores, true_labels: Sequence[str], target_fpr: float, unknown_rate: float, k: int
) -> Thresholds:
    """The rule's thresholds from validation images of the indexed classes.

    Args:
        cs: their per-class scores against the index.
        true_labels: their classes.
        target_fpr: share of real validation photographs allowed to be flagged.
        unknown_rate: share of each generator's validation images allowed to come out unknown.
        k: the k the scores were computed with (recorded).
    Returns:
        :class:`Thresholds` with a ``calibration`` record (rates measured at the thresholds,
        and a ``warning`` when no threshold flags anything at the target).
    """
    y = np.asarray([str(c) for c in true_labels], dtype=object)
    if len(y) != len(cs.scores):
        raise ValueError(f"{len(y)} labels for {len(cs.scores)} queries")
    t = Thresholds()
    real = y == REAL
    score = cs.is_ai_score(t)
    record: dict[str, Any] = {
        "queries": int(len(y)),
        "real_queries": int(real.sum()),
        "k": k,
        "target_fpr": target_fpr,
        "unknown_rate_target": unknown_rate,
        "warning": None,
    }
    if real.any():
        t.ai_threshold = fpr_threshold(score[real], target_fpr)
        if (~real).any() and t.ai_threshold > score[~real].max():
            record["warning"] = (
                f"no is-AI threshold keeps real validation false positives at {target_fpr:.0%} and flags any "
                "generated validation image: the encoder does not separate real from AI here"
            )
            log.warning("is-AI calibration: %s", record["warning"])
    else:
        record["warning"] = "no real validation images: the is-AI threshold is not calibrated"
        log.warning("is-AI calibration: %s", record["warning"])
    for j, name in enumerate(cs.classes):
        own = (y == name) & np.isfinite(cs.scores[:, j])
        if name != REAL and own.any():
            t.acceptance[name] = quantile_threshold(cs.scores[own, j], unknown_rate)
    d = decide(cs, t)
    flagged = d.is_ai
    record.update(
        {
            "fpr": float(flagged[real].mean()) if real.any() else None,
            "tpr": float(flagged[~real].mean()) if (~real).any() else None,
            "unknown_rate": float(np.mean([lab == UNKNOWN for lab, yy in zip(d.labels, y) if yy != REAL]))
            if (~real).any()
            else None,
            "named_right": float(np.mean([lab == yy for lab, yy in zip(d.labels, y) if yy != REAL]))
            if (~real).any()
            else None,
        }
    )
    t.calibration = record
    return t
