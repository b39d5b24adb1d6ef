"""The main job on the embedded defaults: built-in benchmark -> shards -> Ray Data batches.

Each stage logs when it starts and ends; a failure names the stage that failed. Stages
grow with the product (training, index, evaluation, serving); every stage is also a
``synthray`` subcommand of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from synthray.config import (
    DemoConfig,
    ExperimentConfig,
    IngestConfig,
    PipelineConfig,
    PreprocessConfig,
    SynthbenchConfig,
    TrainConfig,
    to_dict,
)
from synthray.models import EncoderConfig

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A demo stage failed; the message names the stage and the cause."""


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    log.info("== stage %s: start", name)
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        raise StageError(f"stage {name!r} failed: {type(exc).__name__}: {exc}") from exc
    timings[name] = round(time.perf_counter() - start, 2)
    log.info("== stage %s: done in %.1f s", name, timings[name])


def demo_train_config(
    out: Path, cfg: DemoConfig, pre: PreprocessConfig, pipe: PipelineConfig, held_out: tuple[str, ...]
) -> TrainConfig:
    """The CPU training profile of the demo (same as configs/cpu_demo.yaml, sized by ``cfg``):
    ES4 with the benchmark's held-out families kept out of training, for zero-shot later."""
    experiment = ExperimentConfig(setting="ES4", held_out=held_out) if held_out else ExperimentConfig(setting="ES2")
    return TrainConfig(
        shards=str(out / "shards"),
        run_dir=str(out / "train"),
        run_name="supcon-cpu",
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=0.002,
        warmup_epochs=0.5,
        steps_per_epoch=cfg.steps_per_epoch,
        val_batches=8,
        knn_val_per_class=40,
        seed=cfg.seed,
        experiment=experiment,
        encoder=EncoderConfig(backbone=cfg.backbone),
        preprocess=pre,
        pipeline=pipe,
    )


def run_demo(out: str | Path, cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Runs every stage into ``out`` and returns (and writes) the summary.

    Args:
        out: run folder; re-running reuses finished stages (the benchmark and shards).
        cfg: demo settings.
    Returns:
        the summary written to ``out/summary.json``.
    """
    import ray

    from synthray.data.ingest import ingest
    from synthray.data.pipeline import stream_summary
    from synthray.data.synthbench import build_synthbench
    from synthray.train.ray_trainer import fit_ray

    cfg = cfg or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"config": to_dict(cfg), "out": str(out.resolve())}

    with stage("synthbench", timings):
        bench_cfg = SynthbenchConfig(per_class=cfg.per_class, resolution=cfg.resolution, seed=cfg.seed)
        bench = build_synthbench(out / "synthbench", bench_cfg)
        summary["synthbench"] = {
            "root": str((out / "synthbench").resolve()),
            "classes": sorted(bench.get("counts", {})),
            "held_out": bench.get("held_out"),
            "trivial_baseline": bench.get("baseline"),
        }

    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False)
    try:
        with stage("ingest", timings):
            manifest = ingest("folder", out / "synthbench", out / "shards", IngestConfig(use_ray=True))
            summary["ingest"] = {
                "shards": str((out / "shards").resolve()),
                "rows": manifest["total_rows"],
                "split_totals": manifest["split_totals"],
                "bad_files": manifest["num_bad"],
                "duplicate_groups": manifest["num_duplicate_groups"],
            }
        pre = PreprocessConfig(resolution=cfg.resolution, device="cpu")
        pipe = PipelineConfig(samples_per_class=cfg.samples_per_class)
        with stage("stream", timings):
            summary["stream"] = stream_summary(out / "shards", pre, pipe, cfg.batch_size, split="train", seed=cfg.seed)
        with stage("train", timings):
            train_cfg = demo_train_config(out, cfg, pre, pipe, held_out=tuple(bench.get("held_out") or ()))
            result = fit_ray(train_cfg)
            summary["train"] = {
                "run": result["run"],
                "checkpoint": result["checkpoint"],
                "classes": result["classes"],
                "held_out": result["held_out"],
                "epochs": [
                    {k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "val_knn_acc", "train_images_per_s")}
                    for h in result["history"]
                ],
                "model_version": result["metrics"].get("model_version"),
            }
    finally:
        ray.shutdown()

    summary["timings_s"] = timings
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log.info("summary written to %s", out / "summary.json")
    return summary
