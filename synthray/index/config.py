"""The vector store's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class StoreConfig:
    """Where reference embeddings live: a Qdrant server, or embedded Qdrant in a folder."""

    url: str | None = None  # Qdrant server (http://qdrant:6333); None = embedded local mode at ``path``
    api_key_env: str = "SYNTHRAY_QDRANT_API_KEY"  # env var holding the server's API key (never the key itself)
    path: str = "runs/index/qdrant"  # embedded mode: storage folder (ONE process may open it at a time)
    collection_prefix: str = "synthray"  # collection = <prefix>-<model version>
    collection: str | None = None  # explicit collection name; its model version is still checked
    timeout_s: int = 30  # server requests
    upsert_batch: int = 256  # points per upsert request


@dataclasses.dataclass
class IndexConfig:
    """Building the reference index from shards (``jobs/build_index.py``)."""

    checkpoint: str = "runs/demo/train/supcon-cpu"  # checkpoint folder, or a run folder (its newest good one)
    shards: str = "runs/demo/shards"  # ingest output
    split: str = "train"  # rows indexed as references
    # References per class: the thesis found ~50 per generator within 3.6 points of all 162k.
    # An int caps each class (the same rows every run: smallest content hashes); "all" keeps every row.
    per_class: int | str = 50
    # References of the real class, the most varied one: an int, "all", or None = 4 x per_class.
    real_per_class: int | str | None = None
    classes: tuple[str, ...] = ()  # classes indexed; () = the checkpoint's training classes
    batch_size: int = 64  # images per embedding batch
    num_actors: int | None = None  # embedding actors; None = one per GPU, or CPUs - 1 (>= 1) on CPU
    device: str = "auto"  # auto | cpu | cuda
    calibration_split: str = "val"  # split the open-set thresholds are calibrated on
    calibration_per_class: int = 50  # generator queries per class for calibration
    # Real calibration photographs: they set the is-AI threshold's false-positive rate and are kept
    # in the store (not as references) so an enrollment can check it does not flag them.
    calibration_real: int = 200
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
