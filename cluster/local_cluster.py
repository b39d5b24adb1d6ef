"""A local multi-node Ray cluster on one machine: a head and worker nodes, each its own
``ray start --block`` process group with its own resources.

    python cluster/local_cluster.py start --workers 2 --worker-cpus 2 [--netns]
    python cluster/local_cluster.py add-worker --cpus 1 --resources '{"big_mem": 1}'
    python cluster/local_cluster.py status
    python cluster/local_cluster.py kill-worker worker-1      # a node failure, for drills
    python cluster/local_cluster.py stop

What a real cluster of several machines looks like, on one: jobs submitted to the head
(``ray job submit --address <the job API address start prints>``) are scheduled across the
nodes, and a node can be killed to see Ray Train recover. Every port each node binds is
chosen free (agents, metrics, object and node managers; workers bind random ports), so
several nodes and other Ray instances coexist on the machine. With ``--netns`` (root and
iproute2 needed) each node runs in its own network namespace with its own address on a
bridge, so nodes talk over a network as separate machines do. The state (addresses,
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
import secrets
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
NETNS_LINK = "eth0"  # a node's network link inside its namespace


@dataclasses.dataclass
class Node:
    """One ``ray start --block`` process group."""

    name: str  # "head", "worker-1", ...
    pid: int  # the ray start process; its process group holds the raylet and its workers
    num_cpus: int  # logical CPUs the node offers
    resources: dict[str, float]  # custom resources the node offers
    log_file: str  # ray start's stdout and stderr
    node_id: str = ""  # Ray's id of the node once it joined ("" while starting)
    netns: str = ""  # its network namespace ("" = the machine's own network)
    ip: str = ""  # its address in the namespace's network ("" = Ray's choice, the machine's)


@dataclasses.dataclass
class ClusterState:
    """What ``start`` recorded, enough for ``add-worker``, ``kill-worker`` and ``stop``."""

    gcs_address: str  # <head ip>:<port>, for ray start --address and ray.init(address=...)
    dashboard_url: str  # http://<head ip>:<port>, for ray job submit --address
    temp_dir: str  # Ray's session files and sockets (short: socket paths must stay < 108 bytes)
    nodes: list[Node] = dataclasses.field(default_factory=list)
    netns_tag: str = ""  # prefix of this cluster's namespaces and links ("" = no namespaces)
    subnet: str = ""  # the namespaces' /24 network, e.g. "10.231.7" (the bridge is .1)


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
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",  # ray start would otherwise turn token auth on for a local cluster
            "RAY_USAGE_STATS_ENABLED": "0",
            # A stopped node exits at once instead of waiting for its tasks to drain.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
    )
    env.update(extra or {})
    return env


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _ip_quiet(*args: str) -> None:
    """An ``ip`` command whose failure does not matter (removing what may be gone already)."""
    subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def netns_available() -> bool:
    """Whether this process may make network namespaces joined by a bridge (root, iproute2)."""
    probe = f"srp{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
        _ip("link", "add", f"{probe}b", "type", "bridge")
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        _ip_quiet("link", "del", f"{probe}b")
        _ip_quiet("netns", "del", probe)


def _free_subnet() -> str:
    """A 10.231.x.0/24 network no interface of this machine uses yet."""
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, timeout=30).stdout
    for _ in range(100):
        subnet = f"10.231.{secrets.randbelow(256)}"
        if f"inet {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.231.x.0/24 network for the namespaces")


class LocalCluster:
    """Starts, extends and stops a local multi-node cluster recorded in ``state_dir``.

    Args:
        state_dir: where the state file and the nodes' logs go.
        ray_bin: the ``ray`` executable; default: the one beside this Python, else on PATH.
        env: extra environment variables for every node.
        object_store_mb: object store size per node (Ray's default takes 30% of RAM per node).
        netns: run each node started from here on in its own network namespace.
    """

    def __init__(
        self,
        state_dir: str | Path,
        ray_bin: str | None = None,
        env: dict[str, str] | None = None,
        object_store_mb: int = 512,
        netns: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        beside = Path(sys.executable).parent / "ray"
        self.ray_bin = ray_bin or (str(beside) if beside.exists() else shutil.which("ray") or "ray")
        self.env = ray_env(env)
        # The job's `python` must be the one that has ray and synthray installed.
        self.env["PATH"] = f"{Path(self.ray_bin).parent}:{self.env.get('PATH', '')}"
        self.object_store_mb = object_store_mb
        self.netns = netns
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
    def _make_netns(self, index: int) -> tuple[str, str]:
        """Node ``index``'s namespace, joined to the cluster's bridge by a veth pair: (name, ip)."""
        state = self.require_state()
        tag = state.netns_tag
        # Inside its namespace the node's link is eth0, as on a machine of its own.
        ns, host_end, ns_end, ip = f"{tag}n{index}", f"{tag}v{index}", NETNS_LINK, f"{state.subnet}.{index + 2}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
        _ip("link", "set", host_end, "master", f"{tag}b")
        _ip("link", "set", host_end, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", ns_end)
        _ip("-n", ns, "link", "set", ns_end, "up")
        return ns, ip

    def _spawn(
        self, name: str, args: list[str], num_cpus: int, resources: dict[str, float]
    ) -> tuple[Node, subprocess.Popen]:
        state = self.require_state()
        ns, ip = self._make_netns(len(state.nodes)) if state.netns_tag else ("", "")
        cmd = [
            *(["ip", "netns", "exec", ns] if ns else []),
            self.ray_bin,
            "start",
            "--block",
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            # Every agent of a node binds its own free port: two agents on one port never register.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            # 0/0: each worker process binds a random free port, so nodes never collide.
            "--min-worker-port=0",
            "--max-worker-port=0",
            *args,
        ]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        if ip:
            cmd.append(f"--node-ip-address={ip}")
        env = dict(self.env)
        if ns:
            # Gloo (DDP on CPU) takes its address from the hostname, which may resolve to
            # loopback, and one namespace's loopback is not another's: name the link.
            env["GLOO_SOCKET_IFNAME"] = NETNS_LINK
        log_file = self.state_dir / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            # Its own session: the node is one process group, killed as one (a machine failure).
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started %s (pid %d, %d CPUs, resources %s); log %s", name, proc.pid, num_cpus, resources, log_file)
        node = Node(
            name=name, pid=proc.pid, num_cpus=num_cpus, resources=resources, log_file=str(log_file), netns=ns, ip=ip
        )
        return node, proc

    def start(
        self, head_cpus: int = 1, head_resources: dict[str, float] | None = None, timeout_s: float = 120
    ) -> ClusterState:
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
        tag, subnet, head_ip = "", "", "127.0.0.1"
        if self.netns:
            tag, subnet = f"sr{secrets.token_hex(2)}", _free_subnet()
            head_ip = f"{subnet}.2"  # node 0's address (see _make_netns)
            _ip("link", "add", f"{tag}b", "type", "bridge")
            _ip("addr", "add", f"{subnet}.1/24", "dev", f"{tag}b")  # this machine's side: job API, CLI
            _ip("link", "set", f"{tag}b", "up")
        self.state = ClusterState(
            gcs_address=f"{head_ip}:{gcs}",
            dashboard_url=f"http://{head_ip}:{dash}",
            temp_dir=temp_dir,
            netns_tag=tag,
            subnet=subnet,
        )
        self._save()
        self._launch(
            "head",
            [
                "--head",
                f"--port={gcs}",
                f"--dashboard-port={dash}",
                f"--dashboard-host={head_ip}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp_dir}",
            ],
            head_cpus,
            dict(head_resources or {}),
            timeout_s,
        )
        return self.state

    def add_worker(
        self,
        num_cpus: int = 1,
        resources: dict[str, float] | None = None,
        name: str | None = None,
        timeout_s: float = 120,
    ) -> Node:
        """Starts one more worker node joined to the head and waits until it has joined.

        Args:
            num_cpus: logical CPUs the node offers.
            resources: custom resources; ``{WORKER_RESOURCE: 1}`` is always added.
            name: the node's name; default ``worker-<n>``.
            timeout_s: how long to wait for one start attempt.
        Returns:
            the recorded node.
        """
        state = self.require_state()
        name = name or f"worker-{sum(n.name.startswith('worker-') for n in state.nodes) + 1}"
        if any(n.name == name for n in state.nodes):
            raise ValueError(f"a node called {name!r} is already recorded")
        res = {WORKER_RESOURCE: 1.0, **(resources or {})}
        return self._launch(name, [f"--address={state.gcs_address}"], num_cpus, res, timeout_s)

    def _launch(
        self,
        name: str,
        args: list[str],
        num_cpus: int,
        resources: dict[str, float],
        timeout_s: float,
        attempts: int = 3,
    ) -> Node:
        """Starts a node and waits until Ray counts it alive, recording its node id.

        ``ray start`` gives a node 30 s to register and its raylet 15 s to hear from its
        agents; on a machine loaded by other work that is sometimes too little, and the
        start fails. Such a node is cleaned up and started again (``attempts`` in all).
        """
        state = self.require_state()
        for attempt in range(1, attempts + 1):
            before = {n["node_id"] for n in self.ray_nodes()} if state.nodes else set()
            node, proc = self._spawn(name, args, num_cpus, resources)
            state.nodes.append(node)
            self._save()
            deadline = time.time() + timeout_s
            while not node.node_id and proc.poll() is None and time.time() < deadline:
                try:
                    joined = [n for n in self.ray_nodes() if n["state"] == "ALIVE" and n["node_id"] not in before]
                except OSError:  # the head's API is not up yet
                    joined = []
                if joined:
                    node.node_id = joined[0]["node_id"]
                else:
                    time.sleep(1)
            if node.node_id:
                self._save()
                return node
            why = "exited while starting" if proc.poll() is not None else f"did not join in {timeout_s:g} s"
            self._forget(node)
            if attempt == attempts:
                raise RuntimeError(f"{name} {why} ({attempts} attempts); see {node.log_file}")
            log.warning("%s %s; starting it again (%d/%d)", name, why, attempt + 1, attempts)
        raise AssertionError("unreachable")

    def _forget(self, node: Node) -> None:
        """Ends a node that failed to start and removes it (and its namespace) from the record."""
        state = self.require_state()
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        index = state.nodes.index(node)
        if node.netns:
            _ip_quiet("netns", "del", node.netns)
            _ip_quiet("link", "del", f"{state.netns_tag}v{index}")
        state.nodes.remove(node)
        self._save()

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
        if self.state.netns_tag:
            for i, node in enumerate(self.state.nodes):
                _ip_quiet("netns", "del", node.netns)
                _ip_quiet("link", "del", f"{self.state.netns_tag}v{i}")
            _ip_quiet("link", "del", f"{self.state.netns_tag}b")
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
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("SYNTHRAY_CLUSTER_DIR", "/tmp/synthray-cluster"),
        help="where the cluster state and node logs live",
    )
    parser.add_argument("--ray-bin", default=None, help="the ray executable (default: beside this Python)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start a head and worker nodes")
    p.add_argument("--head-cpus", type=int, default=1)
    p.add_argument("--head-resources", type=json.loads, default={}, help="JSON, e.g. '{\"train_slot\": 1}'")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker-cpus", type=int, default=1)
    p.add_argument("--worker-resources", type=json.loads, default={}, help="JSON, e.g. '{\"train_slot\": 1}'")
    p.add_argument("--object-store-mb", type=int, default=512)
    p.add_argument("--netns", action="store_true", help="each node in its own network namespace (root)")
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

    cluster = LocalCluster(
        args.state_dir,
        ray_bin=args.ray_bin,
        object_store_mb=getattr(args, "object_store_mb", 512),
        netns=getattr(args, "netns", False),
    )
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
        sys.stdout.write(
            f"dashboard / job API: {state.dashboard_url}\nGCS address: {state.gcs_address}\n"
            f"ray job submit --address {state.dashboard_url} --working-dir . -- python ...\n"
        )
    elif args.cmd == "add-worker":
        node = cluster.add_worker(args.cpus, args.resources, name=args.name)
        sys.stdout.write(f"{node.name} joined (pid {node.pid})\n")
    elif args.cmd == "kill-worker":
        cluster.kill_node(args.name)
    elif args.cmd == "status":
        state = cluster.require_state()
        sys.stdout.write(
            json.dumps(
                {
                    "recorded": dataclasses.asdict(state),
                    "alive_processes": [n.name for n in cluster.alive_nodes()],
                    "ray_nodes": [
                        {k: n.get(k) for k in ("node_id", "state", "resources_total")} for n in cluster.ray_nodes()
                    ],
                },
                indent=2,
            )
            + "\n"
        )
    elif args.cmd == "stop":
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
