"""Reference index: embedding throughput and kNN query latency, each against a plain baseline.

(a) Embedding: the index build's Ray Data stream (read + filter tasks, ``Embedder`` on an
    actor pool, one per CPU but one) versus the plain in-process loop of the no-Ray path
    (pyarrow + the same ``Embedder``), over the same shard rows in the same run.
(b) kNN search: the ``k`` nearest of N reference points, one query at a time, on clustered
    vectors (shaped like trained embeddings) and random ones (HNSW's worst case): exact numpy
    (the plain baseline), synthray's exact path (numpy over the store's cached matrix, used up
    to ``store.exact_max`` references), Qdrant Edge's HNSW at several ``hnsw_ef`` (used above
    it), and qdrant-client's local mode (the old embedded default; up to 100k points, it loads
    ~3k points/s). For each: load and HNSW build time, p50/p99 latency, the share of queries
    whose neighbour set equals exact kNN's, and recall@k.

    python benchmarks/bench_index.py                 # 1,200 images; 10k, 100k and 1M points
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
from typing import Any

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

    cfg = TrainConfig(
        encoder=EncoderConfig(backbone=backbone, embedding_dim=128),
        preprocess=PreprocessConfig(resolution=resolution, device="cpu"),
    )
    model = build_encoder(cfg.encoder)
    save_checkpoint(folder, model, {}, {"config": to_dict(cfg), "classes": ["fake", "real"]})
    return folder


def bench_embedding(
    work: Path, images: int, backbone: str, resolution: int, batch_size: int, cpus: int
) -> dict[str, float | None]:
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
    return {
        "images": n,
        "plain_s": plain_s,
        "plain_rate": plain_n / plain_s,
        "ray_s": end - start,
        "ray_rate": n / (end - start),
        "ray_first_s": (first or end) - start,
        # Only meaningful when batches really stream in: small inputs come out of Ray Data as
        # one block, every batch at the same moment.
        "ray_steady_rate": ((n - first_n) / (end - first) if first and end - first > 0.1 * (end - start) else None),
        "torch_threads": __import__("torch").get_num_threads(),
    }


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def make_vectors(kind: str, size: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit reference and query vectors.

    ``random``: uniform on the sphere, HNSW's worst case (no structure to navigate).
    ``clustered``: 50 class centres with a within-class spread like a trained encoder's
    embeddings (mean cosine to the class centre ~0.7), queries drawn the same way: the shape
    of synthray's index, at sizes no CPU run here can embed.
    """
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    if kind == "random":
        return unit(rng.standard_normal((size, dim))), unit(rng.standard_normal((queries, dim)))
    centres = unit(rng.standard_normal((50, dim)))
    spread = 1.0 / np.sqrt(dim)  # per-dimension noise: cosine to the centre ~0.7

    def draw(n: int) -> np.ndarray:
        return unit(centres[rng.integers(0, 50, n)] + spread * rng.standard_normal((n, dim)))

    return draw(size), draw(queries)


def _search_timed(fn, q: np.ndarray) -> tuple[list[float], list[list[int]]]:
    ms, found = [], []
    for row in q:
        t0 = time.perf_counter()
        got = fn(row)
        ms.append(1e3 * (time.perf_counter() - t0))
        found.append(got)
    return ms, found


def _agreement(found: list[list[int]], exact: list[list[int]]) -> tuple[float, float]:
    """(share of queries whose neighbour set equals exact kNN's, mean recall@k)."""
    same = float(np.mean([set(a) == set(b) for a, b in zip(found, exact)]))
    recall = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))
    return same, recall


def bench_knn(
    work: Path, size: int, kind: str, queries: int, k: int, dim: int, efs: list[int], client_max: int
) -> list[dict[str, Any]]:
    """kNN of ``queries`` single queries among ``size`` points: exact numpy (the plain baseline),
    synthray's exact path, Qdrant Edge's HNSW at each ``hnsw_ef``, qdrant-client's local mode."""
    import dataclasses

    from synthray.index import Reference, StoreConfig, open_store, point_id

    refs, q = make_vectors(kind, size, queries, dim)
    version = f"bench-{kind}-{size}"
    payloads = [Reference(generator=f"g{i % 50}", is_real=i % 50 == 0, content_hash=f"h{i}") for i in range(size)]
    index_of = {point_id(version, f"h{i}"): i for i in range(size)}
    rows: list[dict[str, Any]] = []

    def topk(row: np.ndarray) -> list[int]:
        sims = refs @ row
        top = np.argpartition(-sims, k)[:k]
        return top[np.argsort(-sims[top])].tolist()

    ms, exact = _search_timed(topk, q)
    rows.append(
        {
            "engine": "numpy exact (plain baseline)",
            "load_s": None,
            "build_s": None,
            "ms": ms,
            "same": 1.0,
            "recall": 1.0,
        }
    )

    def ids(hits: list[Any]) -> list[int]:
        return [index_of[h.id] for h in hits]

    cfg = StoreConfig(path=str(work / f"edge-{kind}-{size}"), upsert_batch=4096, exact_max=size)
    with open_store(cfg, version, dim) as store:
        t0 = time.perf_counter()
        for s in range(0, size, 20_000):
            store.upsert(refs[s : s + 20_000], payloads[s : s + 20_000])
        load_s = time.perf_counter() - t0
        store.search(q[:1], k)  # fills the cached matrix once
        ms, found = _search_timed(lambda row: ids(store.search(row[None], k)[0]), q)
        rows.append(
            {
                "engine": "synthray exact path (numpy over the cached matrix)",
                "load_s": load_s,
                "build_s": None,
                "ms": ms,
                **dict(zip(("same", "recall"), _agreement(found, exact))),
            }
        )
        t0 = time.perf_counter()
        store.optimize()
        build_s = time.perf_counter() - t0
        for ef in efs:
            store.cfg = dataclasses.replace(cfg, exact_max=0, hnsw_ef=ef)
            store.search(q[:1], k)
            ms, found = _search_timed(lambda row: ids(store.search(row[None], k)[0]), q)
            rows.append(
                {
                    "engine": f"Qdrant Edge HNSW, hnsw_ef {ef}",
                    "load_s": load_s,
                    "build_s": build_s,
                    "ms": ms,
                    **dict(zip(("same", "recall"), _agreement(found, exact))),
                }
            )
    if size <= client_max:
        ccfg = StoreConfig(
            path=str(work / f"client-{kind}-{size}"), engine="client-local", upsert_batch=4096, exact_max=0
        )
        with open_store(ccfg, version, dim) as store:
            t0 = time.perf_counter()
            for s in range(0, size, 20_000):
                store.upsert(refs[s : s + 20_000], payloads[s : s + 20_000])
            load_s = time.perf_counter() - t0
            few = q[: max(10, queries // 10)]  # seconds per query at 100k: fewer of them
            ms, found = _search_timed(lambda row: ids(store.search(row[None], k)[0]), few)
            rows.append(
                {
                    "engine": "qdrant-client local mode",
                    "load_s": load_s,
                    "build_s": None,
                    "ms": ms,
                    **dict(zip(("same", "recall"), _agreement(found, exact[: len(few)]))),
                }
            )
    for r in rows:
        r.update(size=size, kind=kind, p50=_percentiles(r["ms"])[0], p99=_percentiles(r["ms"])[1], queries=len(r["ms"]))
        del r["ms"]
        log.info("%s %s %d: %s p50 %.3f ms, same %.3f", kind, r["engine"], size, r["engine"], r["p50"], r["same"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 images; 2k and 10k points")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["clustered", "random"],
        choices=["clustered", "random"],
        help="vector sets for (b)",
    )
    parser.add_argument("--efs", type=int, nargs="+", default=[64, 128, 256, 512], help="HNSW search beams for (b)")
    parser.add_argument(
        "--random-max",
        type=int,
        default=100_000,
        help="largest size random vectors are tried at (HNSW builds slowest on them)",
    )
    parser.add_argument(
        "--client-max",
        type=int,
        default=100_000,
        help="largest size qdrant-client's local mode is loaded at (35 s per 100k points)",
    )
    parser.add_argument("--images", type=int, help="images embedded in (a) (default 1200, quick 300)")
    parser.add_argument("--sizes", type=int, nargs="+", help="reference points in (b) (default 10k 100k 1M)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=11)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    parser.add_argument("--skip-embedding", action="store_true", help="only (b)")
    parser.add_argument(
        "--store-dir",
        help="folder for the embedded stores of (b) (default: the temp dir); "
        "/dev/shm takes the disk's per-point fsync out of the load time",
    )
    parser.add_argument("--json", help="also write the figures as JSON rows here (for run_all.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    images = args.images or (300 if args.quick else 1200)
    sizes = args.sizes or ([2_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000])

    if args.store_dir:  # made up front, not after minutes of embedding
        Path(args.store_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emb = (
            None
            if args.skip_embedding
            else bench_embedding(work, images, args.backbone, args.resolution, args.batch_size, args.cpus)
        )
        store_dir = Path(tempfile.mkdtemp(dir=args.store_dir)) if args.store_dir else work
        try:
            knn = [
                r
                for kind in args.kinds
                for n in sizes
                if kind != "random" or n <= args.random_max
                for r in bench_knn(store_dir, n, kind, args.queries, args.k, args.dim, args.efs, args.client_max)
            ]
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
        rows.append(
            Row(
                "index",
                "embedding, Ray Data actor pool, images/s end to end",
                emb["ray_rate"],
                "images/s",
                "in-process loop",
                emb["plain_rate"],
                notes=f"{emb['images']} images, {args.backbone} {args.resolution}px",
            )
        )
        if steady:
            rows.append(
                Row(
                    "index",
                    "embedding, Ray Data, images/s after the first batch",
                    steady,
                    "images/s",
                    "in-process loop",
                    emb["plain_rate"],
                )
            )
    lines += [
        f"(b) kNN, k={args.k}, {args.dim}-d unit vectors, {args.queries} single queries; identical = the share of "
        f"queries whose neighbour set equals exact kNN's; stores in {args.store_dir or tempfile.gettempdir()}",
        "",
        "| vectors | points | engine | load s | HNSW build s | p50 ms | p99 ms | vs numpy p50 | identical | recall@k |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["kind"], r["size"]): r["p50"] for r in knn if r["engine"].startswith("numpy")}
    for r in knn:
        ratio = base[(r["kind"], r["size"])] / r["p50"] if r["p50"] else None
        lines.append(
            f"| {r['kind']} | {r['size']:,} | {r['engine']} | {_num(r['load_s'], '.1f')} | "
            f"{_num(r['build_s'], '.1f')} | {r['p50']:.3f} | {r['p99']:.3f} | {_num(ratio, '.2f')}x | "
            f"{100 * r['same']:.1f}% | {r['recall']:.3f} |"
        )
        if not r["engine"].startswith("numpy"):
            rows.append(
                Row(
                    "index",
                    f"kNN p50, {r['engine']}, {r['kind']} {r['size']:,} points",
                    r["p50"],
                    "ms",
                    "exact numpy",
                    base[(r["kind"], r["size"])],
                    higher_is_better=False,
                    notes=f"identical sets {100 * r['same']:.1f}%, recall {r['recall']:.3f}",
                )
            )
    print("\n".join(lines))
    write_rows(args.json, rows, images=images, sizes=sizes, backbone=args.backbone, resolution=args.resolution)
    if any(r["same"] < 1.0 for r in knn if "exact" in r["engine"]):
        raise SystemExit("the exact path returned other neighbours than exact numpy search")


if __name__ == "__main__":
    main()
