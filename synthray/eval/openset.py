"""What an operator asks of the service on images it has never seen, measured as the field does.

- detection on the test photographs and the held-out generators: real specificity of ``label``
  and of ``is_ai`` at the calibrated threshold (identical by construction: the rule answers
  ``real`` exactly when it does not flag), the share of each held-out generator flagged as AI;
- open set: AUROC of known vs novel images and OSCR (POSE, CVPR 2023), on the best class score;
- enrollment: each held-out generator is enrolled with a few of its validation images, one
  after the other and exactly as the service enrolls (:func:`~synthray.attribution.rule.check_enrollment`
  on the real calibration photographs stored with the index, in memory: the store is not
  changed); then the share of its test images named right, and real specificity again.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from synthray.attribution.config import AttributionConfig
from synthray.attribution.rule import Thresholds, check_enrollment, class_scores, decide
from synthray.data.schema import REAL
from synthray.eval.metrics import oscr

log = logging.getLogger(__name__)

Hits = list[dict[str, list[float]]]


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _add_class(hits: Hits, vectors: np.ndarray, refs: np.ndarray, name: str, k: int) -> Hits:
    """``hits`` with class ``name``'s k nearest of ``refs`` added (what the store would return)."""
    sims = np.asarray(vectors, dtype=np.float64) @ np.asarray(refs, dtype=np.float64).T
    top = -np.sort(-sims, axis=1)[:, :k]
    return [{**h, name: row.tolist()} for h, row in zip(hits, top)]


def specificity_and_flags(
    labels: Sequence[str], is_ai: np.ndarray, truth: Sequence[str], families: Sequence[str]
) -> dict[str, Any]:
    """Real specificity (label and is_ai) and the flagged / named share of each family."""
    y = np.asarray(list(truth), dtype=object)
    lab = np.asarray(list(labels), dtype=object)
    real = y == REAL
    return {
        "real_images": int(real.sum()),
        "real_specificity_label": _r(np.mean(lab[real] == REAL)) if real.any() else None,
        "real_specificity_is_ai": _r(np.mean(~is_ai[real])) if real.any() else None,
        "label_is_ai_disagree": int(np.sum((lab == REAL) == is_ai)),
        "flagged_ai": {f: _r(np.mean(is_ai[y == f])) for f in families if (y == f).any()},
        "named": {f: _r(np.mean(lab[y == f] == f)) for f in families if (y == f).any()},
        "answered_unknown": {f: _r(np.mean(lab[y == f] == "unknown")) for f in families if (y == f).any()},
    }


def open_set_scores(hits: Hits, truth: Sequence[str], known: Sequence[str], t: Thresholds) -> dict[str, Any]:
    """AUROC of known vs novel images and OSCR, both on the best class score (known = indexed)."""
    cs = class_scores(hits)
    y = np.asarray(list(truth), dtype=object)
    is_known = np.isin(y, list(known))
    best = cs.scores.max(axis=1)
    if not is_known.any() or is_known.all():
        return {"known_vs_novel_auroc": None, "oscr": None}
    closed = np.asarray([cs.classes[j] for j in cs.scores.argmax(axis=1)], dtype=object)
    return {
        "known_vs_novel_auroc": _r(roc_auc_score(is_known, best)),
        "oscr": _r(oscr(closed[is_known] == y[is_known], best[is_known], best[~is_known])),
        "score": "the best class score (mean similarity of the k nearest references of the best class)",
    }


def enrollment_effect(
    test_hits: Hits,
    test_vectors: np.ndarray,
    truth: Sequence[str],
    enroll: Mapping[str, np.ndarray],
    real_calibration: np.ndarray,
    real_hits: Hits,
    thresholds: Thresholds,
    cfg: AttributionConfig,
    sample_hits: Mapping[str, Hits],
) -> dict[str, Any]:
    """Enrolls every family of ``enroll`` in turn (in memory, as the service would) and
    measures the test images before and after.

    Args:
        test_hits / test_vectors / truth: the test images' per-class hits against the index,
            their embeddings and classes.
        enroll: family -> (n, D) embeddings of the images enrolled (not test images).
        real_calibration / real_hits: the index's real calibration photographs and their hits.
        thresholds: the index's rule.
        cfg: k, unknown rate and the enrollment allowances.
        sample_hits: family -> its enrolled images' hits against the index (before any enrollment).
    Returns:
        ``{"before", "after"}`` (see :func:`specificity_and_flags`), ``checks`` per family
        (:class:`~synthray.attribution.rule.EnrollmentCheck`), and ``refused`` families.
    """
    k = cfg.k
    families = list(enroll)
    t = copy.deepcopy(thresholds)
    before = decide(class_scores(test_hits), t)
    out: dict[str, Any] = {
        "enrolled_per_family": {f: int(len(v)) for f, v in enroll.items()},
        "before": specificity_and_flags(before.labels, before.is_ai, truth, families),
    }
    checks, refused = {}, {}
    hits, r_hits = list(test_hits), list(real_hits)
    added: dict[str, np.ndarray] = {}
    for family, vectors in enroll.items():
        s_hits = list(sample_hits[family])
        for name, refs in added.items():  # the families enrolled before this one are in the index now
            s_hits = _add_class(s_hits, vectors, refs, name, k)
        try:
            check = check_enrollment(
                family,
                vectors,
                class_scores(s_hits),
                class_scores(r_hits) if len(real_calibration) else None,
                real_calibration.astype(np.float64) @ vectors.astype(np.float64).T if len(real_calibration) else None,
                t,
                k,
                cfg.unknown_rate,
                cfg.max_fpr_increase,
                cfg.max_looks_real,
            )
        except ValueError as exc:  # EnrollmentRefused
            refused[family] = str(exc)
            log.warning("evaluation enrollment of %s refused: %s", family, exc)
            continue
        checks[family] = check.to_dict()
        t.acceptance[family] = check.acceptance
        if check.threshold > t.ai_threshold:
            t.class_thresholds[family] = check.threshold
        added[family] = vectors
        hits = _add_class(hits, test_vectors, vectors, family, k)
        if len(real_calibration):
            r_hits = _add_class(r_hits, real_calibration, vectors, family, k)
    after = decide(class_scores(hits), t)
    out["after"] = specificity_and_flags(after.labels, after.is_ai, truth, families)
    out["checks"] = checks
    out["refused"] = refused
    spec_b, spec_a = out["before"]["real_specificity_label"], out["after"]["real_specificity_label"]
    out["real_specificity_change"] = _r(spec_a - spec_b) if spec_a is not None and spec_b is not None else None
    return out
