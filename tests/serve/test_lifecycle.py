"""The service at its edges: flooded beyond its queues, and stopped with SIGTERM under load.

Both run real HTTP against a real app on loopback. The flood runs on the session's Ray
cluster; the stop runs ``synthray serve`` as a user starts it (its own local Ray cluster, in
a process of its own) and signals that process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.serve.helpers import build_test_index, free_port

ROOT = Path(__file__).resolve().parents[2]


def _attribute(url: str, image: bytes, timeout: float) -> requests.Response:
    return requests.post(f"{url}/v1/attribute", files=[("files", ("q.png", image, "image/png"))], timeout=timeout)


def _outcome(r: requests.Response) -> str:
    """``200``, or the status and the API's error code (``not JSON`` when the body is not the
    API's error shape, e.g. a refusal by Serve's proxy)."""
    if r.status_code == 200:
        return "200"
    try:
        return f"{r.status_code} {r.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"{r.status_code} not JSON"


@pytest.mark.timeout(600)
def test_a_flood_past_the_queues_is_answered_503_with_retry_after_not_left_waiting(
    ray_cluster, tiny_model, tmp_path, record_property
):
    """Short queues (2 in progress and 2 waiting per deployment) and 40 clients at once, none
    retrying: every request is answered, 200 or 503 ``overloaded`` with Retry-After, and none
    runs into the client's timeout; the service answers normally once the flood is over."""
    from ray import serve

    from serve.app import build_app

    index = build_test_index(tiny_model, tmp_path / "qdrant")
    serve.shutdown()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(
            build_app(
                {
                    "checkpoint": str(tiny_model.checkpoint),
                    "store": {"path": str(index.store_path)},
                    "device": "cpu",
                    "max_batch_size": 1,
                    "max_ongoing_requests": 2,
                    "max_queued_requests": 2,
                    "write_rate_per_min": 0,
                }
            ),
            name="synthray-flood",
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        queries = [q for c in index.classes for q in index.queries[c]]
        outcomes: list[tuple[str, float, str | None]] = []
        lock = threading.Lock()
        start = threading.Barrier(40)

        def client(i: int) -> None:
            start.wait()
            for j in range(4):
                t0 = time.monotonic()
                try:
                    r = _attribute(url, queries[(4 * i + j) % len(queries)], timeout=60)
                    kind, retry = _outcome(r), r.headers.get("Retry-After")
                except requests.RequestException as exc:  # a timeout or a dropped connection
                    kind, retry = type(exc).__name__, None
                with lock:
                    outcomes.append((kind, time.monotonic() - t0, retry))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        kinds = Counter(kind for kind, _, _ in outcomes)
        refused = [(s, retry) for kind, s, retry in outcomes if kind.startswith("503")]
        record_property("flood_outcomes", dict(kinds))
        record_property("flood_slowest_503_s", round(max((s for s, _ in refused), default=0.0), 2))
        record_property("flood_slowest_200_s", round(max((s for k, s, _ in outcomes if k == "200"), default=0.0), 2))
        assert len(outcomes) == 160, kinds
        assert set(kinds) <= {"200", "503 overloaded"}, kinds
        assert kinds["503 overloaded"] > 0 and kinds["200"] > 0, kinds  # the flood did overflow, and work got done
        assert all(retry is not None and float(retry) > 0 for _, retry in refused)
        after = _attribute(url, queries[0], timeout=60)
        assert after.status_code == 200, after.text
    finally:
        serve.shutdown()


def _ray_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (the cluster's temp folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:160]}")
    return found


@pytest.mark.timeout(600)
def test_sigterm_drains_the_requests_in_flight_and_stops_everything(tiny_model, tmp_path, record_property):
    """``synthray serve`` under load from 4 clients, then SIGTERM: every request sent before
    the signal is answered 200 (drained); later ones are refused (503 ``shutting_down`` with
    Retry-After, or no connection once the port is closed), never a 5xx; the command exits 0
    and no process of its Ray cluster is left."""
    index = build_test_index(tiny_model, tmp_path / "qdrant")
    # A short temp root of its own: every Ray process of this cluster names it on its
    # command line, which is how the end of the test finds leftovers (and unix socket paths
    # must stay under 108 characters).
    ray_tmp = tempfile.mkdtemp(prefix="srsig", dir="/tmp")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "serve.log"
    command = [
        str(Path(sys.executable).with_name("synthray")),
        "serve",
        "--checkpoint",
        str(tiny_model.checkpoint),
        "--store-path",
        str(index.store_path),
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--set",
        "device=cpu",
        "--set",
        "write_rate_per_min=0",
        "--set",
        "graceful_shutdown_timeout_s=30",
    ]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(1.0)
        queries = [q for c in index.classes for q in index.queries[c]]
        outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome), monotonic seconds
        lock = threading.Lock()
        stop = threading.Event()

        def client(i: int) -> None:
            j = 0
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = _attribute(url, queries[(i * 7 + j) % len(queries)], timeout=120)
                    outcome = _outcome(r)
                    if r.status_code == 503 and not r.headers.get("Retry-After"):
                        outcome += " without Retry-After"
                except requests.ConnectionError as exc:
                    # Refused: the port is closed, nothing was sent. Anything else lost an answer.
                    outcome = "refused" if "refused" in str(exc).lower() else f"dropped: {exc}"
                except requests.RequestException as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append((sent, time.monotonic(), outcome))
                if outcome == "refused":
                    time.sleep(0.2)
                elif outcome.startswith("503"):  # a well-behaved client waits as told (synthray's client does)
                    time.sleep(min(float(r.headers.get("Retry-After", 1)), 2.0))
                j += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(8.0)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=180)
        exited = time.monotonic()
        stop.set()
        for t in threads:
            t.join(150)
        before = [o for s, _, o in outcomes if s < signalled]
        after = Counter(o for s, _, o in outcomes if s >= signalled)
        record_property("sigterm_before", dict(Counter(before)))
        record_property("sigterm_after", dict(after))
        record_property("sigterm_exit_s", round(exited - signalled, 1))
        assert code == 0, log_path.read_text()[-4000:]
        assert len(before) > 8 and set(before) == {"200"}, Counter(before)
        # After the signal: answered, refused with Retry-After while the replicas finish, or
        # refused a connection once the port is closed. Serve's proxy is stopped without
        # closing its listener first, so a request that reaches it in its last instant loses
        # its connection: at most one per client (each client has one request out at a time).
        dropped = sum(n for o, n in after.items() if o.startswith("dropped"))
        assert dropped <= len(threads), after
        assert set(o for o in after if not o.startswith("dropped")) <= {"200", "503 shutting_down", "refused"}, after
        time.sleep(2.0)  # Ray's last processes exit just after the command that owns them
        assert _ray_processes(ray_tmp) == [], "\n".join(_ray_processes(ray_tmp))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        for line in _ray_processes(ray_tmp):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
