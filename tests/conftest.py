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
    ingest(
        "folder",
        root,
        shards,
        from_dict(
            IngestConfig,
            {"use_ray": False, "max_rows_per_shard": 100, "split": {"val_fraction": 0.2, "test_fraction": 0.2}},
        ),
    )
    cfg = from_dict(
        TrainConfig,
        {
            "shards": str(shards),
            "run_dir": str(tmp_path_factory.mktemp("tiny_model_run")),
            "run_name": "tiny",
            "epochs": 3,
            "batch_size": 20,
            "lr": 0.003,
            "warmup_epochs": 0.2,
            "steps_per_epoch": 10,
            "val_batches": 2,
            "knn_k": 5,
            "knn_val_per_class": 10,
            "seed": 0,
            "experiment": {"setting": "ES4", "held_out": held_out},
            "encoder": {"backbone": "resnet10t", "embedding_dim": 32, "head_hidden_dim": 64},
            "preprocess": {"resolution": 32, "device": "cpu"},
            "pipeline": {"batch_size": 32, "samples_per_class": 4, "shuffle_buffer": 64},
        },
    )
    result = fit_local(cfg)
    return types.SimpleNamespace(
        root=root,
        shards=shards,
        checkpoint=result["checkpoint"],
        classes=result["classes"],
        held_out=held_out,
        metrics=result["metrics"],
        train_config=cfg,
    )


def untrained_checkpoint(train_config, classes, folder) -> str:
    """A checkpoint of the same encoder as ``train_config`` builds, never trained: the baseline
    every quality bar is measured against in the same test."""
    import torch

    from synthray.config import to_dict
    from synthray.models import build_encoder
    from synthray.train.checkpoint import save_checkpoint

    torch.manual_seed(train_config.seed)
    model = build_encoder(train_config.encoder)
    meta = {"config": to_dict(train_config), "classes": list(classes), "metrics": {}, "epoch": -1, "step": 0}
    save_checkpoint(folder, model, {"epoch": -1, "step": 0}, meta)
    return str(folder)


@pytest.fixture(scope="session")
def untrained_model(tiny_model, tmp_path_factory):
    """The tiny model's encoder at its start (random init), same classes: the baseline."""
    import types

    folder = tmp_path_factory.mktemp("untrained_model") / "checkpoint"
    return types.SimpleNamespace(
        checkpoint=untrained_checkpoint(tiny_model.train_config, tiny_model.classes, folder),
        classes=tiny_model.classes,
        shards=tiny_model.shards,
        held_out=tiny_model.held_out,
    )


def measure_service(model, store_dir, per_class: int = 20) -> dict:
    """What the service answers on the test split for ``model`` (an index built without Ray):
    seen generators named, real specificity, held-out flagged / called real, is-AI AUROC."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    from synthray.attribution import Attributor, Embedder
    from synthray.config import IndexConfig, from_dict
    from synthray.data.pipeline import find_shards
    from synthray.index import open_store
    from synthray.index.build import build_index

    cfg = from_dict(
        IndexConfig,
        {
            "checkpoint": str(model.checkpoint),
            "shards": str(model.shards),
            "per_class": per_class,
            "batch_size": 32,
            "device": "cpu",
            "store": {"path": str(store_dir)},
        },
    )
    build_index(cfg, use_ray=False)
    table = pa.concat_tables([pq.read_table(f) for f in find_shards(model.shards)])
    test = table.filter(pc.equal(table["split"], "test"))
    emb = Embedder(model.checkpoint, device="cpu")
    out: dict = {}
    with open_store(cfg.store, emb.model_version, emb.dim, create=False) as store:
        att = Attributor(emb, store)
        res = {
            c: att.attribute_bytes(test.filter(pc.equal(test["generator"], c))["image"].to_pylist())
            for c in [*model.classes, *model.held_out]
        }
    seen = [(c, a) for c in model.classes if c != "real" for a in res[c]]
    real = res["real"]
    held = [a for c in model.held_out for a in res[c]]
    out["seen_named"] = float(np.mean([a.label == c for c, a in seen]))
    out["real_specificity"] = float(np.mean([a.label == "real" for a in real]))
    out["held_out_flagged"] = float(np.mean([a.is_ai for a in held]))
    out["held_out_called_real"] = float(np.mean([a.label == "real" for a in held]))
    fakes = [a for _, a in seen] + held
    out["auc"] = float(roc_auc_score([0] * len(real) + [1] * len(fakes), [a.is_ai_score for a in real + fakes]))
    out["held_out_auc"] = float(roc_auc_score([0] * len(real) + [1] * len(held), [a.is_ai_score for a in real + held]))
    return {k: round(v, 3) for k, v in out.items()}
