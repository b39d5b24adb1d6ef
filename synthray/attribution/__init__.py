"""Attribution from nearest neighbours in the embedding space (runs without Ray).

Public names are re-exported lazily (PEP 562) so that ``synthray.config``, which imports
``synthray.attribution.config``, does not pull in torch for commands that only read a config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthray.lazy import lazy_exports

if TYPE_CHECKING:
    from synthray.attribution.attributor import Attributor
    from synthray.attribution.config import AttributionConfig
    from synthray.attribution.embedder import Embedder, resolve_checkpoint
    from synthray.models.knn import KnnResult, knn_classify, knn_search
    from synthray.attribution.openset import UNKNOWN, Votes, fpr_threshold, quantile_threshold, vote
    from synthray.attribution.rule import (
        Attribution,
        ClassScores,
        Decision,
        EnrollmentCheck,
        EnrollmentRefused,
        Thresholds,
        attribute,
        calibrate,
        check_enrollment,
        class_scores,
        decide,
    )

_OPENSET = ("UNKNOWN", "Votes", "fpr_threshold", "quantile_threshold", "vote")
_RULE = (
    "Attribution",
    "ClassScores",
    "Decision",
    "EnrollmentCheck",
    "EnrollmentRefused",
    "Thresholds",
    "attribute",
    "calibrate",
    "check_enrollment",
    "class_scores",
    "decide",
)
_EXPORTS = {
    "Attributor": "synthray.attribution.attributor",
    "AttributionConfig": "synthray.attribution.config",
    "Embedder": "synthray.attribution.embedder",
    "resolve_checkpoint": "synthray.attribution.embedder",
    "KnnResult": "synthray.models.knn",
    "knn_classify": "synthray.models.knn",
    "knn_search": "synthray.models.knn",
    **{name: "synthray.attribution.openset" for name in _OPENSET},
    **{name: "synthray.attribution.rule" for name in _RULE},
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
