"""Reference index: embedding throughput and kNN query latency, each against a plain baseline.

(a) Embedding: the index build's Ray Data stream (read + filter tasks, ``Embedder`` on an
    actor pool, one per CPU but one) versus the plain in-process loop of the no-Ray path
    (pyarrow + the same ``Embedder``), over the same shard rows in the same run.
(b) kNN search: ``k`` nearest of random 128-d unit vectors among N reference points in the
    embedded Qdrant store versus exact numpy search (one matrix product + top-k), one query
    at a time (p50/p99 latency) and as one batch; the share of queries whose neighbour set
    is identical in both (embedded Qdrant searches exactly: it must be 100%), and the time
    to load the N points into the store. Embedded Qdrant commits every point to SQLite on
    its own, so loading is slow and qdrant-client advises its local mode only up to ~20k
    points: large indexes (GenImage "all") belong in a Qdrant server (``store.url``).

    python benchmarks/bench_index.py                 # 1,200 images; 10k and 100k points
    python benchmarks/bench_index.py --quick         # 300 images; 2k and 10k points

The encoder for (a) is untrained (throughput does not depend on the weights): the CPU demo's
``resnet10t`` at 64 px by default, ``--backbone efficientnet_b0 --resolution 256`` for the
thesis's setting.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocess import make_photo_tree  # noqa: E402  (benchmarks/ is not a package)
from results import Row, write_rows  # noqa: E402

log = logging.getLogger("bench_index")


def make_checkpoint(folder: Path, backbone: str, resolution: int) -> Path:
    """An untrained encoder saved as a training checkpoint (what the index build loads)."""
    from synthray.config import PreprocessConfig, TrainConfig, to_dict
    from synthray.models import EncoderConfig, build_encoder
    from synthray.train.checkpoint import save_checkpoint

    cfg = TrainConfig(encoder=EncoderConfig(backbone=backbone, embedding_dim=128),
                      preprocess=PreprocessConfig(resolution=resolution, device="cpu"))
    model = build_encoder(cfg.encoder)
    save_checkpoint(folder, model, {}, {"config": to_dict(cfg), "classes": ["fake", "real"]})
    return folder


def bench_embedding(work: Path, images: int, backbone: str, resolution: int, batch_size: int,
                    cpus: int) -> dict[str, float | None]:
    """Images/s of the Ray Data stream and of the in-process loop over the same rows."""
    import ray

    from synthray.attribution.embedder import Embedder
    from synthray.config import IngestConfig
    from synthray.data.ingest import ingest
    from synthray.data.pipeline import find_shards
    from synthray.index.build import stream_local, stream_ray
    from synthray.index.config import IndexConfig

    tree, shards = work / "tree", work / "shards"
    if not tree.exists():
        log.info("writing %d photo crops to %s", images, tree)
        make_photo_tree(tree, images)
    ingest("folder", tree, shards, IngestConfig(use_ray=False, max_rows_per_shard=max(50, images // 12)))
    files = find_shards(shards)
    checkpoint = make_checkpoint(work / "checkpoint", backbone, resolution)
    parts = [(split, ["fake", "real"], None) for split in ("train", "val", "test")]  # every row

    timings = {"read_s": 0.0, "embed_s": 0.0}
    start = time.perf_counter()
    embedder = Embedder(checkpoint, device="cpu", batch_size=batch_size)
    plain_n = sum(len(b["embedding"]) for b in stream_local(files, parts, embedder, batch_size, timings))
    plain_s = time.perf_counter() - start

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        cfg = IndexConfig(checkpoint=str(checkpoint), batch_size=batch_size, device="cpu")
        start, first, first_n, n = time.perf_counter(), None, 0, 0
        for batch in stream_ray(files, parts, checkpoint, cfg, {"embed_s": 0.0}):
            n += len(batch["embedding"])
            if first is None:
                first, first_n = time.perf_counter(), n
        end = time.perf_counter()
    finally:
        ray.shutdown()
    assert n == plain_n, (n, plain_n)
    return {"images": n, "plain_s": plain_s, "plain_rate": plain_n / plain_s, "ray_s": end - start,
            "ray_rate": n / (end - start), "ray_first_s": (first or end) - start,
            # Only meaningful when batches really stream in: small inputs come out of Ray Data as
            # one block, every batch at the same moment.
            "ray_steady_rate": ((n - first_n) / (end - first)
                                if first and end - first > 0.1 * (end - start) else None),
            "torch_threads": __import__("torch").get_num_threads()}


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_knn(work: Path, size: int, queries: int, k: int, dim: int, seed: int = 0) -> dict[str, float]:
    """Embedded Qdrant versus exact numpy on ``size`` random unit vectors."""
    from synthray.index import Reference, StoreConfig, open_store, point_id

    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((size, dim)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    version = f"bench{size}"
    payloads = [Reference(generator=f"g{i % 10}", is_real=i % 10 == 0, content_hash=f"h{i}") for i in range(size)]
    index_of = {point_id(version, f"h{i}"): i for i in range(size)}

    with open_store(StoreConfig(path=str(work / f"qdrant-{size}"), upsert_batch=1024), version, dim) as store:
        t0 = time.perf_counter()
        for s in range(0, size, 10_000):
            store.upsert(refs[s:s + 10_000], payloads[s:s + 10_000])
        load_s = time.perf_counter() - t0
        qdrant_ms, qdrant_sets = [], []
        for row in q:
            t0 = time.perf_counter()
            hits = store.search(row[None], k)[0]
            qdrant_ms.append(1e3 * (time.perf_counter() - t0))
            qdrant_sets.append({index_of[h.id] for h in hits})
        t0 = time.perf_counter()
        store.search(q, k)
        qdrant_batch_ms = 1e3 * (time.perf_counter() - t0) / queries

    numpy_ms, numpy_sets = [], []
    for row in q:
        t0 = time.perf_counter()
        sims = refs @ row
        top = np.argpartition(-sims, k)[:k]
        top = top[np.argsort(-sims[top])]
        numpy_ms.append(1e3 * (time.perf_counter() - t0))
        numpy_sets.append(set(top.tolist()))
    t0 = time.perf_counter()
    sims = q @ refs.T
    np.argpartition(-sims, k, axis=1)[:, :k]
    numpy_batch_ms = 1e3 * (time.perf_counter() - t0) / queries

    same = float(np.mean([a == b for a, b in zip(qdrant_sets, numpy_sets)]))
    qp50, qp99 = _percentiles(qdrant_ms)
    np50, np99 = _percentiles(numpy_ms)
    return {"size": size, "load_s": load_s, "qdrant_p50": qp50, "qdrant_p99": qp99, "numpy_p50": np50,
            "numpy_p99": np99, "qdrant_batch_ms": qdrant_batch_ms, "numpy_batch_ms": numpy_batch_ms, "same": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 images; 2k and 10k points")
    parser.add_argument("--images", type=int, help="images embedded in (a) (default 1200, quick 300)")
    parser.add_argument("--sizes", type=int, nargs="+", help="reference points in (b) (default 10k 100k)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=11)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    parser.add_argument("--skip-embedding", action="store_true", help="only (b)")
    parser.add_argument("--store-dir", help="folder for the embedded stores of (b) (default: the temp dir); "
                        "/dev/shm takes the disk's per-point fsync out of the load time")
    parser.add_argument("--json", help="also write the figures as JSON rows here (for run_all.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    images = args.images or (300 if args.quick else 1200)
    sizes = args.sizes or ([2_000, 10_000] if args.quick else [10_000, 100_000])

    if args.store_dir:  # made up front, not after minutes of embedding
        Path(args.store_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emb = None if args.skip_embedding else bench_embedding(
            work, images, args.backbone, args.resolution, args.batch_size, args.cpus)
        store_dir = Path(tempfile.mkdtemp(dir=args.store_dir)) if args.store_dir else work
        try:
            knn = [bench_knn(store_dir, n, args.queries, args.k, args.dim) for n in sizes]
        finally:
            if args.store_dir:
                shutil.rmtree(store_dir, ignore_errors=True)

    lines, rows = [f"machine: {os.cpu_count()} cores; timings on a shared machine are pessimistic", ""], []
    if emb:
        steady = emb["ray_steady_rate"]
        lines += [
            f"(a) embedding {emb['images']} images ({args.backbone}, {args.resolution} px, batch {args.batch_size}); "
            f"Ray cluster of {args.cpus} CPUs: {max(1, args.cpus - 1)} embedding actor(s) + reads; "
            f"plain loop: torch with {emb['torch_threads']} threads",
            "",
            "| path | seconds | images/s end to end | vs plain | first batch s | images/s after first batch "
            "| vs plain |",
            "|---|---|---|---|---|---|---|",
            f"| plain in-process loop (no-Ray path) | {emb['plain_s']:.2f} | {emb['plain_rate']:.0f} | 1.00 | - | "
            f"{emb['plain_rate']:.0f} | 1.00 |",
            f"| Ray Data (actor pool) | {emb['ray_s']:.2f} | {emb['ray_rate']:.0f} | "
            f"{emb['ray_rate'] / emb['plain_rate']:.2f} | {emb['ray_first_s']:.1f} | {_num(steady)} | "
            f"{_num(steady and steady / emb['plain_rate'], '.2f')} |",
            "",
        ]
        rows.append(Row("index", "embedding, Ray Data actor pool, images/s end to end", emb["ray_rate"], "images/s",
                        "in-process loop", emb["plain_rate"],
                        notes=f"{emb['images']} images, {args.backbone} {args.resolution}px"))
        if steady:
            rows.append(Row("index", "embedding, Ray Data, images/s after the first batch", steady, "images/s",
                            "in-process loop", emb["plain_rate"]))
    lines += [
        f"(b) kNN, k={args.k}, {args.dim}-d unit vectors, {args.queries} queries one at a time (and as one batch); "
        f"stores in {args.store_dir or tempfile.gettempdir()}",
        "",
        "| points | load s | Qdrant p50 ms | Qdrant p99 ms | numpy p50 ms | numpy p99 ms | Qdrant/numpy p50 | "
        "batch ms/query Qdrant | batch ms/query numpy | identical neighbour sets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in knn:
        lines.append(
            f"| {r['size']:,} | {r['load_s']:.1f} | {r['qdrant_p50']:.2f} | {r['qdrant_p99']:.2f} | "
            f"{r['numpy_p50']:.2f} | {r['numpy_p99']:.2f} | {r['qdrant_p50'] / r['numpy_p50']:.1f}x | "
            f"{r['qdrant_batch_ms']:.2f} | {r['numpy_batch_ms']:.3f} | {100 * r['same']:.1f}% |")
        rows += [
            Row("index", f"kNN p50 latency, embedded Qdrant, {r['size']:,} points", r["qdrant_p50"], "ms",
                "exact numpy", r["numpy_p50"], higher_is_better=False,
                notes=f"identical neighbour sets {100 * r['same']:.1f}%"),
            Row("index", f"kNN p99 latency, embedded Qdrant, {r['size']:,} points", r["qdrant_p99"], "ms",
                "exact numpy", r["numpy_p99"], higher_is_better=False),
            Row("index", f"load {r['size']:,} points into embedded Qdrant", r["load_s"], "s"),
        ]
    print("\n".join(lines))
    write_rows(args.json, rows, images=images, sizes=sizes, backbone=args.backbone, resolution=args.resolution)
    if any(r["same"] < 1.0 for r in knn):
        raise SystemExit("embedded Qdrant returned other neighbours than exact search")


if __name__ == "__main__":
    main()
