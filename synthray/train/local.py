"""Training in one plain process, without Ray (single GPU box, tests, the benchmark baseline).

Checkpoints go to ``<run_dir>/<run_name>/checkpoints/epoch_NNNN`` and metrics to
``metrics.jsonl`` beside them; running again with the same run folder resumes from the
newest good checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from synthray.config import TrainConfig, to_dict
from synthray.data.loader import iter_balanced_local
from synthray.data.preprocess import eval_preprocess
from synthray.train.checkpoint import latest_good
from synthray.train.curves import draw_curves
from synthray.train.loop import Runtime, train_loop
from synthray.train.plan import make_plan, run_path
from synthray.train.progress import PROGRESS_FILE

log = logging.getLogger(__name__)


def checkpoint_folders(run: Path) -> list[Path]:
    """Checkpoint folders of a local run, oldest first."""
    return sorted((run / "checkpoints").glob("epoch_*"))


def fit_local(cfg: TrainConfig, device: str | torch.device | None = None) -> dict[str, Any]:
    """Trains in this process.

    Args:
        cfg: the training config (``num_workers`` must be 1).
        device: torch device; None = CUDA when available, else CPU.
    Returns:
        {"metrics": last epoch's metrics, "checkpoint": folder, "classes": [...], "run": folder,
        "curves": the training-curves PNG}.
    """
    if cfg.num_workers != 1:
        raise ValueError("fit_local runs one process; use the Ray trainer for num_workers > 1")
    plan = make_plan(cfg)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = run_path(cfg)
    ckpt_dir = run / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(
        json.dumps({"config": to_dict(cfg), "classes": plan.classes, "held_out": plan.held_out}, indent=2)
    )
    val_pre = eval_preprocess(cfg.preprocess)  # validation sees clean images
    val_pipe = dataclasses.replace(cfg.pipeline, balance="none")  # every val row; kNN caps per class

    def train_batches(epoch: int):
        return iter_balanced_local(
            cfg.shards,
            plan.classes,
            cfg.batch_size,
            cfg.preprocess,
            cfg.pipeline,
            split="train",
            seed=cfg.seed * 1000 + epoch,
            device=dev,
        )

    def val_batches(epoch: int):
        return iter_balanced_local(
            cfg.shards,
            plan.classes,
            cfg.batch_size,
            val_pre,
            val_pipe,
            split="val",
            seed=cfg.seed,
            drop_last=False,
            device=dev,
        )

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics) + "\n")
        for old in checkpoint_folders(run)[: -cfg.checkpoints_to_keep]:
            shutil.rmtree(old, ignore_errors=True)

    def restore() -> dict[str, Any] | None:
        found = latest_good(checkpoint_folders(run))
        return found[1] if found else None

    rt = Runtime(
        rank=0,
        world_size=1,
        device=dev,
        train_batches=train_batches,
        val_batches=val_batches,
        report=report,
        restore=restore,
        scratch_dir=ckpt_dir,
        progress_file=run / PROGRESS_FILE,
    )
    metrics = train_loop(cfg, plan.classes, plan.steps_per_epoch, rt)
    last = checkpoint_folders(run)
    return {
        "metrics": metrics,
        "checkpoint": str(last[-1]) if last else None,
        "classes": plan.classes,
        "run": str(run),
        "curves": draw_curves(run),
    }
