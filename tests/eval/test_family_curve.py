"""The family curve end to end on a tiny benchmark: one training per count, same steps, the
held-out families scored on unseen photographs; an interrupted curve goes on where it stopped."""

from __future__ import annotations

import json

import pytest

from synthray.config import IngestConfig, SynthbenchConfig, TrainConfig, from_dict
from synthray.data.ingest import ingest
from synthray.data.synthbench import build_synthbench
from synthray.eval import family_curve as fc


@pytest.fixture(scope="module")
def bench_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve_bench")
    build_synthbench(
        root / "bench",
        SynthbenchConfig(
            per_class=20,
            real_per_class=40,
            resolution=32,
            train_steps=2,
            families=("tconv", "nearest_conv", "bilinear_conv", "proc_0000", "vq_vae"),
        ),
        num_workers=2,
    )
    ingest("folder", root / "bench", root / "shards", from_dict(IngestConfig, {"use_ray": False}))
    return root / "shards"


def test_choose_families_nests_and_respects_held_out():
    pool = ["real", "a", "b", "c", "d", "held"]
    three = fc.choose_families(pool, ("held",), 3, seed=0)
    assert len(three) == 3 and "held" not in three and "real" not in three
    assert fc.choose_families(pool, ("held",), 2, seed=0) == three[:2]  # a larger count adds families
    with pytest.raises(ValueError, match="available"):
        fc.choose_families(pool, ("held",), 5, seed=0)


def test_curve_trains_each_count_with_the_same_steps_and_resumes(bench_shards, tmp_path, monkeypatch):
    train = from_dict(
        TrainConfig,
        {
            "batch_size": 12,
            "lr": 0.003,
            "val_batches": 1,
            "knn_k": 3,
            "knn_val_per_class": 4,
            "encoder": {"backbone": "resnet10t", "embedding_dim": 16, "head_hidden_dim": 32},
            "preprocess": {"resolution": 32, "device": "cpu"},
            "pipeline": {"batch_size": 16, "samples_per_class": 3, "pairs": True},
        },
    )
    cfg = fc.FamilyCurveConfig(
        shards=str(bench_shards),
        out=str(tmp_path / "curve"),
        counts=(1, 3),
        held_out=("vq_vae",),
        steps=6,
        per_class=5,
        max_test_per_class=8,
        train=train,
    )
    curve = fc.family_curve(cfg)
    points = curve["points"]
    assert [p["families"] for p in points] == [1, 3] and curve["held_out"] == ["vq_vae"]
    assert points[0]["trained_on"] == points[1]["trained_on"][:1]
    for p in points:
        assert 0 <= p["auroc"] <= 1 and 0 <= p["tpr_at_5pct_fpr"] <= 1 and "vq_vae" in p["per_family"]
        history = [
            json.loads(line)
            for line in (tmp_path / "curve" / f"n{p['families']:03d}" / "train" / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        assert history[-1]["step"] == p["steps"] == 6  # the same steps at every count
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 1000
    assert "| 3 |" in (tmp_path / "curve" / "curve.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr("synthray.train.local.fit_local", no_training)
    assert fc.family_curve(cfg)["points"] == points
