"""Class-balanced batching against a brute-force account of every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthray.data.balanced import BalancedBatcher


def _stream(labels, chunk=16):
    ids = np.arange(len(labels))
    for i in range(0, len(labels), chunk):
        yield {
            "label": np.asarray(labels[i : i + chunk]),
            "id": ids[i : i + chunk],
            "x": np.ones((len(ids[i : i + chunk]), 2, 2), np.float32),
        }


def test_balanced_batches_cover_every_row_once():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 600)
    b = BalancedBatcher(batch_size=24, num_classes=6, samples_per_class=4, seed=0)
    batches = list(b(_stream(labels)))
    ids = np.concatenate([x["id"] for x in batches])
    assert sorted(ids.tolist()) == list(range(600))  # nothing lost, nothing duplicated
    for x in batches[:-3]:
        assert len(x["label"]) == 24 and x["x"].shape == (24, 2, 2)
        assert np.bincount(x["label"], minlength=6).tolist() == [4] * 6
        assert np.array_equal(labels[x["id"]], x["label"])  # columns stay aligned


def test_classes_per_batch_and_remainder():
    labels = np.tile(np.arange(10), 50)
    b = BalancedBatcher(batch_size=30, num_classes=10, samples_per_class=4, classes_per_batch=7, seed=1)
    for x in list(b(_stream(labels)))[:5]:
        counts = np.bincount(x["label"], minlength=10)
        assert len(x["label"]) == 30
        assert (counts > 0).sum() >= 7 and counts.max() <= 5


def test_mildly_imbalanced_stream_still_gives_positives_for_every_class():
    # "real" twice as common as each generator; strong imbalance is the pipeline's
    # downsampling's job (see test_pipeline), the batcher absorbs what is left.
    rng = np.random.default_rng(2)
    labels = rng.permutation(np.concatenate([np.zeros(200, int), np.repeat(np.arange(1, 5), 100)]))
    b = BalancedBatcher(batch_size=20, num_classes=5, samples_per_class=4, seed=0)
    batches = list(b(_stream(labels)))
    for x in batches[:20]:
        counts = np.bincount(x["label"], minlength=5)
        assert counts.min() >= 2, counts  # every class has a positive pair for most of the epoch


def test_class_sorted_stream_is_forced_out_not_stalled(caplog):
    labels = np.repeat(np.arange(4), 200)  # worst case: no mixing at all
    b = BalancedBatcher(batch_size=16, num_classes=4, samples_per_class=4, max_buffer=64, seed=0)
    batches = list(b(_stream(labels)))
    assert sum(len(x["label"]) for x in batches) == 800
    assert b.forced_batches > 0
    assert "not class-mixed" in caplog.text


def test_drop_last_and_torch_columns():
    labels = np.tile(np.arange(3), 11)  # 33 rows
    stream = (
        {"label": torch.as_tensor(labels[i : i + 8]), "v": torch.ones(len(labels[i : i + 8]), 3)}
        for i in range(0, 33, 8)
    )
    batches = list(BalancedBatcher(batch_size=12, num_classes=3, samples_per_class=4, drop_last=True)(stream))
    assert [len(x["label"]) for x in batches] == [12, 12]
    assert isinstance(batches[0]["v"], torch.Tensor) and batches[0]["v"].shape == (12, 3)


def test_bad_arguments():
    with pytest.raises(ValueError):
        BalancedBatcher(batch_size=4, num_classes=3, samples_per_class=8)
    with pytest.raises(ValueError):
        BalancedBatcher(batch_size=8, num_classes=3, samples_per_class=2, classes_per_batch=5)
    with pytest.raises(ValueError):
        list(BalancedBatcher(batch_size=4, num_classes=2)(iter([{"label": np.array([0, 7])}])))
