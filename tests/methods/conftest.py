"""Tiny texture shards (one class held out) and a fit context every method trains on in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthray.config import ExperimentConfig, IngestConfig, PipelineConfig, PreprocessConfig, from_dict
from synthray.data.ingest import ingest
from synthray.methods.base import FitContext
from tests.textures import write_textures

SEEN = ["real", "checks", "rings", "stripes"]
HELD_OUT = ["dots"]
#: Settings that make every registered method train in a few CPU seconds at 32 px.
TINY = {
    "backbone": "resnet10t",
    "steps": 2,
    "batch_size": 16,
    "steps_per_epoch": 2,
    "embedding_dim": 16,
    "ae_steps": 2,
    "ae_latent_dim": 64,
    "rotation_steps": 2,
    "classifier_config": {"epochs": 2, "hidden": 16},
    "log_every": 0,
}
PREPROCESS = {"resolution": 32, "device": "cpu"}
PIPELINE = {"batch_size": 32, "samples_per_class": 4, "shuffle_buffer": 64}


@pytest.fixture(scope="session")
def method_shards(tmp_path_factory) -> Path:
    root = write_textures(tmp_path_factory.mktemp("method_textures"), SEEN + HELD_OUT, per_class=24, seed=3)
    out = tmp_path_factory.mktemp("method_shards")
    ingest(
        "folder",
        root,
        out,
        from_dict(
            IngestConfig,
            {"use_ray": False, "max_rows_per_shard": 200, "split": {"val_fraction": 0.2, "test_fraction": 0.25}},
        ),
    )
    return out


@pytest.fixture(scope="module")
def fit_context(method_shards, tmp_path_factory) -> FitContext:
    """Shared by a module's tests, so methods with the same encoder settings train it once."""
    return FitContext(
        shards=str(method_shards),
        classes=SEEN,
        held_out=HELD_OUT,
        experiment=ExperimentConfig(setting="ES4", held_out=tuple(HELD_OUT)),
        preprocess=from_dict(PreprocessConfig, PREPROCESS),
        pipeline=from_dict(PipelineConfig, PIPELINE),
        device=torch.device("cpu"),
        work_dir=tmp_path_factory.mktemp("method_work"),
        seed=0,
    )
