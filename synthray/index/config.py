"""The vector store's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from synthray.typed_config import config_dataclass


@config_dataclass
class StoreConfig:
    """Where reference embeddings live: embedded Qdrant Edge in a folder, or a Qdrant server."""

    url: str | None = None
    """Qdrant server (http://qdrant:6333); None = embedded at ``path``"""
    api_key_env: str = "SYNTHRAY_QDRANT_API_KEY"
    """env var holding the server's API key (never the key itself)"""
    path: str = "runs/index/qdrant"
    """embedded: storage folder (ONE process may open it at a time)"""
    engine: str = "edge"
    """Embedded engine: "edge" = Qdrant Edge (Qdrant's Rust engine in-process, the default); "client-local" = qdrant-
    client's local mode (numpy in Python; the tests' stand-in for a server).
    """
    collection_prefix: str = "synthray"
    """collection = <prefix>-<model version>"""
    collection: str | None = None
    """explicit collection name; its model version is still checked"""
    alias: str | None = None
    """the alias naming the active collection; None = <prefix>-active"""
    timeout_s: int = 30
    """server requests"""
    upsert_batch: int = 256
    """points per upsert request"""
    exact_max: int = 200_000
    """Exact search (one float32 product over a cached matrix) up to this many references, the engine's HNSW above. The
    per-class rule needs every class's nearest references: exact scoring gets them all in one product (~4 ms at 100k on
    2 cores, benchmarks/bench_index.py), HNSW needs one filtered search per class.
    """
    hnsw_m: int = 16
    """HNSW graph degree"""
    hnsw_ef_construct: int = 200
    """HNSW build beam (higher: better graph, slower build)"""
    hnsw_ef: int = 256
    """HNSW search beam (measured in benchmarks/bench_index.py for recall)"""
    enrolled_dir: str | None = None
    """Every enrolled image, content-addressed, so an index for a new model re-embeds them; None = <path>/../enrolled
    (beside the store). A shared volume in a cluster.
    """

    def enrolled_root(self) -> str:
        """The enrollment archive folder."""
        return self.enrolled_dir or os.path.join(os.path.dirname(os.path.abspath(self.path)), "enrolled")


@config_dataclass
class IndexConfig:
    """Building the reference index from shards (``jobs/build_index.py``)."""

    checkpoint: str = "runs/demo/train/supcon-cpu"
    """checkpoint folder, or a run folder (its newest good one)"""
    shards: str = "runs/demo/shards"
    """ingest output"""
    split: str = "train"
    """rows indexed as references"""
    per_class: int | str = 50
    """References per class: the thesis found ~50 per generator within 3.6 points of all 162k. An int caps each class
    (the same rows every run: smallest content hashes); "all" keeps every row.
    """
    real_per_class: int | str | None = None
    """References of the real class, the most varied one: an int, "all", or None = 4 x per_class."""
    classes: tuple[str, ...] = ()
    """classes indexed; () = the checkpoint's training classes"""
    batch_size: int = 64
    """images per embedding batch"""
    num_actors: int | None = None
    """embedding actors; None = one per GPU, or CPUs - 1 (>= 1) on CPU"""
    device: str = "auto"
    """auto | cpu | cuda"""
    calibration_split: str = "val"
    """split the open-set thresholds are calibrated on"""
    calibration_per_class: int = 50
    """generator queries per class for calibration"""
    calibration_real: int = 200
    """Real calibration photographs: they set the is-AI threshold's false-positive rate and are kept in the store (not
    as references) so an enrollment can check it does not flag them.
    """
    include_enrolled: bool = True
    """Re-embed every image users enrolled (the archive, store.enrolled_dir) into this collection, with the same checks
    as the service: enrollments survive a new model.
    """
    activate: bool = True
    """Point the active alias (store.alias) at this collection once it is complete: queries of the alias move from the
    old version to the new in one step (roll back: synthray index activate).
    """
    figures_dir: str | None = None
    """Where the calibration figure (scores and chosen thresholds) goes; None = beside the embedded store's folder
    (<store.path>/..).
    """
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)

    def figures_root(self) -> Path:
        return Path(self.figures_dir or os.path.dirname(os.path.abspath(self.store.path)))
