"""Preprocessing throughput: the Ray Data pipeline versus a plain single-process PIL loop.

Both do the same work on the same shards in the same run: read the Parquet shards,
decode every image, resize it to ``--resolution`` x ``--resolution``, scale to float32
[0, 1]. The Ray pipeline runs with a CPU budget of 1 and of 2 (``--cpus``); per-core
throughput is compared with the plain loop, which uses one core.

    python benchmarks/bench_preprocess.py                 # 1,500 photo crops, 256 px, 3 runs each
    python benchmarks/bench_preprocess.py --images 4000 --resolution 128 --cpus 1 2 4

The data are crops of the photographs scikit-learn ships (JPEG and PNG, 192-512 px sides),
ingested once into a temporary shard folder. Each setting runs ``--repeats`` times (median
and spread). Ray's fixed start-up (planning, worker processes) is separated from its steady
rate by running every repeat at full and at half size (see :func:`split_cost`).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from results import Row, median_spread, write_rows  # benchmarks/results.py (the script's folder is on sys.path)

log = logging.getLogger("bench_preprocess")


def make_photo_tree(root: Path, n: int, seed: int = 0) -> None:
    """``n`` crops of sklearn's sample photos in a plain-folder tree (two labels)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = int(rng.integers(192, 420)), int(rng.integers(192, 512))
        top, left = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
        crop = Image.fromarray(photo[top : top + h, left : left + w])
        label = "real" if i % 2 else "fake"
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        # Mostly JPEG, as in GenImage; every fourth a PNG.
        if i % 4 == 0:
            crop.save(folder / f"{i:05d}.png")
        else:
            crop.save(folder / f"{i:05d}.jpg", quality=90)


def plain_loop(files: list[str], resolution: int) -> tuple[int, float]:
    """The baseline: pyarrow read + PIL decode + PIL resize + scale, one process."""
    start = time.perf_counter()
    n = 0
    for f in files:
        table = pq.read_table(f, columns=["image"])
        for data in table.column("image").to_pylist():
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
            n += 1
            assert arr.shape == (3, resolution, resolution)
    return n, time.perf_counter() - start


def same_code_loop(files: list[str], resolution: int, batch_size: int) -> tuple[int, float]:
    """The second baseline: the library's own preprocessing (:class:`PreprocessBatch`, the
    code Ray Data runs in its tasks) called batch by batch in this process, with torch on one
    thread as in a Ray task. Against it, Ray's figure is Ray's overhead alone; against the
    PIL loop, it also carries the library's decode and resize."""
    import torch

    from synthray.config import PreprocessConfig
    from synthray.data.pipeline import PreprocessBatch, finalize_batch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pre = PreprocessConfig(resolution=resolution, device="cpu")
        start = time.perf_counter()
        fn, n = None, 0
        for f in files:
            table = pq.read_table(f, columns=["image", "generator"])
            if fn is None:
                fn = PreprocessBatch(pre, sorted(set(table.column("generator").to_pylist()) | {"fake", "real"}))
            for lo in range(0, table.num_rows, batch_size):
                part = table.slice(lo, batch_size)
                batch = fn(
                    {
                        "image": np.array(part.column("image").to_pylist(), dtype=object),
                        "generator": np.array(part.column("generator").to_pylist(), dtype=object),
                    }
                )
                n += len(finalize_batch(batch, pre)["label"])
        return n, time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def ray_pipeline(
    shards: Sequence[str], classes: list[str], resolution: int, cpus: int, batch_size: int
) -> tuple[int, float]:
    """The same work through :func:`synthray.data.pipeline.build_dataset` with ``cpus`` CPUs:
    (images, seconds) from building the dataset to its last batch."""
    from synthray.config import PipelineConfig, PreprocessConfig
    from synthray.data.pipeline import build_dataset, finalize_batch

    pre = PreprocessConfig(resolution=resolution, device="cpu")
    pipe = PipelineConfig(batch_size=batch_size, cpu_budget=cpus, concurrency=cpus, balance="none")
    start = time.perf_counter()
    ds = build_dataset(list(shards), classes, pre, pipe, split=None)
    n = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        # The uint8 -> float [0, 1] step runs where batches are consumed, as in training.
        batch = finalize_batch(batch, pre)
        n += len(batch["label"])
    return n, time.perf_counter() - start


def split_cost(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """(steady images/s, fixed start-up seconds) from two runs of different sizes.

    Time is start-up plus images over the steady rate, so the difference of the two runs
    cancels the start-up: rate = extra images / extra seconds. (A rate "after the first
    batch" does not do this: Ray Data preprocesses ahead while the first batch is awaited,
    so images finished during start-up are counted as if done after it.)
    """
    (n1, t1), (n2, t2) = small, large
    if n2 <= n1 or t2 <= t1:
        return float("nan"), float("nan")
    rate = (n2 - n1) / (t2 - t1)
    return rate, max(0.0, t2 - n2 / rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each setting; the median and spread are reported"
    )
    parser.add_argument("--workdir", help="keep data here instead of a temporary folder")
    parser.add_argument("--json", help="also write the figures as JSON rows here (for run_all.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray

    from synthray.config import IngestConfig
    from synthray.data.ingest import ingest
    from synthray.data.pipeline import class_counts, find_shards

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        tree, shards = work / "tree", work / "shards"
        if not tree.exists():
            log.info("writing %d photo crops to %s", args.images, tree)
            make_photo_tree(tree, args.images)
        # Several shards so Ray has blocks to spread over its workers.
        ingest("folder", tree, shards, IngestConfig(use_ray=False, max_rows_per_shard=max(50, args.images // 16)))
        files = find_shards(shards)
        half = files[: len(files) // 2]
        classes = sorted(class_counts(shards))

        plain = [plain_loop(files, args.resolution) for _ in range(args.repeats)]
        same = [same_code_loop(files, args.resolution, args.batch_size) for _ in range(args.repeats)]
        # Per repeat: (full run, half run) images and seconds, so start-up and rate separate.
        ray_runs: dict[int, list[tuple[tuple[int, float], tuple[int, float]]]] = {}
        ray.init(address="local", num_cpus=max(args.cpus), include_dashboard=False, log_to_driver=False)
        try:
            for cpus in args.cpus:
                ray_runs[cpus] = []
                for r in range(args.repeats):
                    full = ray_pipeline(files, classes, args.resolution, cpus, args.batch_size)
                    part = ray_pipeline(half, classes, args.resolution, cpus, args.batch_size)
                    log.info(
                        "Ray Data, %d CPU(s), run %d: %d images in %.2f s, %d in %.2f s", cpus, r + 1, *full, *part
                    )
                    ray_runs[cpus].append((full, part))
        finally:
            ray.shutdown()

    base_n = plain[0][0]
    base_rate, base_spread = median_spread([n / s for n, s in plain])
    same_rate, same_spread = median_spread([n / s for n, s in same])
    lines = [
        f"preprocess: decode + resize to {args.resolution}px + scale, {base_n} images, "
        f"median of {args.repeats} runs (lowest-highest), machine: {os.cpu_count()} cores",
        "",
        "| pipeline | CPUs | images/s end to end | per CPU vs PIL loop | start-up s | steady images/s "
        "| steady per CPU vs PIL loop | steady per CPU vs same code |",
        "|---|---|---|---|---|---|---|---|",
        f"| plain PIL loop (1 process) | 1 | {base_rate:.0f} ({base_spread[0]:.0f}-{base_spread[1]:.0f}) | 1.00 | - | "
        f"{base_rate:.0f} | 1.00 | - |",
        f"| the library's preprocessing, same code as Ray's tasks (1 process, 1 thread) | 1 | {same_rate:.0f} "
        f"({same_spread[0]:.0f}-{same_spread[1]:.0f}) | {same_rate / base_rate:.2f} | - | {same_rate:.0f} | "
        f"{same_rate / base_rate:.2f} | 1.00 |",
    ]
    rows = []
    baseline = "plain PIL loop, 1 process"
    for cpus, runs in ray_runs.items():
        rate, spread = median_spread([n / s for (n, s), _ in runs])
        split = [split_cost(part, full) for full, part in runs]
        steady, steady_spread = median_spread([r for r, _ in split])
        startup, startup_spread = median_spread([s for _, s in split])
        lines.append(
            f"| Ray Data | {cpus} | {rate:.0f} ({spread[0]:.0f}-{spread[1]:.0f}) | {rate / cpus / base_rate:.2f} | "
            f"{startup:.1f} ({startup_spread[0]:.1f}-{startup_spread[1]:.1f}) | {steady:.0f} "
            f"({steady_spread[0]:.0f}-{steady_spread[1]:.0f}) | {steady / cpus / base_rate:.2f} | "
            f"{steady / cpus / same_rate:.2f} |"
        )
        rows.append(
            Row(
                "preprocess",
                f"Ray Data, {cpus} CPU(s), images/s per CPU end to end",
                rate / cpus,
                "images/s/CPU",
                baseline,
                base_rate,
                spread=(spread[0] / cpus, spread[1] / cpus),
                runs=len(runs),
                notes=f"start-up {startup:.1f} s",
            )
        )
        rows.append(
            Row(
                "preprocess",
                f"Ray Data, {cpus} CPU(s), steady images/s per CPU (start-up removed)",
                steady / cpus,
                "images/s/CPU",
                baseline,
                base_rate,
                spread=(steady_spread[0] / cpus, steady_spread[1] / cpus),
                runs=len(runs),
                notes="from a full and a half-size run: extra images / extra seconds",
            )
        )
        rows.append(
            Row(
                "preprocess",
                f"Ray Data, {cpus} CPU(s), steady images/s per CPU vs the same code in one process",
                steady / cpus,
                "images/s/CPU",
                "the library's preprocessing, 1 process, 1 thread",
                same_rate,
                spread=(steady_spread[0] / cpus, steady_spread[1] / cpus),
                runs=len(runs),
                notes="Ray's own overhead (same decode and resize on both sides)",
            )
        )
    rows.append(
        Row(
            "preprocess",
            "the library's preprocessing in one process, images/s",
            same_rate,
            "images/s",
            baseline,
            base_rate,
            spread=same_spread,
            runs=len(same),
            notes="its decode and resize against a minimal PIL loop, no Ray",
        )
    )
    print("\n".join(lines))  # the benchmark's result table is its output
    write_rows(args.json, rows, images=base_n, resolution=args.resolution)


if __name__ == "__main__":
    main()
