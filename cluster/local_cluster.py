"""A local multi-node Ray cluster on one machine: a head and worker nodes, each its own
``ray start --block`` process group with its own resources.

    python cluster/local_cluster.py start --workers 2 --worker-cpus 2
    python cluster/local_cluster.py add-worker --cpus 1 --resources '{"big_mem": 1}'
    python cluster/local_cluster.py status
    python cluster/local_cluster.py kill-worker worker-1      # a node failure, for drills
    python cluster/local_cluster.py stop

What a real cluster of several machines looks like, on one: jobs submitted to the head
(``ray job submit --address http://127.0.0.1:<dashboard port>``) are scheduled across the
nodes, and a node can be killed to see Ray Train recover. Every port each node binds is
chosen free (agents, metrics, object and node managers; workers bind random ports), so
several nodes and other Ray instances coexist on the machine. The state (addresses,
process groups, log files) lives in ``--state-dir``; ``stop`` ends exactly the process
groups recorded there. Standard library only: it runs with any Python that has ``ray`` on
PATH (or ``--ray-bin``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("synthray.cluster")

STATE_FILE = "cluster.json"
# The resource every worker node started here carries, so placement can be checked or forced.
WORKER_RESOURCE = "local_worker_node"


@dataclasses.dataclass
class Node:
    """One ``ray start --block`` process group."""

    name: str  # "head", "worker-1", ...
    pid: int  # the ray start process; its process group holds the raylet and its workers
    num_cpus: int  # logical CPUs the node offers
    resources: dict[str, float]  # custom resources the node offers
    log_file: str  # ray start's stdout and stderr
    node_id: str = ""  # Ray's id of the node once it joined ("" while starting)


@dataclasses.dataclass
class ClusterState:
    """What ``start`` recorded, enough for ``add-worker``, ``kill-worker`` and ``stop``."""

    gcs_address: str  # 127.0.0.1:<port>, for ray start --address and ray.init(address=...)
    dashboard_url: str  # http://127.0.0.1:<port>, for ray job submit --address
    temp_dir: str  # Ray's session files and sockets (short: socket paths must stay < 108 bytes)
    nodes: list[Node] = dataclasses.field(default_factory=list)


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every node runs in.

    Args:
        extra: more variables (e.g. Ray system config overrides such as RAY_health_check_period_ms).
    Returns:
        a copy of this process's environment with the cluster's settings.
    """
    env = dict(os.environ)
    env.update({
        "RAY_AUTH_MODE": "disabled",  # ray start would otherwise turn token auth on for a local cluster
        "RAY_USAGE_STATS_ENABLED": "0",
        # A stopped node exits at once instead of waiting for its tasks to drain.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    })
    env.update(extra or {})
    return env


class LocalCluster:
    """Starts, extends and stops a local multi-node cluster recorded in ``state_dir``.

    Args:
        state_dir: where the state file and the nodes' logs go.
        ray_bin: the ``ray`` executable; default: the one beside this Python, else on PATH.
        env: extra environment variables for every node.
        object_store_mb: object store size per node (Ray's default takes 30% of RAM per node).
    """

    def __init__(self, state_dir: str | Path, ray_bin: str | None = None, env: dict[str, str] | None = None,
                 object_store_mb: int = 512) -> None:
        self.state_dir = Path(state_dir)
        beside = Path(sys.executable).parent / "ray"
        self.ray_bin = ray_bin or (str(beside) if beside.exists() else shutil.which("ray") or "ray")
        self.env = ray_env(env)
        # The job's `python` must be the one that has ray and synthray installed.
        self.env["PATH"] = f"{Path(self.ray_bin).parent}:{self.env.get('PATH', '')}"
        self.object_store_mb = object_store_mb
        self.state: ClusterState | None = self._load()

    # -- state ------------------------------------------------------------------------
    def _load(self) -> ClusterState | None:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        nodes = [Node(**n) for n in data.pop("nodes")]
        return ClusterState(**data, nodes=nodes)

    def _save(self) -> None:
        assert self.state is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self.state), indent=2))
        os.replace(tmp, self.state_dir / STATE_FILE)

    def node(self, name: str) -> Node:
        """The recorded node called ``name``."""
        for n in self.require_state().nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in {self.state_dir / STATE_FILE}")

    def require_state(self) -> ClusterState:
        """The recorded cluster; a clear error when none was started."""
        if self.state is None:
            raise RuntimeError(f"no cluster recorded in {self.state_dir}; run `start` first")
        return self.state

    # -- nodes ------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float]) -> Node:
        cmd = [
            self.ray_bin, "start", "--block", f"--num-cpus={num_cpus}", "--disable-usage-stats",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            # Every agent of a node binds its own free port: two agents on one port never register.
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            # 0/0: each worker process binds a random free port, so nodes never collide.
            "--min-worker-port=0", "--max-worker-port=0",
            *args,
        ]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        log_file = self.state_dir / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            # Its own session: the node is one process group, killed as one (a machine failure).
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started %s (pid %d, %d CPUs, resources %s); log %s", name, proc.pid, num_cpus, resources, log_file)
        return Node(name=name, pid=proc.pid, num_cpus=num_cpus, resources=resources, log_file=str(log_file))

    def start(self, head_cpus: int = 1, head_resources: dict[str, float] | None = None,
              timeout_s: float = 120) -> ClusterState:
        """Starts the head node and waits until its job API answers.

        Args:
            head_cpus: logical CPUs the head offers (0 keeps work off the head).
            head_resources: custom resources of the head.
            timeout_s: how long to wait for the head.
        Returns:
            the recorded cluster state.
        """
        if self.state is not None and self.alive_nodes():
            raise RuntimeError(f"a cluster recorded in {self.state_dir} is still running; stop it first")
        gcs, dash = free_port(), free_port()
        # Short and unique: Ray's unix sockets live below it and their paths must stay < 108 bytes.
        temp_dir = tempfile.mkdtemp(prefix="srcl", dir="/tmp")
        self.state = ClusterState(gcs_address=f"127.0.0.1:{gcs}", dashboard_url=f"http://127.0.0.1:{dash}",
                                  temp_dir=temp_dir)
        head = self._spawn("head", [
            "--head", f"--port={gcs}", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
        ], head_cpus, dict(head_resources or {}))
        self.state.nodes.append(head)
        self._save()
        head.node_id = self.wait_for_nodes(1, timeout_s)[0]["node_id"]
        self._save()
        return self.state

    def add_worker(self, num_cpus: int = 1, resources: dict[str, float] | None = None, name: str | None = None,
                   wait: bool = True, timeout_s: float = 120) -> Node:
        """Starts one more worker node joined to the head.

        Args:
            num_cpus: logical CPUs the node offers.
            resources: custom resources; ``{WORKER_RESOURCE: 1}`` is always added.
            name: the node's name; default ``worker-<n>``.
            wait: wait until the head counts the node as alive.
            timeout_s: how long to wait.
        Returns:
            the recorded node.
        """
        state = self.require_state()
        name = name or f"worker-{sum(n.name.startswith('worker-') for n in state.nodes) + 1}"
        if any(n.name == name for n in state.nodes):
            raise ValueError(f"a node called {name!r} is already recorded")
        res = {WORKER_RESOURCE: 1.0, **(resources or {})}
        before = {n["node_id"] for n in self.ray_nodes()}
        node = self._spawn(name, [f"--address={state.gcs_address}"], num_cpus, res)
        state.nodes.append(node)
        self._save()
        if wait:
            deadline = time.time() + timeout_s
            while not node.node_id:
                joined = [n for n in self.wait_for_nodes(1, max(1.0, deadline - time.time()))
                          if n["node_id"] not in before]
                if joined:
                    node.node_id = joined[0]["node_id"]
                elif time.time() > deadline:
                    raise TimeoutError(f"{name} did not join in {timeout_s:g} s; see {node.log_file}")
                else:
                    time.sleep(1)
            self._save()
        return node

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Ends node ``name``'s whole process group at once, as a machine failure would."""
        node = self.node(name)
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            pass
        log.info("killed %s (process group %d) with signal %d", name, node.pid, sig)

    def stop(self, grace_s: float = 20) -> None:
        """Stops every recorded node (SIGTERM, then SIGKILL after ``grace_s``) and forgets them."""
        if self.state is None:
            return
        for node in reversed(self.state.nodes):  # workers first, the head last
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        for node in self.state.nodes:
            while _process_group_alive(node.pid) and time.time() < deadline:
                time.sleep(0.2)
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.state.temp_dir, ignore_errors=True)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        self.state = None

    # -- status -----------------------------------------------------------------------
    def alive_nodes(self) -> list[Node]:
        """The recorded nodes whose process group still runs."""
        return [n for n in (self.state.nodes if self.state else []) if _process_group_alive(n.pid)]

    def _state_api(self, resource: str, query: str = "") -> list[dict[str, Any]]:
        url = f"{self.require_state().dashboard_url}/api/v0/{resource}?limit=10000&detail=1{query}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.loads(resp.read())
        return body["data"]["result"]["result"]

    def ray_nodes(self) -> list[dict[str, Any]]:
        """Ray's node table as the head's state API reports it (alive and dead nodes)."""
        return self._state_api("nodes")

    def actors(self, class_name: str) -> list[dict[str, Any]]:
        """Every actor of ``class_name`` the cluster has run (alive and dead), with its ``node_id``."""
        return self._state_api("actors", f"&filter_keys=class_name&filter_predicates=%3D&filter_values={class_name}")

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> list[dict[str, Any]]:
        """Waits until the head counts ``count`` alive nodes; fails early if a node process exits."""
        deadline = time.time() + timeout_s
        last_error = ""
        while time.time() < deadline:
            dead = [n.name for n in self.require_state().nodes[-1:] if not _process_group_alive(n.pid)]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while starting; see {self.node(dead[0]).log_file}")
            try:
                alive = [n for n in self.ray_nodes() if n["state"] == "ALIVE"]
                if len(alive) >= count:
                    return alive
                last_error = f"{len(alive)} of {count} nodes alive"
            except OSError as exc:  # the dashboard is not up yet
                last_error = str(exc)
            time.sleep(1)
        raise TimeoutError(f"the cluster did not reach {count} alive nodes in {timeout_s:g} s ({last_error})")


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_cluster.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("SYNTHRAY_CLUSTER_DIR", "/tmp/synthray-cluster"),
                        help="where the cluster state and node logs live")
    parser.add_argument("--ray-bin", default=None, help="the ray executable (default: beside this Python)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start a head and worker nodes")
    p.add_argument("--head-cpus", type=int, default=1)
    p.add_argument("--head-resources", type=json.loads, default={}, help='JSON, e.g. \'{"train_slot": 1}\'')
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker-cpus", type=int, default=1)
    p.add_argument("--worker-resources", type=json.loads, default={}, help='JSON, e.g. \'{"train_slot": 1}\'')
    p.add_argument("--object-store-mb", type=int, default=512)
    p = sub.add_parser("add-worker", help="join one more worker node")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--resources", type=json.loads, default={})
    p.add_argument("--name", default=None)
    p = sub.add_parser("kill-worker", help="kill a node's process group (SIGKILL), as a machine failure")
    p.add_argument("name")
    sub.add_parser("status", help="print the recorded nodes and Ray's node table as JSON")
    sub.add_parser("stop", help="stop every recorded node")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cluster = LocalCluster(args.state_dir, ray_bin=args.ray_bin,
                           object_store_mb=getattr(args, "object_store_mb", 512))
    try:
        return _run(cluster, args)
    except (RuntimeError, KeyError, ValueError, TimeoutError) as exc:
        log.error("%s", exc)
        return 1


def _run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    if args.cmd == "start":
        cluster.start(head_cpus=args.head_cpus, head_resources=args.head_resources)
        for _ in range(args.workers):
            cluster.add_worker(args.worker_cpus, args.worker_resources)
        state = cluster.require_state()
        sys.stdout.write(f"dashboard / job API: {state.dashboard_url}\nGCS address: {state.gcs_address}\n"
                         f"ray job submit --address {state.dashboard_url} --working-dir . -- python ...\n")
    elif args.cmd == "add-worker":
        node = cluster.add_worker(args.cpus, args.resources, name=args.name)
        sys.stdout.write(f"{node.name} joined (pid {node.pid})\n")
    elif args.cmd == "kill-worker":
        cluster.kill_node(args.name)
    elif args.cmd == "status":
        state = cluster.require_state()
        sys.stdout.write(json.dumps({"recorded": dataclasses.asdict(state),
                                     "alive_processes": [n.name for n in cluster.alive_nodes()],
                                     "ray_nodes": [{k: n.get(k) for k in ("node_id", "state", "resources_total")}
                                                   for n in cluster.ray_nodes()]}, indent=2) + "\n")
    elif args.cmd == "stop":
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
