"""The comparison's numbers, from one method's predictions on the test split.

Definitions (the thesis's, 001 §3.5.2-3.5.3, and 003's in/out-of-sample split):

- detection: an image is truly AI when its class is not "real"; a method flags it AI when
  its label is not "real". Accuracy of that decision and ROC AUC of the is-AI score, over
  the whole test split, over real + seen generators ("in-sample") and over real + held-out
  generators ("zero-shot", 003's out-of-sample).
- attribution (methods whose labels name classes): accuracy, and per-class F1 macro-averaged
  over the seen classes and over the held-out (zero-shot) classes.

The metric functions are the evaluation package's (``synthray.eval.metrics``), so a
comparison row and an evaluation report count alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from synthray.data.schema import REAL
from synthray.eval.metrics import attribution_metrics, binary_detection
from synthray.methods.base import Prediction


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def detection(truth_ai: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Accuracy of the ``flagged`` decisions and AUC of ``scores`` against ``truth_ai`` (None where undefined)."""
    if not len(truth_ai):
        return {"accuracy": None, "auc": None, "n": 0}
    # The AUC does not depend on the threshold; the decisions are 0/1, so 0.5 reads them back.
    auc = binary_detection(truth_ai, scores, threshold=0.5)["auc"]
    accuracy = binary_detection(truth_ai, flagged.astype(np.float64), threshold=0.5)["accuracy"]
    return {"accuracy": _r(accuracy), "auc": _r(auc), "n": int(len(truth_ai))}


def score_predictions(
    y_true: Sequence[str] | np.ndarray, pred: Prediction, seen: Sequence[str], held_out: Sequence[str], attributes: bool
) -> dict[str, Any]:
    """Every number of a comparison row.

    Args:
        y_true: (N,) true class names of the test images.
        pred: the method's prediction for them.
        seen: classes trained on.
        held_out: classes never trained on (zero-shot).
        attributes: whether ``pred.labels`` name classes (else only "real"/"ai").
    Returns:
        {"acc", "auc", "acc_seen", "auc_seen", "acc_zero_shot", "auc_zero_shot", "attr_acc",
        "f1_seen", "f1_zero_shot", "n_test"}; None where a number does not apply.
    """
    y = np.asarray([str(t) for t in y_true], dtype=object)
    if len(y) != len(pred.labels):
        raise ValueError(f"{len(y)} test labels for {len(pred.labels)} predictions")
    truth_ai = y != REAL
    flagged = pred.labels != REAL
    out: dict[str, Any] = {"n_test": int(len(y))}
    overall = detection(truth_ai, pred.is_ai, flagged)
    out.update(acc=overall["accuracy"], auc=overall["auc"])
    for name, group in (("seen", [c for c in seen if c != REAL]), ("zero_shot", [c for c in held_out if c != REAL])):
        keep = (y == REAL) | np.isin(y, group)
        if group and np.isin(y, group).any():
            d = detection(truth_ai[keep], pred.is_ai[keep], flagged[keep])
            out.update({f"acc_{name}": d["accuracy"], f"auc_{name}": d["auc"]})
        else:
            out.update({f"acc_{name}": None, f"auc_{name}": None})
    out.update(attr_acc=None, f1_seen=None, f1_zero_shot=None)
    if attributes:
        groups = {
            name: [c for c in group if (y == c).any()] for name, group in (("seen", seen), ("zero_shot", held_out))
        }
        m = attribution_metrics(list(y), [str(p) for p in pred.labels], groups["seen"] + groups["zero_shot"], groups)
        out["attr_acc"] = _r(m["accuracy"])
        for name in groups:
            macro = m["macro"][name]
            out[f"f1_{name}"] = _r(macro["f1"]) if macro else None
    return out
