"""The attribution rule's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations


from synthray.typed_config import config_dataclass


@config_dataclass
class AttributionConfig:
    """kNN vote over the reference index, and how its open-set thresholds are calibrated."""

    k: int = 11
    """neighbours per class scored (the thesis's k)"""
    vote: str = "weighted"
    """The closed-set kNN vote of the thesis's evaluation (the service scores every class alone): "majority" (one vote
    each, as the thesis) | "weighted" (by cosine similarity)
    """
    open_set: bool = True
    """answer "unknown" below the calibrated thresholds; False always names a class"""
    unknown_rate: float = 0.05
    """Calibration on seen-class validation images: the share of them allowed to come out "unknown" (split evenly
    between the too-far and the too-split criterion).
    """
    target_fpr: float = 0.05
    """The is-AI decision threshold is set so that this share of real validation images is flagged."""
    max_fpr_increase: float = 0.005
    """Enrollment: how much more often the real calibration photographs may be flagged once the new generator is in (its
    own is-AI threshold is raised until they are not)."""
    max_looks_real: float = 0.5
    """Enrollment: the share of the samples answered "real" above which an enrollment is refused."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.vote not in ("majority", "weighted"):
            raise ValueError(f"vote must be 'majority' or 'weighted', got {self.vote!r}")
        if not (0 <= self.unknown_rate < 1 and 0 <= self.target_fpr < 1):
            raise ValueError("unknown_rate and target_fpr must lie in [0, 1)")
        if not (0 <= self.max_fpr_increase < 1 and 0 < self.max_looks_real <= 1):
            raise ValueError("max_fpr_increase must lie in [0, 1) and max_looks_real in (0, 1]")
