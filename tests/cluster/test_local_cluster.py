"""A 2-node Ray cluster on this machine (head and worker as separate ``ray start``
process groups, started by ``cluster/local_cluster.py``) runs a distributed training job
with one Train worker on each node; the worker node is killed mid-run, a replacement node
joins, and the job resumes from its last checkpoint and completes: every epoch in the
run's metrics exactly once, with steps continuing from the checkpoint.

Where this process may make network namespaces (root with iproute2, as on the project's
machines), every node runs in its own, with its own address on a bridge: the nodes then
reach each other over a network, as separate machines do. Elsewhere they share the
machine's network (the same test, one address for all nodes)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from cluster.local_cluster import WORKER_RESOURCE, LocalCluster, netns_available
from synthray.config import to_dict
from tests.train.conftest import checkpoint_registered, texture_shards, tiny_train_config  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 2  # epoch 0, the node failure, epoch 1 resumed from its checkpoint
SLOT = {"train_slot": 1}
# Generous: on a quiet 2-core machine an epoch takes well under a minute, but every Ray
# worker process imports torch, and a loaded machine stretches that many times over.
DEADLINE_S = 600

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]


def _epochs(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def _submit(client, entrypoint: str, deadline_s: float = 180) -> str:
    deadline = time.time() + deadline_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO)})
        except RuntimeError as exc:
            # The job API answers before the head's job agent has registered; Ray says so.
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def test_training_spans_two_nodes_and_survives_losing_the_worker_node(texture_shards, tmp_path):  # noqa: F811
    from ray.job_submission import JobStatus, JobSubmissionClient

    # One Train worker per node: each node offers one "train_slot" and each worker needs it.
    # Half a CPU per Train worker; Ray Data gets one CPU, which must be whole on one node
    # (its file listing task takes a full CPU), hence 2 CPUs on the head.
    cfg = tiny_train_config(
        texture_shards,
        tmp_path / "runs",
        epochs=EPOCHS,
        num_workers=2,
        cpus_per_worker=0.5,
        worker_resources=SLOT,
        data_cpus=1,
        batch_size=8,
        steps_per_epoch=6,
        max_failures=2,
        pipeline__samples_per_class=2,
    )
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    run = tmp_path / "runs" / cfg.run_name
    metrics = run / "metrics.jsonl"

    netns = netns_available()
    logging.getLogger(__name__).info("nodes in their own network namespaces: %s", netns)
    cluster = LocalCluster(tmp_path / "cluster", object_store_mb=256, netns=netns)
    try:
        cluster.start(head_cpus=2, head_resources=SLOT)
        first = cluster.add_worker(num_cpus=1, resources=SLOT)
        head = cluster.node("head")
        nodes = {n["node_id"]: n for n in cluster.ray_nodes()}
        assert WORKER_RESOURCE in nodes[first.node_id]["resources_total"]
        if netns:  # two hosts on one network, as Ray sees them
            assert [nodes[head.node_id]["node_ip"], nodes[first.node_id]["node_ip"]] == [head.ip, first.ip]
            assert head.ip != first.ip

        client = JobSubmissionClient(cluster.state.dashboard_url)
        job = _submit(client, f"python jobs/train_supcon.py --config {cfg_file}")

        # A node failure mid-run: once epoch 0 is reported and its checkpoint registered,
        # the worker node's whole process group dies; a fresh node joins so both fit again.
        deadline = time.time() + DEADLINE_S
        while not checkpoint_registered(run):  # registered implies reported
            assert not client.get_job_status(job).is_terminal(), client.get_job_logs(job)[-4000:]
            assert time.time() < deadline, "no checkpoint registered in time:\n" + client.get_job_logs(job)[-4000:]
            time.sleep(0.5)
        train_nodes_before = {a["node_id"] for a in cluster.actors("RayTrainWorker")}
        cluster.kill_node(first.name)
        replacement = cluster.add_worker(num_cpus=1, resources=SLOT, name="worker-2")

        deadline = time.time() + DEADLINE_S
        while not client.get_job_status(job).is_terminal():
            assert time.time() < deadline, "the job did not finish in time:\n" + client.get_job_logs(job)[-4000:]
            time.sleep(1)
        logs = client.get_job_logs(job)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-4000:]

        # Both nodes ran a Train worker before the failure; after it, head and replacement.
        assert train_nodes_before == {head.node_id, first.node_id}
        train_nodes = {a["node_id"] for a in cluster.actors("RayTrainWorker")}
        assert replacement.node_id in train_nodes
        assert next(n for n in cluster.ray_nodes() if n["node_id"] == first.node_id)["state"] == "DEAD"
    finally:
        cluster.stop()

    # Resumed from the last checkpoint: Ray Train's restart found epoch >= 0 done.
    assert "resumed from epoch 0" in logs, logs[-4000:]
    history = _epochs(metrics)
    assert [rec["epoch"] for rec in history] == list(range(EPOCHS))  # none lost, none repeated
    assert [rec["resumed_from_epoch"] for rec in history] == [None, 0]
    steps = history[0]["epoch_steps"]
    assert [rec["step"] for rec in history] == [steps * (e + 1) for e in range(EPOCHS)]  # continued, not restarted
    assert history[-1]["train_loss"] < history[0]["train_loss"]
