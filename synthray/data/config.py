"""The data layer's typed configs: ingest, preprocessing, the Ray Data pipeline, the benchmark.

Re-exported by ``synthray.config``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from synthray.typed_config import config_dataclass

#: Splits every record carries. ``val`` is derived by hash where a layout has none.
SPLITS = ("train", "val", "test")


@config_dataclass
class SplitConfig:
    """How a split is derived when the layout does not say (hash of the relative path)."""

    val_fraction: float = 0.1
    """share of a layout's train part that becomes val"""
    test_fraction: float = 0.1
    """share that becomes test, for layouts with no test part at all"""
    salt: str = "synthray"
    """mixed into the hash; change it to draw a different split"""

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must stay below 1")


@config_dataclass
class ValidationConfig:
    """What ingest accepts as an image; everything else is listed as bad with a reason."""

    max_pixels: int = 64_000_000
    """width*height cap, checked from the header before decoding (bombs)"""
    max_bytes: int = 256 * 1024 * 1024
    """encoded file size cap"""
    min_side: int = 8
    """smaller images carry no usable fingerprint"""
    formats: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF")
    """PIL format names; MPO is how PIL names the JPEGs many phones and cameras write."""


@config_dataclass
class IngestConfig:
    """Layout folder -> Parquet shards."""

    shard_bytes: int = 256 * 1024 * 1024
    """target encoded bytes per shard (streaming-sized)"""
    max_rows_per_shard: int = 50_000
    """second cap so tiny images do not make huge row counts"""
    num_workers: int | None = None
    """parallel shard writers; None = one per available CPU"""
    use_ray: bool = True
    """False runs every shard in this process (no cluster needed)"""
    shuffle_seed: int = 0
    """records are shuffled before sharding so every shard mixes classes"""
    compression: str = "none"
    """Parquet codec; image bytes are already compressed"""
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)


@config_dataclass
class AugmentConfig:
    """One augmentation step; ``name`` picks it from the augmentation registry."""

    name: str
    """hflip | random_resized_crop | jpeg | gaussian_blur"""
    p: float = 1.0
    """probability the step applies to an image"""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """step-specific keywords"""


@config_dataclass
class PreprocessConfig:
    """Decode -> resize -> scale (-> normalise) (-> augment)."""

    resolution: int = 256
    """square output side; the thesis trains at 256x256"""
    resize_mode: str = "resize"
    """"resize" (whole image, as the thesis), "center_crop" or "random_crop" (a resolution-sized crop at native scale,
    no resampling that would wash generator traces out; smaller images are resized)
    """
    views: int = 1
    """Embeddings (index, evaluation, Serve) average the crops of this many positions (center, then the corners, then
    the edge middles; at most 9) of an image larger than the resolution; crop modes only.
    """
    normalize: str | None = None
    """None keeps [0, 1] (the thesis); "imagenet" applies mean/std"""
    augment: list[AugmentConfig] = dataclasses.field(default_factory=list)
    """applied in order"""
    device: str = "auto"
    """"auto" uses CUDA when present, else CPU; "cpu" | "cuda" force one"""
    channels_last: bool = False
    """NHWC memory format for the GPU's tensor cores"""
    seed: int | None = None
    """fixes augmentation randomness (tests); None draws fresh randomness"""


@config_dataclass
class PipelineConfig:
    """Ray Data streaming of shards into batches."""

    batch_size: int = 64
    """rows per preprocessing batch handed to map_batches"""
    num_cpus_per_task: float = 1.0
    """CPUs reserved by each preprocessing actor"""
    concurrency: int | None = None
    """preprocessing actors; None = one per CPU Ray Data may use"""
    cpu_budget: float | None = None
    """CPUs Ray Data may use at once (leave room for Train workers)"""
    gpu_budget: float | None = None
    """GPUs Ray Data's preprocessing actors may hold (decode/resize on the GPU): None = one per GPU of the cluster when
    the device allows, 0 = preprocess on CPUs, a fraction shares one GPU. Ray Train sets 0 when its workers take the
    GPUs (they would wait for each other).
    """
    shuffle_buffer: int = 256
    """rows in the local shuffle buffer (0 disables)"""
    balance: str = "downsample"
    """"downsample": each epoch keeps as many rows of every class as the smallest class has (a fresh subset per epoch
    seed); "none": stream every row
    """
    classes_per_batch: int | None = None
    """balanced batches: distinct classes per batch (None = all)"""
    samples_per_class: int = 4
    """balanced batches: rows of each class per batch (SupCon positives)"""
    pairs: bool = False
    """Source-group batches (DRCT pairs): each batch holds samples_per_class real images and, for each, its fakes of the
    same generators, so content cannot separate them (needs the shards' group column, which synthbench's sources.csv
    fills; balance is then by construction).
    """


@config_dataclass
class SynthbenchConfig:
    """The built-in benchmark (see DESIGN.md)."""

    per_class: int = 200
    """images per generator family (and real images paired with them)"""
    real_per_class: int | None = None
    """images of the real class, the most varied one (>= per_class); None = per_class"""
    resolution: int = 64
    """side of the square images written"""
    seed: int = 0
    """everything is derived from this seed"""
    families: tuple[str, ...] | None = None
    """None = every registered family, plus the procedural ones"""
    procedural: int = 0
    """procedural families proc_0000 ... added when families is None (many generators)"""
    train_steps: int = 150
    """reconstruction steps each generator network is fitted for"""
    fit_window: int = 32
    """side of the crop windows the networks are fitted on (cost grows with its square)"""
    held_out: tuple[str, ...] = ()
    """families held out for zero-shot; () = synthbench DEFAULT_HELD_OUT"""
    val_fraction: float = 0.2
    """share of the photographs (and of each class's images) in val"""
    test_fraction: float = 0.2
    """... in test: figures are reported on photographs training never saw"""
    pairs: bool = True
    """fake i is made from real image i's crop, same jitter (pairs for training)"""
