"""The training loop in one process (no Ray): it learns, checkpoints, resumes, refuses bad configs."""

from __future__ import annotations

import json
import logging

import pytest

from synthray.train.local import checkpoint_folders, fit_local
from synthray.train.checkpoint import load_checkpoint
from tests.train.conftest import tiny_train_config


def _history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_local_training_learns_checkpoints_and_resumes(texture_shards, tmp_path, caplog, record_property):
    cfg = tiny_train_config(texture_shards, tmp_path, epochs=3)
    out = fit_local(cfg)
    run = tmp_path / "supcon"
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert [h["resumed_from_epoch"] for h in hist] == [None, None, None]
    record_property("val_knn_acc", [h["val_knn_acc"] for h in hist])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_knn_acc"] >= 0.6 and hist[-1]["val_knn_acc"] > 1 / 4 + 0.2  # chance is 0.25
    ckpt = load_checkpoint(out["checkpoint"])
    assert ckpt["meta"]["classes"] == out["classes"] == ["real", "checks", "rings", "stripes"]
    assert ckpt["meta"]["model_version"] == hist[-1]["model_version"]
    assert ckpt["state"]["step"] == 3 * hist[0]["epoch_steps"]
    # progress: rank 0's epoch records in the run folder, and the curves drawn from them
    progress = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in progress if r["kind"] == "epoch"] == [0, 1, 2]
    assert out["curves"] == str(run / "training_curves.png") and (run / "training_curves.png").stat().st_size > 0

    # Started again with more epochs: it continues at epoch 3 with the same step count.
    cfg.epochs = 4
    fit_local(cfg)
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[3]["step"] == hist[2]["step"] + hist[3]["epoch_steps"]
    assert hist[3]["resumed_from_epoch"] == 2
    assert "resumed from epoch 2" in caplog.text

    # A corrupt newest checkpoint: resume falls back to the previous good one and says so.
    newest = checkpoint_folders(run)[-1]
    (newest / "model.pt").write_bytes(b"not a checkpoint")
    cfg.epochs = 5
    with caplog.at_level(logging.WARNING):
        fit_local(cfg)
    assert "falling back to the previous one" in caplog.text
    hist = _history(run)
    assert hist[-1]["epoch"] == 4 and hist[-2]["epoch"] == 3  # epoch 3 redone from epoch 2's checkpoint


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"encoder__backbone": "efficientnet_b99"}, "unknown timm backbone"),
        ({"encoder__name": "clip"}, "unknown encoder"),
        ({"experiment__setting": "ES3", "experiment__generator": "Midjourney"}, "not in the data"),
        ({"experiment__setting": "custom", "experiment__classes": ["rings"]}, "at least two"),
        ({"batch_size": 6}, "no positive pairs"),
        ({"batch_size": 4000, "steps_per_epoch": None}, "cannot fill one batch"),
    ],
)
def test_bad_configs_fail_before_any_work(texture_shards, tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        fit_local(tiny_train_config(texture_shards, tmp_path, **overrides))
    assert not (tmp_path / "supcon").exists()  # nothing was started


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthray ingest"):
        fit_local(tiny_train_config(tmp_path / "nowhere", tmp_path))
