"""The per-worker SupCon training loop: the same code in one plain process or in every
Ray Train worker (``ray_trainer.py`` wraps it; see STYLE.md 9).

What differs between the two is behind :class:`Runtime`: where batches come from, how
metrics and checkpoints are reported, where a previous checkpoint is found, and the
process group. The loop itself: class-balanced batches -> (GradCache) SupCon step ->
AdamW with linear warm-up + cosine decay -> per epoch, a validation SupCon loss and a
leave-one-out kNN accuracy on a class-balanced validation subset -> checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from synthray.models.knn import knn_classify
from synthray.config import TrainConfig, to_dict
from synthray.losses import build_loss
from synthray.models import build_encoder
from synthray.train.checkpoint import save_checkpoint
from synthray.train.progress import StepProgress
from synthray.train.step import autocast_context, supcon_step

log = logging.getLogger(__name__)

Batches = Callable[[int], Iterator[dict[str, Any]]]


@dataclasses.dataclass
class Runtime:
    """What the loop needs from its surroundings (plain process or Ray Train worker)."""

    rank: int
    world_size: int
    device: torch.device
    train_batches: Batches  # epoch -> balanced training batches (float images on device)
    val_batches: Batches  # epoch -> validation batches
    report: Callable[[dict[str, Any], Path | None], None]  # metrics (+ checkpoint folder, rank 0)
    restore: Callable[[], dict[str, Any] | None]  # the checkpoint to resume from, loaded, or None
    scratch_dir: Path  # where this worker may write a checkpoint before reporting it
    prepare_model: Callable[[nn.Module], nn.Module] = lambda m: m  # DDP wrapping
    progress_file: Path | None = None  # rank 0 appends its progress records here (None: log only)


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA by default (no loss scaling needed), none on CPU."""
    mode = cfg.amp.lower()
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode in ("auto", "bf16"):
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    raise ValueError(f"unknown amp mode {cfg.amp!r}; use auto | bf16 | fp16 | off")


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _all_reduce(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _everyone_has_batch(has: bool, device: torch.device, world: int) -> bool:
    # Ray Data's split can leave one worker a batch short; a DDP step that one rank skips
    # would hang the others in all-reduce, so every rank stops when any runs out.
    if world == 1:
        return has
    t = torch.tensor([1 if has else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def validate(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: Iterator[dict[str, Any]],
    cfg: TrainConfig,
    num_classes: int,
    rt: Runtime,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    """Validation SupCon loss and leave-one-out kNN accuracy on a class-capped subset."""
    model.eval()
    loss_sum, loss_n = 0.0, 0.0
    embs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    per_class = np.zeros(num_classes, dtype=np.int64)
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if cfg.val_batches is not None and i >= cfg.val_batches:
                break
            x = batch["image"].to(rt.device, non_blocking=True)
            y = torch.as_tensor(batch["label"], device=rt.device)
            with autocast_context(rt.device, amp_dtype):
                z = model(x).float()
            loss_sum += float(loss_fn(z, y)) * len(y)
            loss_n += len(y)
            keep = []
            for j, lab in enumerate(batch["label"]):
                if per_class[lab] < cfg.knn_val_per_class:
                    per_class[lab] += 1
                    keep.append(j)
            if keep:
                embs.append(z[keep].cpu())
                labels.append(y[keep].cpu())
    correct, total = 0.0, 0.0  # summed over ranks as floats
    if embs:
        e, y = torch.cat(embs), torch.cat(labels)
        if len(y) > 1:
            pred = knn_classify(e, e, y, num_classes, k=cfg.knn_k, exclude_self=True).predictions
            correct, total = float((pred == y).sum()), float(len(y))
    loss_sum, loss_n, correct, total = _all_reduce([loss_sum, loss_n, correct, total], rt.device, rt.world_size)
    model.train()
    return {
        "val_loss": loss_sum / loss_n if loss_n else float("nan"),
        "val_knn_acc": correct / total if total else float("nan"),
        "val_samples": int(loss_n),
    }


def train_loop(cfg: TrainConfig, classes: list[str], steps_per_epoch: int, rt: Runtime) -> dict[str, Any]:
    """Trains (or resumes) to ``cfg.epochs`` and returns the last epoch's metrics.

    Args:
        cfg: the resolved training config.
        classes: training classes in label order.
        steps_per_epoch: optimizer steps per epoch on every worker (the LR schedule's unit).
        rt: the runtime (plain process or Ray Train worker).
    Returns:
        metrics of the final epoch (with ``model_version`` and ``checkpoint`` on rank 0).
    """
    torch.manual_seed(cfg.seed + rt.rank)
    device = rt.device
    amp_dtype = amp_dtype_for(cfg, device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model = build_encoder(cfg.encoder).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    min_ratio = cfg.min_lr / cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total_steps, min_ratio))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    start_epoch, step = 0, 0
    restored = rt.restore()
    if restored is not None:
        meta = restored["meta"]
        if meta.get("classes") != classes:
            raise ValueError(f"checkpoint classes {meta.get('classes')} differ from this run's {classes}")
        model.load_state_dict(restored["model"])
        st = restored["state"]
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_epoch, step = int(st["epoch"]) + 1, int(st["step"])
        if rt.rank == 0:
            log.info("resumed from epoch %d (step %d, model %s)", start_epoch - 1, step, meta.get("model_version"))

    # Which checkpoint this attempt started from (None: from scratch), in every epoch record,
    # so a history shows a resume apart from a restart that redid every epoch.
    resumed_from = start_epoch - 1 if restored is not None else None
    # A finished run that is started again reports what it ended with.
    metrics: dict[str, Any] = dict(restored["meta"].get("metrics", {})) if restored is not None else {}
    ddp_model = rt.prepare_model(model)
    no_sync = getattr(ddp_model, "no_sync", None)
    # Rank 0 speaks for the group (every rank runs the same steps); others stay quiet.
    progress = StepProgress(total_steps, cfg.epochs, first_step=step, file=rt.progress_file) if rt.rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        ddp_model.train()
        t0 = time.perf_counter()
        loss_sum, n_steps, n_images = 0.0, 0, 0
        batches = rt.train_batches(epoch)
        passes = 0
        while n_steps < steps_per_epoch:
            batch = next(batches, None)
            if batch is None and cfg.repeat_data and n_steps > 0:
                passes += 1  # another pass, in another order (the seed of a later epoch)
                batches = rt.train_batches(epoch + 1000 * passes)
                batch = next(batches, None)
            if not _everyone_has_batch(batch is not None, device, rt.world_size):
                break
            assert batch is not None
            x = batch["image"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.as_tensor(batch["label"], device=device)
            optimizer.zero_grad(set_to_none=True)
            loss = supcon_step(ddp_model, loss_fn, x, y, cfg.micro_batch_size, amp_dtype, scaler, no_sync)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            n_steps += 1
            n_images += len(y)
            loss_sum += float(loss)
            if progress is not None:
                progress.step(step, epoch, loss_sum / n_steps, len(y))
        train_s = time.perf_counter() - t0
        images_total, loss_total, steps_total = _all_reduce([n_images, loss_sum, n_steps], device, rt.world_size)
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": loss_total / steps_total if steps_total else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "train_images_per_s": images_total / train_s if train_s > 0 else 0.0,
            "epoch_steps": n_steps,
            "resumed_from_epoch": resumed_from,
        }
        metrics.update(validate(ddp_model, loss_fn, rt.val_batches(epoch), cfg, len(classes), rt, amp_dtype))
        folder = None
        if rt.rank == 0:
            folder = rt.scratch_dir / f"epoch_{epoch:04d}"
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,
                "step": step,
            }
            meta = {"config": to_dict(cfg), "classes": classes, "metrics": metrics, "epoch": epoch, "step": step}
            metrics["model_version"] = save_checkpoint(folder, model, state, meta)
        if progress is not None:
            progress.epoch(metrics)
        rt.report(metrics, folder)
    return metrics
