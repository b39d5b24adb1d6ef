"""The discovery inbox's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations

import os

from synthray.typed_config import config_dataclass


@config_dataclass
class DiscoveryConfig:
    """What the service keeps of the images it could not name, and how it groups them.

    Answers of ``unknown`` (and, with ``low_confidence``, uncertain ones) go to an inbox
    collection beside the index; HDBSCAN groups the inbox into candidate new generators
    ("discoveries") that an operator enrolls by one call.
    """

    enabled: bool = True
    """False: no inbox, no discoveries (answers are not kept)"""
    low_confidence: float | None = None
    """Also keep named answers whose confidence (winner's score minus runner-up's) is below this; None = only "unknown"
    answers.
    """
    capacity: int = 10_000
    """inbox entries; the oldest are dropped beyond it"""
    keep_images: bool = False
    """Keep the image bytes too (off: content hashes and embeddings only). Kept images let an enrolled discovery be
    archived, so it survives a new model version, and give thumbnails.
    """
    retention_s: float = 7 * 24 * 3600.0
    """kept images older than this are deleted"""
    images_dir: str | None = None
    """kept images; None = <enrolled archive>/../inbox-images"""
    min_cluster_size: int = 8
    """the fewest images HDBSCAN calls a group"""
    min_samples: int | None = None
    """HDBSCAN's density smoothing; None = min_cluster_size"""
    reduce_dims: int = 32
    """Cluster on this many principal components (0 = the raw embedding): HDBSCAN's trees work in low dimension: 10k
    inbox entries took 31 s on 128-d on 2 cores, 5 s on 32 components.
    """
    recompute_s: float = 60.0
    """how often the owner re-clusters the inbox (also on demand); 0 = on demand only"""
    match_overlap: float = 0.5
    """A new grouping keeps an earlier discovery's id when it holds at least this share of that discovery's remembered
    members (ids stay while a cluster persists).
    """
    examples: int = 5
    """example hashes (and thumbnails) listed per discovery"""
    max_pending: int = 256
    """answers waiting to be recorded; beyond it new ones are dropped (and counted)"""
    recent: int = 10_000
    """recent answers remembered in memory, so feedback can name an image by its hash"""
    window_s: float = 300.0
    """the sliding window of the unknown-rate gauge"""

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.min_cluster_size < 2 or self.examples < 1:
            raise ValueError("capacity >= 1, min_cluster_size >= 2 and examples >= 1 are required")
        if self.min_samples is not None and self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1 or None, got {self.min_samples}")
        if not 0 < self.match_overlap <= 1:
            raise ValueError(f"match_overlap must lie in (0, 1], got {self.match_overlap}")
        if self.recompute_s < 0 or self.retention_s <= 0 or self.window_s <= 0:
            raise ValueError("recompute_s >= 0, retention_s > 0 and window_s > 0 are required")
        if self.max_pending < 1 or self.recent < 0 or self.reduce_dims < 0:
            raise ValueError("max_pending >= 1, recent >= 0 and reduce_dims >= 0 are required")

    def images_root(self, enrolled_root: str) -> str:
        """Where kept inbox images go (a shared volume in a cluster, like the enrollment archive)."""
        return self.images_dir or os.path.join(os.path.dirname(os.path.abspath(enrolled_root)), "inbox-images")
