"""SupCon training's typed configs (re-exported by ``synthray.config``)."""

from __future__ import annotations

import dataclasses

from synthray.data.config import PipelineConfig, PreprocessConfig
from synthray.losses.config import LossConfig
from synthray.models.config import EncoderConfig
from synthray.typed_config import config_dataclass


@config_dataclass
class ExperimentConfig:
    """Which classes train (the thesis's experiment settings select them by name)."""

    setting: str = "ES2"
    """ES1: generators only | ES2: all | ES3: one generator + real | ES4: hold out | custom"""
    generator: str | None = None
    """ES3: the one generator trained with real"""
    held_out: tuple[str, ...] = ()
    """ES4: generators kept out of training (zero-shot at evaluation)"""
    classes: tuple[str, ...] = ()
    """custom: the exact class list"""


@config_dataclass
class TrainConfig:
    """SupCon training (per-worker loop + Ray Train scaling)."""

    shards: str = "runs/demo/shards"
    """ingest output folder"""
    run_dir: str = "runs/train"
    """where checkpoints, metrics and the resolved config go"""
    run_name: str = "supcon"
    """Ray Train run name under run_dir (same name = resume)"""
    epochs: int = 10
    """passes over the data (or steps_per_epoch steps each)"""
    batch_size: int = 64
    """effective batch per worker (SupCon sees all of it at once)"""
    micro_batch_size: int | None = None
    """split a batch for memory (exact gradient caching); None = whole"""
    lr: float = 1e-3
    """peak learning rate (AdamW)"""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay"""
    warmup_epochs: float = 1.0
    """linear warm-up, then cosine decay to min_lr"""
    min_lr: float = 1e-6
    """learning rate at the end of the cosine decay"""
    amp: str = "auto"
    """"auto": bf16 autocast on CUDA, off on CPU | "bf16" | "fp16" | "off" """
    channels_last: bool | None = None
    """None = on for CUDA"""
    grad_clip: float | None = 5.0
    """max grad norm; None disables"""
    steps_per_epoch: int | None = None
    """cap steps per epoch (quick runs); None = one pass"""
    repeat_data: bool = False
    """With steps_per_epoch: pass over the data again when it runs out before the epoch's steps (a fixed step budget
    whatever the data size, as comparisons between data sets need).
    """
    val_batches: int | None = 20
    """validation batches per epoch for the val SupCon loss"""
    knn_k: int = 11
    """k of the validation kNN accuracy (the thesis's k)"""
    knn_ref_per_class: int = 50
    """train references per class for validation kNN (thesis: ~50 is enough)"""
    knn_val_per_class: int = 50
    """validation queries per class"""
    num_workers: int = 1
    """Ray Train workers (DDP when > 1)"""
    use_gpu: bool = False
    """one GPU per Train worker (DDP over NCCL when num_workers > 1)"""
    cpus_per_worker: float = 1.0
    """CPUs reserved per Train worker"""
    torch_threads: int | None = None
    """torch intra-op threads per worker; None = the CPUs it reserved. More than reserved lets a worker use the cores a
    light data pipeline leaves idle (decoding 96 px PNGs takes a few %).
    """
    worker_resources: dict[str, float] = dataclasses.field(default_factory=dict)
    """More Ray resources per Train worker, e.g. a custom node resource ({"train_slot": 1}) so workers land only on
    nodes that offer it, one per slot (multi-node clusters).
    """
    data_cpus: float | None = None
    """CPUs Ray Data may use for preprocessing; None = what is left"""
    max_failures: int = 2
    """worker failures Ray Train recovers from (from the last checkpoint)"""
    checkpoints_to_keep: int = 3
    """newest checkpoints kept in the run folder (older ones are deleted)"""
    seed: int = 0
    """model init and data order"""
    experiment: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
