"""The main job on the embedded defaults, end to end on one machine.

built-in benchmark -> Parquet shards -> Ray Data stream check -> SupCon training (Ray Train,
synthbench's held-out families kept out) -> reference index (embedded Qdrant) -> evaluation
(ES2 on the seen classes, ES4 with the held-out families zero-shot) -> the Serve app over
HTTP: attribute, enroll a held-out family with 50 images, attribute again.

Each stage logs when it starts and ends; a failure names the stage that failed. Every
stage is also a ``synthray`` subcommand of its own (synthbench, ingest, stream, train,
index, evaluate, serve, attribute, enroll).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from synthray.config import (
    AugmentConfig,
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


def link_ray_logs(link: Path) -> None:
    """Points ``link`` at the running Ray session's log folder (each worker's and actor's
    output), and says where it is; a stale link from an earlier run is replaced."""
    import ray

    # Ray has no public call for the log folder; the node object knows it.
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    if node is None or not hasattr(node, "get_logs_dir_path"):  # another Ray version: say where to look instead
        log.info("Ray's worker logs: under Ray's temp folder (session_latest/logs)")
        return
    logs = Path(node.get_logs_dir_path())
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        log.info("Ray's worker and Serve logs: %s (%s is taken)", logs, link)
        return
    link.symlink_to(logs, target_is_directory=True)
    log.info("Ray's worker and Serve logs: %s (-> %s)", link, logs)


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
        # A pretrained start takes a lower peak rate than random init (0.002 before).
        lr=0.001 if cfg.weights else 0.002,
        warmup_epochs=0.3,
        steps_per_epoch=cfg.steps_per_epoch,
        # The worker reserves one CPU and Ray Data the other; decoding 96 px PNGs leaves most of
        # that one idle, so torch computes on both.
        torch_threads=2,
        val_batches=8,
        knn_val_per_class=40,
        seed=cfg.seed,
        experiment=experiment,
        encoder=EncoderConfig(
            backbone=cfg.backbone,
            weights=cfg.weights,
            pretrained=cfg.weights is not None,
            input_filter=cfg.input_filter,
        ),
        preprocess=pre,
        pipeline=pipe,
    )


def demo_preprocess(cfg: DemoConfig) -> PreprocessConfig:
    """Native-scale random crops (no resampling of the traces), JPEG re-encoding for reals and
    fakes alike (so file format is no shortcut), several crops averaged when embedding."""
    augment = [AugmentConfig(name="jpeg", p=cfg.jpeg, params={"quality": [60, 95]})] if cfg.jpeg > 0 else []
    return PreprocessConfig(
        resolution=cfg.crop, resize_mode="random_crop", views=cfg.views, augment=augment, device="cpu"
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
    from synthray.data.stream_check import stream_summary
    from synthray.data.synthbench import build_synthbench
    from synthray.train.ray_trainer import fit_ray

    cfg = cfg or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"config": to_dict(cfg), "out": str(out.resolve())}

    with stage("synthbench", timings):
        bench_cfg = SynthbenchConfig(
            per_class=cfg.per_class,
            real_per_class=cfg.real_per_class,
            resolution=cfg.resolution,
            seed=cfg.seed,
            train_steps=cfg.bench_train_steps,
            procedural=cfg.procedural,
            held_out=tuple(cfg.held_out),
        )
        bench = build_synthbench(out / "synthbench", bench_cfg)
        summary["synthbench"] = {
            "root": str((out / "synthbench").resolve()),
            "classes": sorted(bench.get("counts", {})),
            "held_out": bench.get("held_out"),
            "trivial_baseline": bench.get("baseline"),
        }

    from synthray.attribution.config import AttributionConfig
    from synthray.demo_service import service_story
    from synthray.eval.config import EvalConfig, ExplainReportConfig, ProtocolConfig
    from synthray.eval.run import evaluate, summarize
    from synthray.index.build import build_index
    from synthray.index.config import IndexConfig, StoreConfig

    # A fresh local cluster of our own (never one left running elsewhere). Its processes'
    # output (Ray Data's per-operator bars from the Train worker, Serve's access log, Ray
    # Train's internal warnings: thousands of lines) goes to Ray's log files, linked from the
    # run folder; this terminal keeps one line per stage, training steps with an ETA
    # (followed from the run folder), and the summary.
    ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
    link_ray_logs(out / "ray-logs")
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
        pre = demo_preprocess(cfg)
        pipe = PipelineConfig(samples_per_class=cfg.samples_per_class, pairs=True)
        with stage("stream", timings):
            summary["stream"] = stream_summary(out / "shards", pre, pipe, cfg.batch_size, split="train", seed=cfg.seed)
        with stage("train", timings):
            train_cfg = demo_train_config(out, cfg, pre, pipe, held_out=tuple(bench.get("held_out") or ()))
            result = fit_ray(train_cfg, follow_progress=True)
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
                "curves": result.get("curves"),
            }
        store = StoreConfig(path=str(out / "index" / "qdrant"))
        checkpoint = str(result["checkpoint"])
        with stage("index", timings):
            # 20 validation images per generator calibrate the acceptances; all real ones the threshold.
            built = build_index(
                IndexConfig(
                    checkpoint=checkpoint,
                    shards=str(out / "shards"),
                    per_class=cfg.index_per_class,
                    calibration_per_class=20,
                    device="cpu",
                    store=store,
                ),
                # None: Ray's actor pool where it pays off; on one small
                # CPU node the driver embeds faster (and the log says so).
                AttributionConfig(),
                use_ray=None,
            )
            summary["index"] = {
                k: built.get(k)
                for k in (
                    "collection",
                    "store",
                    "model_version",
                    "path",
                    "counts",
                    "added",
                    "already_present",
                    "calibration",
                    "images_per_s",
                )
            }
        with stage("evaluate", timings):
            summary["evaluate"] = {}
            # ES4: the trained generators and real, and the held-out ones zero-shot, on test
            # photographs no training step saw; the held-out generators are then enrolled.
            ecfg = EvalConfig(
                checkpoint=checkpoint,
                shards=str(out / "shards"),
                out=str(out / "eval" / "es4"),
                protocol=ProtocolConfig(name="ES4"),
                per_class=cfg.index_per_class,
                store=store,
                max_test_per_class=cfg.eval_max_test_per_class,
                degradations=tuple(cfg.eval_degradations),
                sweep_sizes=(10, 50),
                sweep_repeats=2,
                reference_max_per_class=50,
                umap=cfg.umap,
                device="cpu",
                seed=cfg.seed,
                enroll_per_class=cfg.enroll_count,
                robustness_max_per_class=15,
                calibration_per_class=20,
                explain=ExplainReportConfig(images=cfg.explain_images),
            )
            summary["evaluate"]["ES4"] = summarize(evaluate(ecfg), ecfg.out)
        if cfg.serve:
            with stage("serve", timings):
                held = list(bench.get("held_out") or [])
                family = cfg.enroll_family or (held[0] if held else None)
                if family is None:
                    raise ValueError("no held-out family to enroll: set demo.enroll_family")
                others = [h for h in held if h != family]
                discover = cfg.discover_family if cfg.discover_family is not None else (others[0] if others else None)
                summary["serve"] = service_story(
                    out,
                    out / "shards",
                    checkpoint,
                    store.path,
                    seen=summary["index"]["counts"] or {},
                    family=family,
                    enroll_count=cfg.enroll_count,
                    query_count=cfg.query_count,
                    port=cfg.port,
                    discover_family=discover or None,
                    discover_count=cfg.discover_count,
                )
    finally:
        ray.shutdown()

    summary["timings_s"] = timings
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log.info("full summary written to %s", out / "summary.json")
    return summary


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The key figures of a demo run and where its outputs are (what ``synthray demo`` prints)."""
    out: dict[str, Any] = {"out": summary.get("out"), "timings_s": summary.get("timings_s")}
    train = summary.get("train") or {}
    if train.get("epochs"):
        last = train["epochs"][-1]
        out["train"] = {
            "checkpoint": train.get("checkpoint"),
            "val_knn_acc": last.get("val_knn_acc"),
            "classes": len(train.get("classes") or []),
            "held_out": train.get("held_out"),
        }
    if summary.get("index"):
        counts = summary["index"].get("counts") or {}
        out["index"] = {
            "store": summary["index"].get("store"),
            "references": sum(sum(c.values()) for c in counts.values()),
            "classes": len(counts),
        }
    for name, ev in (summary.get("evaluate") or {}).items():
        out[f"evaluate_{name}"] = {
            "report": str(Path(ev["out"]) / "report.md"),
            "real_vs_ai_auc": ev["detection"]["auc"],
            "tpr_at_5pct_fpr": ev.get("detection_tpr_at_5pct_fpr"),
            "tpr_at_1pct_fpr": ev.get("detection_tpr_at_1pct_fpr"),
            "closed_set_f1": ev["closed_set_f1"],
            "open_set_f1": ev["open_set_f1"],
            "unseen": ev.get("service"),
        }
    if summary.get("serve"):
        e = summary["serve"]["enrollment"]
        out["enrollment"] = {
            "family": e["family"],
            "enrolled": e["enrolled"],
            "seconds": e["seconds"],
            "accuracy_before": e["before"]["accuracy"],
            "accuracy_after": e["after"]["accuracy"],
            "labels_before": e["before"]["labels"],
            "labels_after": e["after"]["labels"],
            "real_specificity_before": e.get("real_before", {}).get("accuracy"),
            "real_specificity_after": e.get("real_after", {}).get("accuracy"),
        }
        d = summary["serve"].get("discovery")
        if d:
            out["discovery"] = {
                k: d.get(k) for k in ("family", "sent", "answered", "discovery", "gathered", "size", "enrolled")
            }
            out["discovery"].update(
                {"accuracy_before": d["before"]["accuracy"], "accuracy_after": (d.get("after") or {}).get("accuracy")}
            )
    return out
