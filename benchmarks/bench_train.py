"""Training throughput: Ray Train (1 worker) versus the same loop in a plain process.

Both run the library's SupCon loop for the same steps on the same shards in the same run:
the plain side reads shards with pyarrow in the training process (``train/local.py``);
the Ray side is ``TorchTrainer`` with one worker fed by Ray Data (``train/ray_trainer.py``).
Throughput is the loop's own images/s over the training steps of epochs after the first
(warm-up excluded); wall time includes everything (cluster start, validation, checkpoints).

    python benchmarks/bench_train.py                       # resnet10t, 64 px, CPU
    python benchmarks/bench_train.py --backbone efficientnet_b0 --resolution 64 --epochs 3

On a CUDA machine add ``--device cuda`` for the plain side (AMP bf16 + channels_last);
the Ray side then needs a GPU in the cluster (``--use-gpu``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from results import Row, write_rows  # benchmarks/results.py (the script's folder is on sys.path)

log = logging.getLogger("bench_train")


def make_tree(root: Path, per_class: int, size: int, seed: int = 0) -> None:
    """Crops of sklearn's sample photos, one colour/texture transform per class."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for c, label in enumerate(["real", "gen-a", "gen-b", "gen-c"]):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = photos[i % len(photos)]
            top, left = int(rng.integers(0, p.shape[0] - size)), int(rng.integers(0, p.shape[1] - size))
            crop = p[top : top + size, left : left + size].astype(np.float32)
            if c:  # a class-specific periodic pattern stands in for a generator fingerprint
                yy, xx = np.mgrid[0:size, 0:size]
                crop += 6 * np.sin(2 * np.pi * (xx * c + yy) / (3 + c))[..., None]
            Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(root / label / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    parser.add_argument("--json", help="also write the figures as JSON rows here (for run_all.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    import torch

    from synthray.config import IngestConfig, TrainConfig, from_dict
    from synthray.data.ingest import ingest
    from synthray.train.local import fit_local
    from synthray.train.ray_trainer import fit_ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_tree(tmp / "tree", args.per_class, max(args.resolution, 96))
        ingest("folder", tmp / "tree", tmp / "shards", IngestConfig(use_ray=False, max_rows_per_shard=200))

        def config(run_name: str) -> TrainConfig:
            return from_dict(
                TrainConfig,
                {
                    "shards": str(tmp / "shards"),
                    "run_dir": str(tmp / "runs"),
                    "run_name": run_name,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "steps_per_epoch": args.steps,
                    "val_batches": 2,
                    "knn_val_per_class": 16,
                    "use_gpu": args.use_gpu,
                    "cpus_per_worker": max(1, args.cpus - 1),
                    "data_cpus": 1,
                    "encoder": {"backbone": args.backbone},
                    "preprocess": {"resolution": args.resolution, "device": "cpu"},
                    "pipeline": {"samples_per_class": 4},
                },
            )

        def steady(history: list[dict]) -> float:
            rates = [h["train_images_per_s"] for h in history if h["epoch"] >= 1]
            return statistics.median(rates)

        rows = []
        torch.set_num_threads(max(1, args.cpus - 1))  # the same compute budget as the Ray worker
        t0 = time.perf_counter()
        fit_local(config("plain"), device=args.device)
        wall = time.perf_counter() - t0
        hist = [json.loads(x) for x in (tmp / "runs" / "plain" / "metrics.jsonl").read_text().splitlines()]
        rows.append(("plain process (library loop, pyarrow reader)", steady(hist), wall))

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            t0 = time.perf_counter()
            result = fit_ray(config("ray"))
            wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
        rows.append(("Ray Train, 1 worker (Ray Data feed)", steady(result["history"]), wall))

    base = rows[0][1]
    lines = [
        f"train: {args.backbone} at {args.resolution}px, batch {args.batch_size}, {args.epochs} epochs x {args.steps} steps, "
        f"device {args.device}, {os.cpu_count()} cores",
        "",
        "| runner | train images/s (epochs >= 1, median) | vs plain | wall s (all in) |",
        "|---|---|---|---|",
    ]
    for name, rate, wall in rows:
        lines.append(f"| {name} | {rate:.1f} | {rate / base:.2f} | {wall:.1f} |")
    lines.append("")
    lines.append(f"Ray Train overhead on throughput: {100 * (1 - rows[1][1] / base):+.1f}%")
    print("\n".join(lines))  # the benchmark's result table is its output
    write_rows(
        args.json,
        [
            Row(
                "train",
                f"Ray Train 1 worker, {args.backbone} {args.resolution}px, train images/s",
                rows[1][1],
                "images/s",
                "same loop in a plain process",
                base,
                notes=f"wall {rows[1][2]:.0f} s vs {rows[0][2]:.0f} s",
            )
        ],
        backbone=args.backbone,
        resolution=args.resolution,
        device=args.device,
    )


if __name__ == "__main__":
    main()
