"""A small data set a tiny encoder can learn in a few CPU steps, ingested once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthray.config import IngestConfig, TrainConfig, from_dict
from synthray.data.ingest import ingest
from tests.textures import write_textures

CLASSES = ["real", "stripes", "checks", "rings"]


@pytest.fixture(scope="session")
def texture_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textures")
    write_textures(root, CLASSES, per_class=60, seed=0)
    out = tmp_path_factory.mktemp("texture_shards")
    # A quarter to validation: the kNN accuracy needs a dozen queries per class.
    cfg = from_dict(
        IngestConfig,
        {"use_ray": False, "max_rows_per_shard": 60, "split": {"val_fraction": 0.25, "test_fraction": 0.1}},
    )
    ingest("folder", root, out, cfg)
    return out


def tiny_train_config(shards: Path, run_dir: Path, **overrides) -> TrainConfig:
    """A config that trains a small timm backbone at 32 px in seconds per epoch."""
    data = {
        "shards": str(shards),
        "run_dir": str(run_dir),
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.003,
        "warmup_epochs": 0.2,
        "steps_per_epoch": 8,
        "val_batches": 4,
        "knn_k": 5,
        "knn_val_per_class": 12,
        "encoder": {"backbone": "resnet10t", "embedding_dim": 32, "head_hidden_dim": 64},
        "preprocess": {"resolution": 32, "device": "cpu"},
        "pipeline": {"batch_size": 32, "samples_per_class": 4, "shuffle_buffer": 64},
    }
    for key, value in overrides.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(TrainConfig, data)


def checkpoint_registered(run: Path) -> bool:
    """Whether Ray Train's controller has taken a checkpoint in. A worker's
    ``ray.train.report`` returns once the checkpoint is uploaded and queued; the controller
    polls the queue later and only then records the checkpoint in this snapshot. A node
    killed in between takes the queued report with it, and the restart rightly begins
    from scratch (metrics.jsonl stays exact either way): a test of resuming kills only
    after this. The file name is Ray Train's (v2 ``CHECKPOINT_MANAGER_SNAPSHOT_FILENAME``)."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    snapshot = run / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return False
