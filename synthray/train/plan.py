"""Checks and derived numbers a training run needs before any work starts.

Everything here reads only label columns, so a bad config fails in seconds with a clear
message instead of after a cluster has spun up.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from synthray.config import TrainConfig
from synthray.data.pipeline import class_counts, find_shards
from synthray.train.experiments import select_classes

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainPlan:
    classes: list[str]  # training classes, label order
    held_out: list[str]  # classes present in the data but not trained on
    steps_per_epoch: int  # optimizer steps per worker per epoch
    train_rows: dict[str, int]  # rows per class in the train split
    val_rows: dict[str, int]  # rows per class in the val split


def make_plan(cfg: TrainConfig) -> TrainPlan:
    """Validates the config against the data and derives the schedule.

    Raises:
        ValueError / FileNotFoundError: with a message saying what to change.
    """
    from synthray.models.encoder import check_backbone_name
    from synthray.models.registry import list_encoders

    if cfg.encoder.name not in list_encoders():
        raise ValueError(f"unknown encoder {cfg.encoder.name!r}; known: {list_encoders()}")
    check_backbone_name(cfg.encoder.backbone)
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {cfg.epochs}, {cfg.batch_size}")
    if cfg.micro_batch_size is not None and cfg.micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {cfg.micro_batch_size}")
    if cfg.num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {cfg.num_workers}")
    find_shards(cfg.shards)  # a clear error when the shard folder is missing or empty
    train_rows = class_counts(cfg.shards, "train")
    val_rows = class_counts(cfg.shards, "val")
    classes, held = select_classes(train_rows, cfg.experiment)
    # SupCon learns from positive pairs inside a batch (each class >= 2 rows) and needs another
    # class beside them. As the batchers choose: classes_per_batch, or as many classes as fit
    # samples_per_class rows each.
    fit = min(len(classes), cfg.pipeline.classes_per_batch or max(1, cfg.batch_size // cfg.pipeline.samples_per_class))
    per_class = cfg.batch_size // fit
    if per_class < 2 or fit < 2:
        need = 2 * max(2, cfg.pipeline.samples_per_class if not cfg.pipeline.classes_per_batch else 1)
        raise ValueError(
            f"batch_size {cfg.batch_size} holds {fit} class(es) of {per_class} row(s) per batch: no positive pairs "
            f"beside another class. Use batch_size >= {max(need, 2 * fit)}, or set pipeline.samples_per_class / "
            "classes_per_batch lower"
        )
    if cfg.pipeline.samples_per_class < 2:
        raise ValueError("pipeline.samples_per_class must be >= 2 (SupCon needs positives)")
    missing_val = [c for c in classes if val_rows.get(c, 0) == 0]
    if missing_val:
        log.warning("no validation rows for %s: validation kNN accuracy will not cover them", missing_val)
    counts = [train_rows[c] for c in classes]
    downsample = cfg.pipeline.balance == "downsample" and not cfg.pipeline.pairs
    rows = min(counts) * len(classes) if downsample else sum(counts)
    steps = rows // (cfg.batch_size * cfg.num_workers)
    # Per-epoch downsampling is a random draw: take 10% off so every worker reaches the count.
    steps = int(steps * 0.9) if downsample else steps
    if steps < 1:
        raise ValueError(
            f"{rows} training rows per epoch cannot fill one batch of {cfg.batch_size} on each of "
            f"{cfg.num_workers} worker(s); lower batch_size or add data"
        )
    if cfg.steps_per_epoch is not None:
        # repeat_data passes over the data again, so an epoch may be longer than one pass
        steps = cfg.steps_per_epoch if cfg.repeat_data else min(steps, cfg.steps_per_epoch)
    return TrainPlan(
        classes, held, steps, {c: train_rows[c] for c in classes}, {c: val_rows.get(c, 0) for c in classes}
    )


def run_path(cfg: TrainConfig) -> Path:
    return Path(cfg.run_dir).absolute() / cfg.run_name
