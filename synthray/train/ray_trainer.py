"""Ray Train around the library loop: TorchTrainer, DDP, checkpoints, failure recovery.

Resources are explicit because Ray Train workers and Ray Data share the cluster's CPUs:
each worker reserves ``cpus_per_worker``, and Ray Data's preprocessing is capped at
``data_cpus`` (default: whatever the workers leave), or the two wait on each other forever.

Resume: Ray Train keeps checkpoints under ``<run_dir>/<run_name>``; a worker failure is
retried from the latest one (``max_failures``), and starting the same job again with the
same run folder continues from it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from synthray.config import PipelineConfig, TrainConfig, from_dict, to_dict
from synthray.data.files import read_jsonl, write_text_atomic
from synthray.data.preprocess import eval_preprocess
from synthray.train.checkpoint import CheckpointError, latest_good, load_checkpoint
from synthray.train.curves import draw_curves
from synthray.train.loop import Runtime, train_loop
from synthray.train.plan import make_plan, run_path
from synthray.train.progress import PROGRESS_FILE, following

log = logging.getLogger(__name__)


# In each checkpoint: the metrics of every epoch up to and including its own.
HISTORY_FILE = "history.jsonl"


def _restore_from(ckpt: Any) -> tuple[Path, dict[str, Any]] | None:
    """Ray's latest checkpoint (folder, loaded); if it is corrupt, the newest good one beside it."""
    if ckpt is None:
        return None
    latest = Path(ckpt.path)
    try:
        return latest, load_checkpoint(latest)
    except CheckpointError as exc:
        log.warning("latest checkpoint unusable (%s); looking for an earlier good one", exc)
    older = sorted(p for p in latest.parent.glob("checkpoint_*") if p.name < latest.name)
    found = latest_good(older)
    if found is None:
        raise CheckpointError(f"no loadable checkpoint under {latest.parent}")
    log.warning("resuming from %s instead", found[0])
    return found


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _history_of(folder: Path, epoch: int, current: Path) -> list[dict[str, Any]]:
    """The epoch records a restored checkpoint stands for (checkpoints older than
    ``HISTORY_FILE``: the current history up to the checkpoint's epoch)."""
    if (folder / HISTORY_FILE).exists():
        return read_jsonl(folder / HISTORY_FILE)
    return [r for r in read_jsonl(current) if r["epoch"] <= epoch]


def _train_worker(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train
    import ray.train.torch

    from synthray.data.pipeline import iter_balanced_batches, real_label_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = from_dict(TrainConfig, config["cfg"])
    classes: list[str] = config["classes"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray sets OMP_NUM_THREADS=1 for actors; give torch the CPUs this worker reserved.
    torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    val_pre = eval_preprocess(cfg.preprocess)

    def train_batches(epoch: int):
        return iter_balanced_batches(
            train_shard,
            len(classes),
            cfg.batch_size,
            cfg.pipeline,
            seed=cfg.seed * 1000 + epoch * 16 + rank,
            drop_last=True,
            preprocess=cfg.preprocess,
            device=device,
            real_label=real_label_of(classes),
        )

    def val_batches(epoch: int):
        return iter_balanced_batches(
            val_shard,
            len(classes),
            cfg.batch_size,
            cfg.pipeline,
            seed=cfg.seed,
            drop_last=False,
            preprocess=val_pre,
            device=device,
            real_label=real_label_of(classes),
        )

    # Ray's result keeps metrics of retained checkpoints only; metrics.jsonl is the full
    # history, every epoch exactly once: each checkpoint carries the history up to it, and
    # a restore rewrites the file to that. So an epoch whose report raced a node failure
    # (written here, its checkpoint never registered) is redone and appears once, and one
    # whose checkpoint was registered but whose line was never written is not lost.
    history = Path(config["run"]) / "metrics.jsonl"

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        # Every rank reports (Ray Train waits for all); only rank 0 carries the checkpoint.
        checkpoint = None
        if folder is not None:
            _write_jsonl(folder / HISTORY_FILE, [*read_jsonl(history), metrics])
            checkpoint = ray.train.Checkpoint.from_directory(str(folder))
        ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:
            with open(history, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(metrics) + "\n")

    def restore() -> dict[str, Any] | None:
        found = _restore_from(ray.train.get_checkpoint())
        if rank == 0:
            epoch = int(found[1]["state"]["epoch"]) if found else -1
            _write_jsonl(history, _history_of(found[0], epoch, history) if found else [])
        return found[1] if found else None

    def prepare(model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model) if world > 1 else model

    with tempfile.TemporaryDirectory(prefix="synthray-ckpt-") as scratch:
        rt = Runtime(
            rank=rank,
            world_size=world,
            device=device,
            train_batches=train_batches,
            val_batches=val_batches,
            report=report,
            restore=restore,
            scratch_dir=Path(scratch),
            prepare_model=prepare,
            progress_file=Path(config["run"]) / PROGRESS_FILE,
        )
        train_loop(cfg, classes, config["steps_per_epoch"], rt)


def data_pipeline(cfg: TrainConfig, data_cpus: float) -> PipelineConfig:
    """Ray Data's share of a training cluster: ``data_cpus`` CPUs, and no GPU when the Train
    workers use GPUs (one each): Ray Data decodes on its CPUs and each worker finishes its
    batches on its own GPU (``finalize_batch``), so neither waits for the other."""
    return dataclasses.replace(
        cfg.pipeline,
        cpu_budget=data_cpus,
        num_cpus_per_task=min(1.0, data_cpus),
        gpu_budget=0 if cfg.use_gpu else cfg.pipeline.gpu_budget,
    )


def fit_ray(cfg: TrainConfig, follow_progress: bool = False) -> dict[str, Any]:
    """Runs training as a Ray Train job on the connected (or a new local) Ray cluster.

    Args:
        cfg: the training config.
        follow_progress: log rank 0's progress records from the run folder here (for a driver
            whose workers' output is not forwarded, ``ray.init(log_to_driver=False)``; the
            folder must be on a file system this process sees).
    Returns:
        {"metrics", "checkpoint", "classes", "held_out", "run", "history", "curves"} of the result
        (``curves``: the training-curves PNG in the run folder).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from synthray.data.pipeline import build_dataset

    plan = make_plan(cfg)  # every config error surfaces here, before any worker starts
    if not ray.is_initialized():
        ray.init()
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    train_cpus = cfg.num_workers * cfg.cpus_per_worker
    data_cpus = cfg.data_cpus if cfg.data_cpus is not None else cluster_cpus - train_cpus
    if data_cpus < 0.5:
        raise ValueError(
            f"{cfg.num_workers} worker(s) x {cfg.cpus_per_worker} CPU leave {data_cpus:g} of the cluster's "
            f"{cluster_cpus:g} CPUs for Ray Data preprocessing; lower cpus_per_worker or set data_cpus"
        )
    pipeline = data_pipeline(cfg, data_cpus)
    val_pre = eval_preprocess(cfg.preprocess)
    datasets = {
        # sample_seed None: each epoch's pass draws a fresh downsampled subset of big classes.
        "train": build_dataset(
            cfg.shards, plan.classes, cfg.preprocess, pipeline, split="train", shuffle_seed=cfg.seed, sample_seed=None
        ),
        # Validation streams every row (no downsampling); the kNN subset caps rows per class.
        "val": build_dataset(
            cfg.shards, plan.classes, val_pre, dataclasses.replace(pipeline, balance="none"), split="val"
        ),
    }
    # Ray Train replaces each dataset's execution options with these: the CPU cap goes here.
    ingest_options = ray.train.DataConfig.default_ingest_options()
    ingest_options.resource_limits = ingest_options.resource_limits.copy(cpu=data_cpus)
    run = run_path(cfg)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(
        json.dumps({"config": to_dict(cfg), "classes": plan.classes, "held_out": plan.held_out}, indent=2)
    )
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "classes": plan.classes,
            "steps_per_epoch": plan.steps_per_epoch,
            "run": str(run),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **cfg.worker_resources,
                **({"GPU": 1} if cfg.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run_name,
            storage_path=str(run.parent),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train", "val"], execution_options=ingest_options),
    )
    log.info(
        "training %s on %d worker(s): classes %s, held out %s, %d steps/epoch",
        cfg.experiment.setting,
        cfg.num_workers,
        plan.classes,
        plan.held_out,
        plan.steps_per_epoch,
    )
    (run / PROGRESS_FILE).unlink(missing_ok=True)  # a follower must not replay an earlier run's records
    with following(run / PROGRESS_FILE) if follow_progress else contextlib.nullcontext():
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    history = read_jsonl(run / "metrics.jsonl")
    return {
        "metrics": result.metrics,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "classes": plan.classes,
        "held_out": plan.held_out,
        "run": str(run),
        "history": history,
        "curves": draw_curves(run),
    }
