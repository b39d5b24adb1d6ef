"""The Serve app under load on loopback: latency and throughput, batching on and off.

A bounded load generator (a fixed number of single-image ``POST /v1/attribute`` requests
per setting, ``--concurrency`` client threads each sending its share back to back) against
the real app on a local Ray cluster; then the time to enroll 50 images in one request.
Baselines from the same run: the same app with dynamic batching off (``max_batch_size``
1, applied live through the encoder's ``user_config``), and the plain in-process path
(``Embedder`` + store, no HTTP, no Serve) doing the same work one image at a time.

    python benchmarks/bench_serve.py            # 96 requests per setting, concurrency 1 8 32
    python benchmarks/bench_serve.py --quick    # 48 per setting

Queries are photo crops (JPEG/PNG, 192-512 px) decoded and resized by the encoder; the
encoder is untrained (speed does not depend on the weights): the CPU demo's ``resnet10t``
at 64 px by default. Everything shares the machine's cores with the load generator.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: the `serve` package
from bench_index import make_checkpoint  # noqa: E402  (benchmarks/ is not a package)
from bench_preprocess import make_photo_tree  # noqa: E402
from results import Row, median_spread, write_rows  # noqa: E402

log = logging.getLogger("bench_serve")
KEY = "bench-key"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def build_index(checkpoint: Path, store_path: Path, refs: list[Path]) -> None:
    """References (labelled by their folder) embedded into an embedded store, as the index build would."""
    import hashlib

    from synthray.attribution import Embedder
    from synthray.index import Reference, StoreConfig, open_store

    embedder = Embedder(checkpoint, device="cpu")
    data = [p.read_bytes() for p in refs]
    with open_store(StoreConfig(path=str(store_path)), embedder.model_version, embedder.dim) as store:
        store.upsert(
            embedder.embed_bytes(data),
            [
                Reference(p.parent.name, p.parent.name == "real", hashlib.sha256(d).hexdigest())
                for p, d in zip(refs, data)
            ],
        )


def plain_baseline(checkpoint: Path, store_path: Path, queries: list[bytes], enroll: list[bytes]) -> dict[str, float]:
    """The same work without HTTP or Serve: one image at a time, then 50 embedded and upserted.

    Torch runs one thread here, as in each Serve replica (Ray gives a replica with under one
    CPU OMP_NUM_THREADS=1): on a busy 2-core machine two spinning intra-op threads made the
    plain loop 10x slower, which would flatter Serve.
    """
    import hashlib

    import torch

    from synthray.attribution import Attributor, Embedder
    from synthray.index import Reference, StoreConfig, open_store

    torch.set_num_threads(1)
    embedder = Embedder(checkpoint, device="cpu")
    with open_store(StoreConfig(path=str(store_path)), embedder.model_version, embedder.dim) as store:
        attributor = Attributor(embedder, store)  # what the service answers with, in this process
        attributor.attribute_bytes(queries[:1])  # warm-up
        ms = []
        start = time.perf_counter()
        for q in queries:
            t = time.perf_counter()
            attributor.attribute_bytes([q])
            ms.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - start
        t = time.perf_counter()
        refs = [Reference("plain-enrolled", False, hashlib.sha256(d).hexdigest(), origin="enrolled") for d in enroll]
        ids = store.upsert(embedder.embed_bytes(enroll), refs)
        enroll_s = time.perf_counter() - t
        store.delete(ids)
    p50, p95, p99 = percentiles(ms)
    return {"p50": p50, "p95": p95, "p99": p99, "rps": len(queries) / wall, "enroll_s": enroll_s}


def load(url: str, queries: list[bytes], concurrency: int, requests_total: int) -> dict[str, float]:
    """``requests_total`` single-image requests from ``concurrency`` threads; latency and throughput."""
    import requests

    def worker(share: list[bytes]) -> list[tuple[float, int]]:
        out = []
        with requests.Session() as s:
            for data in share:
                t = time.perf_counter()
                r = s.post(f"{url}/v1/attribute", files=[("files", ("q.jpg", data, "image/jpeg"))], timeout=120)
                ms = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                out.append((ms, r.json()["results"][0]["encoder_batch_size"]))
        return out

    work = [queries[i % len(queries)] for i in range(requests_total)]
    shares = [work[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = [x for part in pool.map(worker, shares) for x in part]
    wall = time.perf_counter() - start
    p50, p95, p99 = percentiles([ms for ms, _ in results])
    return {
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "rps": len(results) / wall,
        "batch": float(np.mean([b for _, b in results])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per (batching, concurrency) setting")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, default=16, help="encoder batch size with batching on")
    parser.add_argument("--batch-wait-s", type=float, default=0.0, help="the encoder's batch_wait_timeout_s")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every setting (median and spread reported)")
    parser.add_argument("--quick", action="store_true", help="48 requests per setting")
    parser.add_argument("--json", help="also write the figures as JSON rows (benchmarks/run_all.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.requests = 48

    import ray
    import requests
    from ray import serve

    from serve.app import build_app

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_photo_tree(work / "photos", 200 + 64 + 50)
        photos = sorted((work / "photos").rglob("*.*"))
        refs, queries, enroll = photos[:200], [p.read_bytes() for p in photos[200:264]], photos[264:314]
        checkpoint = make_checkpoint(work / "ckpt", args.backbone, args.resolution)
        store = work / "qdrant"
        build_index(checkpoint, store, refs)
        plain = [
            plain_baseline(checkpoint, store, queries[:32], [p.read_bytes() for p in enroll])
            for _ in range(args.repeats)
        ]
        (work / "key").write_text(KEY)

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        port = free_port()
        app_args = {
            "checkpoint": str(checkpoint),
            "store": {"path": str(store)},
            "api_key_file": str(work / "key"),
            "device": "cpu",
            "max_batch_size": args.max_batch_size,
            "batch_wait_timeout_s": args.batch_wait_s,
            "max_ongoing_requests": 64,
        }
        url = f"http://127.0.0.1:{port}"
        rows, table = [], []
        measured: dict[tuple[str, int], list[dict[str, float]]] = {}
        enroll_runs: list[float] = []
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            t = time.perf_counter()
            serve.run(build_app(app_args), name="bench", route_prefix="/")
            start_s = time.perf_counter() - t
            load(url, queries, 4, 16)  # warm-up
            files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in enroll]
            # Settings interleaved within each repeat, so drift of a shared machine spreads over all.
            for r in range(args.repeats):
                for batching in ("on", "off"):
                    # user_config only: the replicas are reconfigured, not restarted
                    serve.run(
                        build_app({**app_args, "max_batch_size": args.max_batch_size if batching == "on" else 1}),
                        name="bench",
                        route_prefix="/",
                    )
                    for c in args.concurrency:
                        m = load(url, queries, c, args.requests)
                        measured.setdefault((batching, c), []).append(m)
                        log.info("run %d, batching %s, concurrency %d: %s", r + 1, batching, c, m)
                t = time.perf_counter()
                resp = requests.post(
                    f"{url}/v1/generators/bench-gen/samples", files=files, headers={"X-API-Key": KEY}, timeout=600
                )
                enroll_runs.append(time.perf_counter() - t)
                resp.raise_for_status()
                assert resp.json()["enrolled"] == len(enroll), resp.text
                requests.delete(
                    f"{url}/v1/generators/bench-gen", headers={"X-API-Key": KEY}, timeout=120
                ).raise_for_status()
        finally:
            serve.shutdown()
            ray.shutdown()

    def med(runs: list[dict[str, float]], key: str) -> tuple[float, tuple[float, float]]:
        return median_spread([m[key] for m in runs])

    def cell(runs: list[dict[str, float]], key: str) -> str:
        value, (lo, hi) = med(runs, key)
        return f"{value:.1f} ({lo:.1f}-{hi:.1f})"

    table.append("| path | batching | concurrency | requests x runs | p50 ms | p99 ms | req/s | mean encoder batch |")
    table.append("|---|---|---|---|---|---|---|---|")
    table.append(
        f"| in-process (no HTTP, no Serve) | - | 1 | 32 x {len(plain)} | {cell(plain, 'p50')} | "
        f"{cell(plain, 'p99')} | {cell(plain, 'rps')} | 1 |"
    )
    for (batching, c), runs in measured.items():
        table.append(
            f"| Serve, HTTP | {batching} | {c} | {args.requests} x {len(runs)} | {cell(runs, 'p50')} | "
            f"{cell(runs, 'p99')} | {cell(runs, 'rps')} | {med(runs, 'batch')[0]:.1f} |"
        )
    on_off = [
        f"c={c}: x{med(measured[('on', c)], 'rps')[0] / med(measured[('off', c)], 'rps')[0]:.2f}"
        for c in args.concurrency
    ]
    print(
        f"\nServe attribution, {args.backbone} at {args.resolution} px, max_batch_size {args.max_batch_size}, "
        f"{args.cpus} Ray CPUs (app start {start_s:.0f} s); medians of {args.repeats} runs (lowest-highest)\n"
    )
    print("\n".join(table))
    print(f"\nThroughput, batching on / off (medians): {', '.join(on_off)}")
    enroll_s, enroll_spread = median_spread(enroll_runs)
    plain_enroll, _ = median_spread([p["enroll_s"] for p in plain])
    print(
        f"Enroll {len(enroll)} images in one request: {enroll_s:.2f} s over HTTP "
        f"(in-process embed + upsert: {plain_enroll:.2f} s)"
    )

    runs = args.repeats
    for c in args.concurrency:
        on, off = measured[("on", c)], measured[("off", c)]
        rps, spread = med(on, "rps")
        rows.append(
            Row(
                "serve",
                f"attribute, batching on, concurrency {c}, req/s",
                rps,
                "req/s",
                f"batching off, concurrency {c}",
                med(off, "rps")[0],
                spread=spread,
                runs=runs,
                notes=f"p50 {med(on, 'p50')[0]:.0f} ms, p99 {med(on, 'p99')[0]:.0f} ms, "
                f"mean batch {med(on, 'batch')[0]:.1f}",
            )
        )
    plain_rps = med(plain, "rps")[0]
    for c in args.concurrency:
        rps, spread = med(measured[("on", c)], "rps")
        rows.append(
            Row(
                "serve",
                f"attribute, concurrency {c}, req/s vs in-process single-image",
                rps,
                "req/s",
                "in-process, one image at a time",
                plain_rps,
                spread=spread,
                runs=runs,
            )
        )
    first = measured[("on", args.concurrency[0])]
    p50, spread = med(first, "p50")
    rows.append(
        Row(
            "serve",
            f"attribute p50 latency, concurrency {args.concurrency[0]}",
            p50,
            "ms",
            "in-process, no HTTP",
            med(plain, "p50")[0],
            higher_is_better=False,
            spread=spread,
            runs=runs,
        )
    )
    rows.append(
        Row(
            "serve",
            f"enroll {len(enroll)} images, one request",
            enroll_s,
            "s",
            "in-process embed + upsert",
            plain_enroll,
            higher_is_better=False,
            spread=enroll_spread,
            runs=runs,
        )
    )
    rows.append(Row("serve", "app start (serve.run until ready)", start_s, "s", notes="fixed cost, once per deploy"))
    write_rows(
        args.json,
        rows,
        requests=args.requests,
        concurrency=args.concurrency,
        repeats=args.repeats,
        max_batch_size=args.max_batch_size,
        backbone=args.backbone,
        resolution=args.resolution,
    )


if __name__ == "__main__":
    main()
