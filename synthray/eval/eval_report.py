"""What one evaluation found (:class:`EvalReport`): ``evaluate`` returns it, ``report.py``
renders it, and :meth:`EvalReport.to_dict` is ``report.json``'s content, key for key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from synthray.eval.protocols import Protocol


@dataclasses.dataclass
class ImagePrediction:
    """One test image and the answers it got (a row of ``report.json``'s ``predictions``)."""

    content_hash: str
    source_path: str
    true: str  # the image's class
    predicted: str  # the service's open-set answer (a class or "unknown")
    nearest: str | None  # the vote's winner, even when the answer is "unknown"
    closed_set: str | None  # the thesis's closed-set kNN answer; None when there is no closed set
    # Unrounded: the metrics must be recomputable exactly (rounding would create ties).
    is_ai_score: float
    is_ai: bool
    mean_similarity: float
    agreement: float  # the attribution's confidence
    unknown_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class EvalReport:
    """Every number of one evaluation and every prediction; the parts are in ``report.json``'s
    order. The metric parts keep the metric functions' own dicts (:mod:`synthray.eval.metrics`,
    :mod:`synthray.eval.openset`)."""

    protocol: Protocol
    checkpoint: dict[str, Any]  # the embedder's facts (Embedder.describe())
    test_split: str
    test_counts: dict[str, int]  # test images per class
    reference_counts: dict[str, int]  # reference rows per class held in memory
    notes: list[str]  # what the protocol had to decide, what was skipped
    detection: dict[str, Any]  # real vs each generator; {} without real test images
    open_set: dict[str, Any]  # the service's answers scored against the open-set truth
    service: dict[str, Any]  # unseen photographs, held-out generators flagged, the enrollment effect
    closed_set: dict[str, Any] | None  # the thesis's closed-set kNN; None: a test class has no references
    sweep: list[dict[str, Any]] | None  # reference sample-size sweep ([] when off); None with closed_set
    robustness: dict[str, Any]  # scores clean and per degradation; {} without degradations
    robustness_images: int
    thresholds: dict[str, Any] | None  # the index's stored thresholds; None: not calibrated
    attribution_rule: dict[str, Any]  # the rule's settings as the store holds them
    index: dict[str, Any]  # how the index was prepared (reused or built) and its counts
    explanations: list[dict[str, Any]] | None  # facts of the explained images; None: none explained
    predictions: list[ImagePrediction]
    figures: dict[str, str] | None = None  # figure name -> path relative to the run folder; None: figures off
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per step, and "total"

    def to_dict(self) -> dict[str, Any]:
        """``report.json``'s content: the parts in order; ``closed_set`` and ``sweep``,
        ``explanations`` and ``figures`` left out (not null) where they are None."""
        out: dict[str, Any] = {
            "protocol": self.protocol.to_dict(),
            "checkpoint": self.checkpoint,
            "test_split": self.test_split,
            "test_counts": self.test_counts,
            "reference_counts": self.reference_counts,
            "notes": self.notes,
            "detection": self.detection,
            "open_set": self.open_set,
            "service": self.service,
        }
        if self.closed_set is not None:
            out["closed_set"] = self.closed_set
        if self.sweep is not None:
            out["sweep"] = self.sweep
        out.update(
            robustness=self.robustness,
            robustness_images=self.robustness_images,
            thresholds=self.thresholds,
            attribution_rule=self.attribution_rule,
            index=self.index,
        )
        if self.explanations is not None:
            out["explanations"] = self.explanations
        out["predictions"] = [p.to_dict() for p in self.predictions]
        if self.figures is not None:
            out["figures"] = self.figures
        out["timings"] = self.timings
        return out


def summarize(report: EvalReport, out: str | Path) -> dict[str, Any]:
    """The headline numbers of a report (what the CLI prints)."""

    def macro(m: dict[str, Any] | None) -> dict[str, Any]:
        m = m or {}
        return {g: (m.get("macro", {}).get(g) or {}).get("f1") for g in ("seen", "zero_shot")} | {
            "accuracy": m.get("accuracy")
        }

    det = (report.detection or {}).get("overall") or {}
    return {
        "out": str(out),
        "protocol": report.protocol.name,
        "indexed": list(report.protocol.indexed),
        "zero_shot": list(report.protocol.zero_shot),
        "detection": {"auc": det.get("auc"), "accuracy": det.get("accuracy")},
        "closed_set_f1": macro(report.closed_set),
        "open_set_f1": macro(report.open_set),
        "novel_unknown_rate": (report.open_set or {}).get("novel_unknown_rate_macro"),
        "detection_tpr_at_5pct_fpr": det.get("tpr_at_5pct_fpr"),
        "detection_tpr_at_1pct_fpr": det.get("tpr_at_1pct_fpr"),
        "service": _service_summary(report.service or {}),
        "timings": report.timings,
    }


def _service_summary(service: dict[str, Any]) -> dict[str, Any]:
    at = service.get("at_threshold") or {}
    enr = service.get("enrollment") or {}
    return {
        "real_specificity": at.get("real_specificity_label"),
        "held_out_flagged_ai": at.get("flagged_ai"),
        "named_after_enrollment": (enr.get("after") or {}).get("named"),
        "real_specificity_after_enrollment": (enr.get("after") or {}).get("real_specificity_label"),
        "known_vs_novel_auroc": (service.get("open_set") or {}).get("known_vs_novel_auroc"),
        "oscr": (service.get("open_set") or {}).get("oscr"),
        "calibration_warning": service.get("calibration_warning"),
        "enrollment_refused": enr.get("refused"),
    }
