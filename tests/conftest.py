"""Shared fixtures: one local Ray cluster for the whole session, stopped at the end."""

from __future__ import annotations

import os

import pytest

# Keep Ray quiet and small on the 2-core CI machine; nothing here reaches the network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs; tests that need Ray take this fixture."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):
        try:
            ray.init(
                address="local",  # always a fresh cluster of our own, never one a developer left running
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=512 * 1024 * 1024,
            )
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
            # Ray waits a fixed 30 s for the raylet to register; on a heavily loaded machine
            # that can run out. Another try usually succeeds; anything else is re-raised.
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            ray.shutdown()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny encoder trained in one process (no Ray) on texture classes, "dots" held out.

    Shared by the index, evaluation, serve and demo tests: built once per session. Fields:
    ``root`` (the image tree, plain-folder layout), ``shards``, ``checkpoint`` (a checkpoint
    folder), ``classes`` (trained), ``held_out`` (["dots"]).
    """
    import types

    from synthray.config import IngestConfig, TrainConfig, from_dict
    from synthray.data.ingest import ingest
    from synthray.train.local import fit_local
    from tests.textures import write_textures

    classes = ["real", "stripes", "checks", "rings", "diagonals"]
    held_out = ["dots"]
    root = write_textures(tmp_path_factory.mktemp("tiny_model_images"), classes + held_out, per_class=100, seed=1)
    shards = tmp_path_factory.mktemp("tiny_model_shards")
    ingest("folder", root, shards, from_dict(IngestConfig, {
        "use_ray": False, "max_rows_per_shard": 100, "split": {"val_fraction": 0.2, "test_fraction": 0.2}}))
    cfg = from_dict(TrainConfig, {
        "shards": str(shards), "run_dir": str(tmp_path_factory.mktemp("tiny_model_run")), "run_name": "tiny",
        "epochs": 3, "batch_size": 20, "lr": 0.003, "warmup_epochs": 0.2, "steps_per_epoch": 10,
        "val_batches": 2, "knn_k": 5, "knn_val_per_class": 10, "seed": 0,
        "experiment": {"setting": "ES4", "held_out": held_out},
        "encoder": {"backbone": "resnet10t", "embedding_dim": 32, "head_hidden_dim": 64},
        "preprocess": {"resolution": 32, "device": "cpu"},
        "pipeline": {"batch_size": 32, "samples_per_class": 4, "shuffle_buffer": 64},
    })
    result = fit_local(cfg)
    return types.SimpleNamespace(root=root, shards=shards, checkpoint=result["checkpoint"],
                                 classes=result["classes"], held_out=held_out, metrics=result["metrics"],
                                 train_config=cfg)
