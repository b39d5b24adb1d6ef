"""Soak and chaos: a mixed load on the real app while replicas are killed, then the checks.

Client threads send single-image attributions, enrollments (each thread into a generator of
its own, its images re-sent now and then), listings and deletions of a scratch generator, for
``--duration-s`` seconds on loopback. On a schedule an Encoder replica and then the IndexOwner
replica are killed (``ray.kill``, as a crashed process), and the app is redeployed with other
encoder settings (a rolling update). Afterwards:

- client-visible errors (5xx and failed connections; 4xx are the caller's and counted apart),
  per fault window, and the worst latency of requests started in each window;
- every acknowledged enrolled image is in the index exactly once (the generator's count equals
  the distinct images acknowledged);
- every answer names the one model version the app serves;
- each replica process's memory (RSS) at the start and the end (growth = a leak);
- p50 / p99 latency over the whole run.

    python benchmarks/soak.py                    # 2 minutes, 16 clients; kills at 30% and 55%, redeploy at 80%
    python benchmarks/soak.py --duration-s 600   # the long one

It builds an untrained encoder and a small index of photo crops (speed and faults do not depend
on the weights) and serves them with two encoder replicas on a local Ray cluster. Nothing
leaves the machine. ``tests/serve/test_soak.py`` runs a short version against its own app.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger("soak")
KEY = "soak-key"


@dataclasses.dataclass
class Call:
    """One request as the client saw it."""

    op: str
    start: float  # seconds since the run began
    ms: float
    status: int  # 0 = no HTTP answer (connection failed)
    model_version: str | None = None


@dataclasses.dataclass
class Kill:
    """A fault on the schedule: a replica of ``deployment`` killed, or ``action`` run (a
    redeploy) in a thread of its own, under the label ``deployment``."""

    at_s: float  # seconds into the run
    deployment: str  # Encoder | IndexOwner | Ingress, or the action's label
    action: Callable[[], Any] | None = None


def replica_actors(app: str, deployment: str) -> list[dict[str, str]]:
    import ray

    return [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")
    ]


def kill_one(app: str, deployment: str) -> str:
    """Kills one replica of ``deployment`` (Serve starts a replacement); returns its name."""
    import ray

    actors = replica_actors(app, deployment)
    if not actors:
        raise RuntimeError(f"no replica of {deployment} in app {app}")
    victim = random.Random(0).choice(actors)
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    return victim["name"]


def replica_memory_mb(app: str) -> dict[str, float]:
    """RSS of every replica process of ``app`` on this machine, by process title."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"ServeReplica:{app}:" not in title:
                continue
            rss = next(
                int(line.split()[1]) for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            continue
        name = title.split(f"ServeReplica:{app}:")[1].split()[0]
        out[f"{name}[{proc.name}]"] = rss / 1024
    return out


class Load:
    """The client threads and what they saw."""

    def __init__(
        self,
        url: str,
        queries: Sequence[bytes],
        enroll_sets: Sequence[Sequence[bytes]],
        scratch: Sequence[Sequence[bytes]],
        seed: int = 0,
    ) -> None:
        self.url = url
        self.queries = list(queries)
        self.enroll_sets = [list(s) for s in enroll_sets]
        self.scratch = [list(x) for x in scratch]  # one set per thread (an image belongs to one generator)
        self.calls: list[Call] = []
        self.refusals: dict[tuple[str, int], str] = {}  # (op, status) -> the first such answer's error code
        self.acknowledged: dict[str, set[str]] = {}  # generator -> hashes the service acknowledged
        self.seed = seed
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def _send(self, session: Any, op: str, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        start = time.monotonic() - self.t0
        try:
            r = session.request(method, self.url + path, timeout=60, **kwargs)
            status, body = (
                r.status_code,
                (r.json() if r.headers.get("content-type", "").startswith("application/json") else None),
            )
        except requests.RequestException:
            status, body = 0, None
        call = Call(
            op,
            start,
            (time.monotonic() - self.t0 - start) * 1000,
            status,
            (body or {}).get("model_version") if isinstance(body, dict) else None,
        )
        with self._lock:
            self.calls.append(call)
            if status >= 400 and isinstance(body, dict):
                self.refusals.setdefault((op, status), str((body.get("error") or {}).get("code")))
        return status, body

    def worker(self, i: int, until: float) -> None:
        import requests

        rng = random.Random(self.seed * 1000 + i)
        generator, mine = f"soak-{i}", self.enroll_sets[i % len(self.enroll_sets)]
        headers = {"X-API-Key": KEY}
        with requests.Session() as s:
            while time.monotonic() < until:
                roll = rng.random()
                if roll < 0.85:
                    q = rng.choice(self.queries)
                    self._send(s, "attribute", "POST", "/v1/attribute", files=[("files", ("q.jpg", q, "image/jpeg"))])
                elif roll < 0.93:
                    # The whole set each time: the first request enrolls it, every later one is the
                    # retry a client makes after a failure (it must store nothing twice).
                    files = [("files", (f"{j}.jpg", d, "image/jpeg")) for j, d in enumerate(mine)]
                    status, body = self._send(
                        s, "enroll", "POST", f"/v1/generators/{generator}/samples", headers=headers, files=files
                    )
                    if status == 200:
                        refused = {r["file"] for r in body.get("rejected", [])}
                        with self._lock:
                            self.acknowledged.setdefault(generator, set()).update(
                                hashlib.sha256(d).hexdigest() for j, d in enumerate(mine) if f"{j}.jpg" not in refused
                            )
                elif roll < 0.98:
                    self._send(s, "list", "GET", "/v1/generators")
                else:
                    name = f"soak-scratch-{i}"
                    scratch = self.scratch[i % len(self.scratch)]
                    files = [("files", (f"s{j}.jpg", d, "image/jpeg")) for j, d in enumerate(scratch)]
                    self._send(s, "enroll", "POST", f"/v1/generators/{name}/samples", headers=headers, files=files)
                    self._send(s, "delete", "DELETE", f"/v1/generators/{name}", headers=headers)

    def run(self, clients: int, duration_s: float, app: str, kills: Sequence[Kill]) -> dict[str, Any]:
        """The load for ``duration_s`` with ``kills`` on schedule; returns the raw observations."""
        self.t0 = time.monotonic()
        until = self.t0 + duration_s
        memory = [(0.0, replica_memory_mb(app))]
        killed: list[tuple[float, str]] = []  # (seconds into the run, the fault as the table names it)
        threads: list[threading.Thread] = []
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(self.worker, i, until) for i in range(clients)]
            pending = sorted(kills, key=lambda k: k.at_s)
            while time.monotonic() < until:
                now = time.monotonic() - self.t0
                if pending and now >= pending[0].at_s:
                    k = pending.pop(0)
                    if k.action is not None:
                        threads.append(threading.Thread(target=k.action, name=k.deployment))
                        threads[-1].start()
                        killed.append((now, k.deployment))
                    else:
                        killed.append((now, f"{k.deployment} replica killed"))
                        log.info("%.1f s: killed %s", now, kill_one(app, k.deployment))
                time.sleep(0.2)
            for f in futures:
                f.result()
        for t in threads:
            t.join()
        memory.append((time.monotonic() - self.t0, replica_memory_mb(app)))
        return {"killed": killed, "memory": memory}


def summarize(
    load: Load, observed: dict[str, Any], counts: dict[str, dict], model_version: str, window_s: float = 15.0
) -> dict[str, Any]:
    """The figures and checks of a finished run."""
    calls = load.calls
    failed = [c for c in calls if c.status == 0 or c.status >= 500]
    # A kill touches the requests in flight at it or started in the ``window_s`` after it; a
    # request touched by two kills counts for the later one it outlived.
    kills = sorted(observed["killed"])
    owner: dict[int, list[Call]] = {i: [] for i in range(len(kills))}
    for c in calls:
        end = c.start + c.ms / 1000
        touched = [i for i, (at, _) in enumerate(kills) if c.start < at + window_s and end > at]
        if touched:
            owner[touched[-1]].append(c)
    rows = [
        {
            "fault": fault,
            "answers": sum(200 <= c.status < 300 for c in owner[i]),
            "errors": sum(c.status == 0 or c.status >= 500 for c in owner[i]),
            "worst_ms": max((c.ms for c in owner[i]), default=0.0),
        }
        for i, (_, fault) in enumerate(kills)
    ]
    versions = {c.model_version for c in calls if c.model_version}
    missing = {
        g: (len(h), counts.get(g, {}).get("count", 0))
        for g, h in load.acknowledged.items()
        if counts.get(g, {}).get("count", 0) != len(h)
    }
    before, after = observed["memory"][0][1], observed["memory"][-1][1]
    ms = [c.ms for c in calls if 200 <= c.status < 300 and c.op == "attribute"]
    return {
        "requests": len(calls),
        "errors": len(failed),
        "client_errors": sum(400 <= c.status < 500 for c in calls),
        "by_op": {op: sum(c.op == op for c in calls) for op in sorted({c.op for c in calls})},
        "refusals": {f"{op} {status}": code for (op, status), code in sorted(load.refusals.items())},
        "faults": rows,
        "model_versions": sorted(versions),
        "mixed_versions": versions - {model_version},
        "enrolled_mismatch": missing,
        "enrolled_generators": len(load.acknowledged),
        "p50_ms": float(np.percentile(ms, 50)) if ms else None,
        "p99_ms": float(np.percentile(ms, 99)) if ms else None,
        "memory_mb": {"start": before, "end": after},
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| fault | answers in flight or sent in the 15 s after | errors | worst latency of those |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['fault']} | {r['answers']} | {r['errors']} | {r['worst_ms'] / 1000:.1f} s |" for r in result["faults"]
    ]
    lines += [
        "",
        f"requests {result['requests']} ({result['by_op']}), client-visible errors {result['errors']}, "
        f"4xx {result['client_errors']} {result['refusals'] or ''}; attribute p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; "
        f"model versions {result['model_versions']}; enrolled generators {result['enrolled_generators']}, "
        f"mismatches {result['enrolled_mismatch'] or 'none'}",
    ]
    lines += ["", "| replica | RSS start (MB) | RSS end (MB) |", "|---|---|---|"]
    start, end = result["memory_mb"]["start"], result["memory_mb"]["end"]
    for name in sorted(set(start) | set(end)):
        lines.append(f"| {name} | {start.get(name, float('nan')):.0f} | {end.get(name, float('nan')):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--encoder-replicas", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an AppArgs field for the app under test, e.g. health_check_period_s=0.5",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ray
    from ray import serve

    from bench_index import make_checkpoint
    from bench_preprocess import make_photo_tree
    from bench_serve import build_index, free_port
    from serve.app import build_app
    from synthray.train.checkpoint import checkpoint_version
    from synthray.config import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = make_checkpoint(work / "ckpt", "resnet10t", 64)
        make_photo_tree(work / "photos", 80 + 12 * args.clients)
        photos = sorted((work / "photos").rglob("*.jpg")) + sorted((work / "photos").rglob("*.png"))
        build_index(checkpoint, work / "qdrant", photos[:40])
        data = [p.read_bytes() for p in photos[40:]]
        (work / "key").write_text(KEY)
        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
        )
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            app_args = {
                "checkpoint": str(checkpoint),
                "store": {"path": str(work / "qdrant")},
                "api_key_file": str(work / "key"),
                "device": "cpu",
                "create_index": True,
                "encoder_replicas": args.encoder_replicas,
                "encoder_cpus": 0.4,
                "write_rate_per_min": 0,
            }
            app_args = apply_overrides(app_args, args.set)
            serve.run(build_app(app_args), name="soak", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            load = Load(
                url,
                data[:40],
                [data[40 + 6 * i : 46 + 6 * i] for i in range(args.clients)],
                [data[40 + 6 * (args.clients + i) : 46 + 6 * (args.clients + i)] for i in range(args.clients)],
            )
            d = args.duration_s
            redeploy = {**app_args, "encoder_cpus": 0.35, "max_batch_size": 8}  # a rolling update
            observed = load.run(
                args.clients,
                d,
                "soak",
                [
                    Kill(0.3 * d, "Encoder"),
                    Kill(0.55 * d, "IndexOwner"),
                    Kill(
                        0.8 * d,
                        "config redeployed under load",
                        lambda: serve.run(build_app(redeploy), name="soak", route_prefix="/"),
                    ),
                ],
            )
            time.sleep(2.0)
            import requests

            counts = {g["name"]: g for g in requests.get(f"{url}/v1/generators", timeout=60).json()["generators"]}
            result = summarize(load, observed, counts, checkpoint_version(checkpoint))
            print(table(result))
        finally:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
