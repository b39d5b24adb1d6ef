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
    from synthray.attribution.knn import KnnResult, knn_classify, knn_search
    from synthray.attribution.openset import (
        UNKNOWN,
        Attribution,
        Thresholds,
        Votes,
        attribute,
        calibrate,
        fpr_threshold,
        quantile_threshold,
        unknown_reasons,
        vote,
    )

_OPENSET = ("UNKNOWN", "Attribution", "Thresholds", "Votes", "attribute", "calibrate", "fpr_threshold",
            "quantile_threshold", "unknown_reasons", "vote")
_EXPORTS = {
    "Attributor": "synthray.attribution.attributor",
    "AttributionConfig": "synthray.attribution.config",
    "Embedder": "synthray.attribution.embedder",
    "resolve_checkpoint": "synthray.attribution.embedder",
    "KnnResult": "synthray.attribution.knn",
    "knn_classify": "synthray.attribution.knn",
    "knn_search": "synthray.attribution.knn",
    **{name: "synthray.attribution.openset" for name in _OPENSET},
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
