"""The Ray Data pipeline on a real local cluster: shards in, balanced float batches out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from synthray.config import AugmentConfig, IngestConfig, PipelineConfig, PreprocessConfig
from synthray.data.ingest import ingest
from synthray.data.pipeline import (
    PreprocessBatch,
    balance_rates,
    build_dataset,
    class_counts,
    find_shards,
    iter_balanced_batches,
)
from synthray.data.stream_check import stream_summary
from tests.data.imagetrees import write_image


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """An imbalanced plain-folder tree (real is 3x each generator) ingested to 3 shards."""
    root = tmp_path_factory.mktemp("tree")
    sizes = {"real": 60, "gan-a": 20, "gan-b": 20, "diff-c": 20}
    seed = 0
    for label, n in sizes.items():
        for i in range(n):
            # Varied sizes and both codecs: the pipeline must bring all to one shape.
            write_image(
                root / label / f"{i:03d}{'.png' if i % 2 else '.jpg'}", size=(24 + i % 17, 30 + i % 11), seed=seed
            )
            seed += 1
    out = tmp_path_factory.mktemp("shards")
    cfg = IngestConfig(use_ray=False, max_rows_per_shard=45)
    manifest = ingest("folder", root, out, cfg)
    assert manifest["total_rows"] == 120 and len(manifest["shards"]) == 3
    return out


def test_class_counts_and_shard_discovery(shards):
    assert len(find_shards(shards)) == 3
    counts = class_counts(shards)
    assert counts == {"real": 60, "gan-a": 20, "gan-b": 20, "diff-c": 20}
    assert (
        sum(class_counts(shards, "train").values())
        + sum(class_counts(shards, "val").values())
        + sum(class_counts(shards, "test").values())
        == 120
    )
    with pytest.raises(FileNotFoundError):
        find_shards(shards / "nope")


def test_preprocess_batch_without_ray(shards):
    table = pq.read_table(find_shards(shards)[0])
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in ("image", "generator", "content_hash")}
    names = ["real", "gan-a", "gan-b", "diff-c"]
    out = PreprocessBatch(PreprocessConfig(resolution=16, device="cpu"), names)(batch)
    # uint8 crosses the object store; the float conversion is the consumer's.
    assert out["image"].shape == (len(batch["image"]), 3, 16, 16) and out["image"].dtype == np.uint8
    assert [names[i] for i in out["label"]] == list(batch["generator"])
    with pytest.raises(ValueError, match="not in class list"):
        PreprocessBatch(PreprocessConfig(resolution=16, device="cpu"), ["real"])(batch)


def test_balance_rates():
    assert balance_rates({"real": 60, "a": 20}, ["real", "a"]) == {"real": 1 / 3, "a": 1.0}
    with pytest.raises(ValueError, match="no rows"):
        balance_rates({"real": 60}, ["real", "a"])


def test_ray_pipeline_batches(ray_cluster, shards):
    names = ["real", "gan-a", "gan-b", "diff-c"]
    pre = PreprocessConfig(
        resolution=20, device="cpu", augment=[AugmentConfig("hflip", p=0.5), AugmentConfig("jpeg", p=0.5)]
    )
    pipe = PipelineConfig(batch_size=16, cpu_budget=1, balance="none")
    ds = build_dataset(shards, names, pre, pipe, split=None, shuffle_seed=0)
    rows = ds.take_all()
    assert len(rows) == 120
    assert {r["image"].shape for r in rows} == {(3, 20, 20)} and {r["image"].dtype for r in rows} == {np.dtype("uint8")}
    assert sorted(r["source_path"] for r in rows) == sorted(
        pq.read_table(find_shards(shards), columns=["source_path"]).column(0).to_pylist()
    )

    # A class subset and one split: rows of other classes never come out.
    only = build_dataset(shards, ["gan-a", "gan-b"], pre, pipe, split="train").take_all()
    assert {r["generator"] for r in only} == {"gan-a", "gan-b"} and {r["split"] for r in only} == {"train"}
    assert len(only) == class_counts(shards, "train")["gan-a"] + class_counts(shards, "train")["gan-b"]


def test_ray_balanced_downsampled_epoch(ray_cluster, shards):
    names = ["real", "gan-a", "gan-b", "diff-c"]
    pipe = PipelineConfig(batch_size=16, cpu_budget=1, samples_per_class=2, balance="downsample")
    pre = PreprocessConfig(resolution=16, device="cpu")
    epochs = []
    for epoch in range(2):
        ds = build_dataset(shards, names, pre, pipe, split=None, shuffle_seed=epoch)
        batches = list(iter_balanced_batches(ds, len(names), batch_size=8, pipeline=pipe, seed=epoch, drop_last=False))
        labels = np.concatenate([b["label"] for b in batches])
        counts = np.bincount(labels, minlength=4)
        # real (60 rows) is cut to about the size of each generator (20 rows).
        assert 10 <= counts[0] <= 32 and counts[1:].tolist() == [20, 20, 20], counts
        for b in batches[:-2]:
            assert b["image"].shape == (8, 3, 16, 16) and len(set(b["label"].tolist())) == 4
            assert b["image"].dtype == torch.float32 and 0 <= b["image"].min() and b["image"].max() <= 1
        epochs.append(set(np.concatenate([b["content_hash"] for b in batches])))
    assert epochs[0] != epochs[1]  # each epoch sees another subset of real


def test_stream_summary(ray_cluster, shards):
    pipe = PipelineConfig(batch_size=16, cpu_budget=1, samples_per_class=2)
    summary = stream_summary(shards, PreprocessConfig(resolution=16, device="cpu"), pipe, batch_size=8, split=None)
    assert summary["image_shape"] == [3, 16, 16] and summary["dtype"] == "float32"
    assert 0 <= summary["value_range"][0] <= summary["value_range"][1] <= 1
    assert summary["full_batch_classes_min"] >= 3 and summary["rows_streamed"] > 60
    with pytest.raises(ValueError, match="two classes"):
        stream_summary(shards, PreprocessConfig(resolution=16), pipe, 8, split=None, class_names=["real"])


def test_local_loader_matches_ray_pixels(ray_cluster, shards):
    """Without Ray the same rows come out with the same pixels (the core runs alone)."""
    from synthray.data.loader import iter_balanced_local, iter_preprocessed

    names = ["real", "gan-a", "gan-b", "diff-c"]
    pre = PreprocessConfig(resolution=16, device="cpu")
    pipe = PipelineConfig(batch_size=16, cpu_budget=1, balance="none")
    local = {
        h: img
        for b in iter_preprocessed(shards, names, pre, pipe, split="val", seed=3)
        for h, img in zip(b["content_hash"], b["image"])
    }
    assert all(img.dtype == np.uint8 for img in local.values())
    remote = {r["content_hash"]: r["image"] for r in build_dataset(shards, names, pre, pipe, split="val").take_all()}
    assert local.keys() == remote.keys() and len(local) == sum(class_counts(shards, "val").values())
    for h in local:
        assert np.array_equal(local[h], remote[h])

    pipe = PipelineConfig(batch_size=16, samples_per_class=2, balance="downsample")
    batches = list(iter_balanced_local(shards, names, 8, pre, pipe, split=None, seed=0))
    assert all(b["image"].shape == (8, 3, 16, 16) and b["image"].dtype == torch.float32 for b in batches)
    counts = np.bincount(np.concatenate([b["label"] for b in batches]), minlength=4)
    assert counts[0] <= 32 and min(counts[1:]) >= 16, counts
