"""Preprocessing throughput: the Ray Data pipeline versus a plain single-process PIL loop.

Both do the same work on the same shards in the same run: read the Parquet shards,
decode every image, resize it to ``--resolution`` x ``--resolution``, scale to float32
[0, 1]. The Ray pipeline runs with a CPU budget of 1 and of 2 (``--cpus``); per-core
throughput is compared with the plain loop, which uses one core.

    python benchmarks/bench_preprocess.py                 # 1,500 photo crops, 256 px
    python benchmarks/bench_preprocess.py --images 4000 --resolution 128 --cpus 1 2 4

The data are crops of the photographs scikit-learn ships (JPEG and PNG, 192-512 px sides),
ingested once into a temporary shard folder.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from results import Row, write_rows  # benchmarks/results.py (the script's folder is on sys.path)

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


def ray_pipeline(
    shards: Path, classes: list[str], resolution: int, cpus: int, batch_size: int
) -> tuple[int, float, float, float]:
    """The same work through :func:`synthray.data.pipeline.build_dataset` with ``cpus`` CPUs.

    Returns (images, seconds, seconds to the first batch, images/s after the first batch):
    Ray's start-up (worker processes importing torch) is a fixed cost that the steady rate
    leaves out and the end-to-end rate keeps in.
    """
    from synthray.config import PipelineConfig, PreprocessConfig
    from synthray.data.pipeline import build_dataset, finalize_batch

    pre = PreprocessConfig(resolution=resolution, device="cpu")
    pipe = PipelineConfig(batch_size=batch_size, cpu_budget=cpus, concurrency=cpus, balance="none")
    start = time.perf_counter()
    ds = build_dataset(shards, classes, pre, pipe, split=None)
    n, first, first_n = 0, None, 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        # The uint8 -> float [0, 1] step runs where batches are consumed, as in training.
        batch = finalize_batch(batch, pre)
        n += len(batch["label"])
        if first is None:
            first, first_n = time.perf_counter(), n
    end = time.perf_counter()
    steady = (n - first_n) / (end - first) if first is not None and end > first else 0.0
    return n, end - start, first - start if first else 0.0, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the best is kept")
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
        classes = sorted(class_counts(shards))

        plain = min((plain_loop(files, args.resolution) for _ in range(args.repeats)), key=lambda r: r[1])
        ray_runs: dict[int, tuple[int, float, float, float]] = {}
        ray.init(address="local", num_cpus=max(args.cpus), include_dashboard=False, log_to_driver=False)
        try:
            for cpus in args.cpus:
                runs = [ray_pipeline(shards, classes, args.resolution, cpus, args.batch_size) for _ in range(args.repeats)]
                ray_runs[cpus] = min(runs, key=lambda r: r[1])
        finally:
            ray.shutdown()

    base_n, base_s = plain
    base_rate = base_n / base_s
    lines = [
        f"preprocess: decode + resize to {args.resolution}px + scale, {base_n} images, "
        f"best of {args.repeats}, machine: {os.cpu_count()} cores",
        "",
        "| pipeline | CPUs | seconds | images/s end to end | per CPU vs plain | first batch s | images/s after first batch | that per CPU vs plain |",
        "|---|---|---|---|---|---|---|---|",
        f"| plain PIL loop (1 process) | 1 | {base_s:.2f} | {base_rate:.0f} | 1.00 | - | {base_rate:.0f} | 1.00 |",
    ]
    for cpus, (n, s, first, steady) in ray_runs.items():
        rate = n / s
        lines.append(
            f"| Ray Data | {cpus} | {s:.2f} | {rate:.0f} | {rate / cpus / base_rate:.2f} | {first:.1f} | "
            f"{steady:.0f} | {steady / cpus / base_rate:.2f} |"
        )
    if len(ray_runs) > 1:
        (c0, r0), (c1, r1) = list(ray_runs.items())[0], list(ray_runs.items())[-1]
        lines.append("")
        lines.append(f"scaling {c0} -> {c1} CPUs: x{(r1[0] / r1[1]) / (r0[0] / r0[1]):.2f} end to end, "
                     f"x{r1[3] / r0[3]:.2f} steady")
    print("\n".join(lines))  # the benchmark's result table is its output
    baseline = f"plain PIL loop, 1 process ({base_rate:.0f} images/s)"
    write_rows(args.json, [
        Row("preprocess", f"Ray Data, {cpus} CPU(s), images/s per CPU end to end", n / s / cpus, "images/s/CPU",
            baseline, base_rate, notes=f"{steady / cpus:.0f}/CPU after the first batch ({first:.1f} s)")
        for cpus, (n, s, first, steady) in ray_runs.items()
    ], images=base_n, resolution=args.resolution)


if __name__ == "__main__":
    main()
