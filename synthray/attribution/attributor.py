"""Images in, attributions out: embedder + reference store + the calibrated rule.

Shared by the Serve app, evaluation and the CLI, so all three answer identically.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from synthray.attribution.config import AttributionConfig
from synthray.attribution.rule import Attribution, Thresholds, attribute

if TYPE_CHECKING:  # torch stays out of processes that only need the rule (the index owner)
    from synthray.attribution.embedder import Embedder

log = logging.getLogger(__name__)

#: Keys of the store's collection metadata written by the index build.
THRESHOLDS_KEY, ATTRIBUTION_KEY = "thresholds", "attribution"


def stored_rule(
    metadata: dict[str, Any], override: AttributionConfig | None = None
) -> tuple[AttributionConfig, Thresholds | None]:
    """The attribution config and thresholds an index was calibrated with (``override`` wins
    for the config; thresholds always come from the index, or None if never calibrated)."""
    from synthray.config import from_dict

    cfg = override or from_dict(AttributionConfig, metadata.get(ATTRIBUTION_KEY) or {})
    raw = metadata.get(THRESHOLDS_KEY)
    return cfg, (Thresholds.from_dict(raw) if raw else None)


class Attributor:
    """Attributes images against a reference store.

    Args:
        embedder: the query encoder (its model version must match the store's).
        store: a :class:`~synthray.index.VectorStore` opened for that model version.
        cfg: the rule; None = the one stored with the index.
    """

    def __init__(self, embedder: Embedder, store: Any, cfg: AttributionConfig | None = None) -> None:
        if store.model_version != embedder.model_version:
            raise ValueError(f"store holds model version {store.model_version}, encoder is {embedder.model_version}")
        self.embedder = embedder
        self.store = store
        self.cfg, self.thresholds = stored_rule(store.metadata(), cfg)
        if self.thresholds is None:
            log.warning("index has no calibrated thresholds: is-AI threshold 0, no 'unknown' answers")

    def reload_rule(self) -> None:
        """Re-reads the thresholds (after a recalibration by another process)."""
        self.cfg, self.thresholds = stored_rule(self.store.metadata(), self.cfg)

    def attribute_vectors(self, vectors: np.ndarray) -> list[Attribution]:
        hits, neighbours = self.store.query(vectors, self.cfg.k)
        return attribute(hits, neighbours, self.thresholds, self.cfg.k, self.cfg.open_set)

    def attribute_bytes(self, images: Sequence[bytes]) -> list[Attribution]:
        return self.attribute_vectors(self.embedder.embed_bytes(images))
