"""Where an index build embeds: in this process or on Ray Data's actor pool, and with how many
actors (one per GPU, or per CPU but one)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Up to this many CPUs on one GPU-less node, embedding in the driver beats Ray Data's actor
#: pool (benchmarks/RESULTS.md, 2 cores: the pool ran at 0.10x the in-process loop, its
#: actors and the driver competing for the same cores while torch already uses them all).
LOCAL_MAX_CPUS = 4


def ray_pays_off(nodes: int, cpus: float, gpus: float) -> tuple[bool, str]:
    """Whether embedding on Ray is worth it on a cluster of this size, and why.

    Ray spreads the work over nodes and GPUs; on one small CPU-only node it only adds
    processes that compete for the cores torch already uses, so the driver does it alone.
    """
    if gpus > 0:
        return True, f"{gpus:g} GPU(s): Ray Data's actors embed on them"
    if nodes > 1:
        return True, f"{nodes} nodes: Ray Data spreads the embedding over them"
    if cpus > LOCAL_MAX_CPUS:
        return True, f"{cpus:g} CPUs on one node: Ray Data's actors decode and embed in parallel"
    return False, (
        f"one CPU-only node with {cpus:g} CPUs: embedding in this process is faster than Ray Data's actor "
        "pool there (benchmarks/RESULTS.md); use_ray=True uses Ray anyway"
    )


def choose_ray(use_ray: bool | None) -> bool:
    """``use_ray`` when given; otherwise (None) decided by :func:`ray_pays_off` on the
    connected Ray cluster, or on this machine when Ray is not initialized. Logs the choice."""
    if use_ray is not None:
        return use_ray
    try:
        import ray

        if ray.is_initialized():
            total = ray.cluster_resources()
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            choice, why = ray_pays_off(nodes, total.get("CPU", 0.0), total.get("GPU", 0.0))
        else:
            import os

            import torch

            choice, why = ray_pays_off(1, os.cpu_count() or 1, torch.cuda.device_count())
    except ImportError:
        choice, why = False, "Ray is not installed"
    log.info("index: embedding %s: %s", "on Ray" if choice else "in this process", why)
    return choice


def actor_plan(device: str, num_actors: int | None) -> tuple[int, bool]:
    """(embedding actors, whether each takes a GPU) for the connected Ray cluster.

    One actor per GPU where the cluster has GPUs; on CPU, one per CPU but one, so a CPU
    stays free for the Parquet read tasks that feed them (an actor pool holding every
    CPU starves its own readers: a deadlock on a 2-core machine).

    Raises:
        ValueError: ``device="cuda"`` on a cluster without GPUs.
    """
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if device.startswith("cuda") and gpus == 0:
        raise ValueError("index.device='cuda' but the Ray cluster has no GPU")
    use_gpu = gpus > 0 and device != "cpu"
    default = gpus if use_gpu else max(1, int(res.get("CPU", 1)) - 1)
    return (num_actors or default), use_gpu
