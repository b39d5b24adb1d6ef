"""Detection and attribution metrics from stored predictions (sklearn where it has them).

Detection (thesis 3.5.2, Tables 4.1/4.2): per generator, real vs that generator's images,
AUC of the is-AI score (AI positive; the thesis takes real as positive with the opposite
score, the same area) and accuracy at the calibrated is-AI threshold; and overall real vs
all AI.

Attribution (thesis 3.5.3, Table 4.3): per-class precision/recall/F1, macro-averaged over
the classes the encoder trained on ("seen") and over those it never saw ("zero-shot"),
plus a confusion matrix of true class x predicted label ("unknown" included).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from synthray.attribution.openset import UNKNOWN
from synthray.data.schema import REAL


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


def binary_detection(is_ai: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC and accuracy of one real-vs-AI set.

    Args:
        is_ai: (N,) bool truth.
        scores: (N,) is-AI scores.
        threshold: score >= threshold is flagged AI.
    Returns:
        {"auc" (None when only one side is present), "accuracy", "tpr", "fpr", "n_real", "n_ai"}.
    """
    is_ai = np.asarray(is_ai, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if is_ai.shape != scores.shape or is_ai.ndim != 1:
        raise ValueError(f"is_ai and scores must be (N,) alike, got {is_ai.shape} and {scores.shape}")
    flagged = scores >= threshold
    both = is_ai.any() and (~is_ai).any()
    return {
        "auc": _round(roc_auc_score(is_ai, scores)) if both else None,
        # The operating points the field reports: the share of AI images caught while at most
        # 1% / 5% of the real ones are flagged (thresholds set on these very images).
        "tpr_at_1pct_fpr": _round(tpr_at_fpr(scores[~is_ai], scores[is_ai], 0.01)) if both else None,
        "tpr_at_5pct_fpr": _round(tpr_at_fpr(scores[~is_ai], scores[is_ai], 0.05)) if both else None,
        "accuracy": _round(accuracy_score(is_ai, flagged)) if len(is_ai) else None,
        "tpr": _round(flagged[is_ai].mean()) if is_ai.any() else None,
        "fpr": _round(flagged[~is_ai].mean()) if (~is_ai).any() else None,
        "n_real": int((~is_ai).sum()),
        "n_ai": int(is_ai.sum()),
    }


def tpr_at_fpr(real_scores: np.ndarray, ai_scores: np.ndarray, fpr: float) -> float:
    """Share of AI scores at or above the lowest threshold that flags at most ``fpr`` of the real ones."""
    real = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(fpr * len(real) + 1e-9))  # real images that may be flagged
    # Flag everything strictly above the (allowed+1)-th highest real score.
    bar = real[allowed] if allowed < len(real) else -np.inf
    return float(np.mean(np.asarray(ai_scores, dtype=np.float64) > bar))


def oscr(known_correct: np.ndarray, known_scores: np.ndarray, unknown_scores: np.ndarray) -> float | None:
    """Open-Set Classification Rate (Dhamija et al. 2018; reported by POSE, CVPR 2023): the area
    under correct-classification rate of known-class images vs false-positive rate of novel ones,
    as the acceptance threshold on the score sweeps.

    Args:
        known_correct: (N,) whether each known-class image's closed-set answer is right.
        known_scores: (N,) their acceptance scores (higher = more confidently known).
        unknown_scores: (M,) the novel images' scores.
    Returns:
        the area in [0, 1]; None when either side is empty.
    """
    kc = np.asarray(known_correct, dtype=bool)
    ks = np.asarray(known_scores, dtype=np.float64)
    us = np.asarray(unknown_scores, dtype=np.float64)
    if not len(ks) or not len(us):
        return None
    thresholds = np.unique(np.concatenate([ks, us, [np.inf]]))[::-1]
    ccr = np.array([np.mean(kc & (ks >= t)) for t in thresholds])
    fpr = np.array([np.mean(us >= t) for t in thresholds])
    integrate = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # numpy 2 renamed it; 2.4 dropped trapz
    return float(integrate(ccr, fpr))


def detection_metrics(
    y_true: Sequence[str], scores: Sequence[float], threshold: float, real: str = REAL
) -> dict[str, Any]:
    """Real vs each generator, and real vs all AI images.

    Args:
        y_true: (N,) true classes.
        scores: (N,) is-AI scores.
        threshold: the calibrated is-AI threshold.
        real: the real class's name.
    Returns:
        {"threshold", "overall": {...}, "per_generator": {generator: {...}}} (see
        :func:`binary_detection`); an empty dict when there are no real images.
    """
    y = np.asarray([str(t) for t in y_true], dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    is_real = y == real
    if not is_real.any():
        return {}
    per = {}
    for generator in sorted(set(y[~is_real])):
        keep = is_real | (y == generator)
        per[generator] = binary_detection(~is_real[keep], s[keep], threshold)
    return {"threshold": _round(threshold), "overall": binary_detection(~is_real, s, threshold), "per_generator": per}


def per_class_scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support of each label (sklearn, zero_division=0)."""
    if not labels:
        return {}
    p, r, f, n = precision_recall_fscore_support(list(y_true), list(y_pred), labels=list(labels), zero_division=0)
    return {
        label: {"precision": _round(p[i]), "recall": _round(r[i]), "f1": _round(f[i]), "support": int(n[i])}
        for i, label in enumerate(labels)
    }


def macro(per_class: Mapping[str, Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any] | None:
    """Unweighted means of precision/recall/F1 over ``labels`` (None when empty), as sklearn's
    ``average="macro"`` over the same labels."""
    labels = [c for c in labels if c in per_class]
    if not labels:
        return None
    return {m: _round(np.mean([per_class[c][m] for c in labels])) for m in ("precision", "recall", "f1")} | {
        "classes": list(labels)
    }


def attribution_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Accuracy, per-label P/R/F1 and macro averages over groups of labels.

    Args:
        y_true: (N,) target labels.
        y_pred: (N,) predicted labels.
        labels: the labels scored per class.
        groups: name -> labels macro-averaged together (e.g. "seen", "zero_shot").
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} targets for {len(y_pred)} predictions")
    per = per_class_scores(y_true, y_pred, labels)
    return {
        "accuracy": _round(accuracy_score(list(y_true), list(y_pred))) if len(y_true) else None,
        "n": len(y_true),
        "per_class": per,
        "macro": {name: macro(per, group) for name, group in groups.items()},
    }


def confusion(
    y_true: Sequence[str], y_pred: Sequence[str], rows: Sequence[str], extra_columns: Sequence[str] = (UNKNOWN,)
) -> dict[str, Any]:
    """Confusion matrix: true ``rows`` x predicted (``rows`` + ``extra_columns``).

    Predicted labels outside the columns are counted under "other" (never silently dropped).
    """
    columns = list(rows) + [c for c in extra_columns if c not in rows]
    pred = [p if p in columns else "other" for p in y_pred]
    if "other" in pred:
        columns.append("other")
    matrix = confusion_matrix(list(y_true), pred, labels=columns)
    keep = [columns.index(r) for r in rows]
    return {"rows": list(rows), "columns": columns, "matrix": matrix[keep].tolist()}


def open_set_targets(y_true: Sequence[str], indexed: Sequence[str]) -> list[str]:
    """Open-set truth: an image of a class the index does not hold should come out "unknown"."""
    idx = set(indexed)
    return [t if t in idx else UNKNOWN for t in y_true]


def open_set_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    indexed: Sequence[str],
    seen: Sequence[str],
    zero_shot: Sequence[str],
    novelty_scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Attribution against an index of ``indexed`` classes, "unknown" allowed.

    An image counts as correct when it gets its class (indexed classes) or "unknown"
    (novel classes: not in the index). Reported: accuracy; per-label P/R/F1 over the
    indexed labels and "unknown"; macro over seen classes and over zero-shot ones (indexed
    zero-shot classes by their label, novel ones by the "unknown" label); per class, the
    share answered "unknown"; and the novelty AUROC of ``novelty_scores``
    (higher = more novel) of novel-class vs indexed-class images.

    Args:
        y_true: (N,) true classes.
        y_pred: (N,) predicted labels (class or "unknown").
        indexed: classes with references in the index.
        seen / zero_shot: test classes the encoder did / did not train on.
        novelty_scores: (N,) e.g. 1 - mean neighbour similarity; None skips the AUROC.
    """
    target = open_set_targets(y_true, indexed)
    novel = sorted(set(y_true) - set(indexed))
    # "unknown" is a label to score only where some images should get it.
    labels = [*indexed, *([UNKNOWN] if novel else [])]
    out = attribution_metrics(
        target,
        y_pred,
        labels,
        {
            "seen": [c for c in indexed if c in seen],
            # Zero-shot classes the index holds (ES1's real) on their own label; the rest
            # through the one answer that is right for them, "unknown".
            "zero_shot": [c for c in indexed if c in zero_shot] + ([UNKNOWN] if novel else []),
            "all": labels,
        },
    )
    y = np.asarray(list(y_true), dtype=object)
    pred = np.asarray(list(y_pred), dtype=object)
    out["unknown_rate"] = {c: _round(np.mean(pred[y == c] == UNKNOWN)) for c in sorted(set(y_true))}
    out["novel_classes"] = novel
    out["novel_unknown_rate_macro"] = _round(np.mean([out["unknown_rate"][c] for c in novel])) if novel else None
    if novelty_scores is not None and novel and (~np.isin(y, novel)).any():
        is_novel = np.isin(y, novel)
        out["novelty_auroc"] = _round(roc_auc_score(is_novel, np.asarray(novelty_scores, dtype=np.float64)))
    else:
        out["novelty_auroc"] = None
    out["confusion"] = confusion(y_true, y_pred, sorted(set(y_true), key=lambda c: (c != REAL, c)))
    return out


def closed_set_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str], seen: Sequence[str], zero_shot: Sequence[str]
) -> dict[str, Any]:
    """Attribution when every test class has references and a class is always named
    (the thesis's Table 4.3: macro P/R/F1 split into seen and zero-shot classes)."""
    out = attribution_metrics(
        y_true,
        y_pred,
        classes,
        {
            "seen": [c for c in classes if c in seen],
            "zero_shot": [c for c in classes if c in zero_shot],
            "all": list(classes),
        },
    )
    out["macro_f1"] = out["macro"]["all"]["f1"] if out["macro"]["all"] else None
    out["confusion"] = confusion(y_true, y_pred, list(classes), extra_columns=())
    return out
