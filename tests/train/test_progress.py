"""Training progress: step lines with an ETA from rank 0, and a driver following them from
the run folder (what the demo shows while Ray's worker output goes to files)."""

from __future__ import annotations

import json
import logging
import time

from synthray.train.progress import StepProgress, describe, following


def test_step_lines_carry_rate_and_eta_and_epochs_their_metrics(tmp_path, caplog):
    file = tmp_path / "progress.jsonl"
    progress = StepProgress(total_steps=10, epochs=2, first_step=0, file=file, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="synthray.train.progress"):
        for step in range(1, 6):
            time.sleep(0.01)
            progress.step(step, epoch=0, loss=3.0 - 0.1 * step, images=32)
        progress.epoch(
            {
                "epoch": 0,
                "step": 5,
                "train_loss": 2.7,
                "val_loss": 2.9,
                "val_knn_acc": 0.41,
                "train_images_per_s": 900.0,
                "model_version": "abc",
            }
        )
    records = [json.loads(line) for line in file.read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [2, 3, 4, 5]  # the clock starts after the first (start-up) step
    last = steps[-1]
    # 5 of 10 steps done: the ETA is about the time spent so far, and the rate counts every image
    assert last["total_steps"] == 10 and last["eta_s"] > 0 and last["images_per_s"] > 0
    assert "step 5/10 (epoch 1/2)" in caplog.text and "ETA" in caplog.text
    assert records[-1]["kind"] == "epoch" and "val_knn_acc 0.410" in describe(records[-1])
    assert "model abc" in caplog.text


def test_steps_are_reported_at_most_every_interval(tmp_path):
    file = tmp_path / "progress.jsonl"
    progress = StepProgress(total_steps=1000, epochs=1, file=file, every_s=3600.0)
    for step in range(1, 200):
        progress.step(step, epoch=0, loss=1.0, images=8)
    assert file.read_text() == ""  # nothing due yet: no line per step


def test_a_long_run_spaces_its_lines_to_keep_a_screenful(tmp_path):
    progress = StepProgress(total_steps=10_000, epochs=1, file=tmp_path / "p.jsonl", every_s=0.0, max_lines=20)
    progress.step(1, epoch=0, loss=1.0, images=8)
    time.sleep(0.05)
    progress.step(2, epoch=0, loss=1.0, images=8)  # 0.05 s a step, 9,998 to go: about 500 s in all
    assert 20 <= progress.every_s <= 60  # a line every ~25 s (500 s / 20), not at every step


def test_a_resumed_run_counts_its_rate_from_where_it_started(tmp_path):
    file = tmp_path / "progress.jsonl"
    file.write_text('{"kind": "step", "step": 1}\n')  # an earlier attempt's record
    progress = StepProgress(total_steps=100, epochs=2, first_step=50, file=file, every_s=0.0)
    time.sleep(0.5)  # the first step of an attempt carries its start-up: not in the rate
    progress.step(51, epoch=1, loss=1.0, images=8)
    time.sleep(0.02)
    progress.step(52, epoch=1, loss=1.0, images=8)
    records = [json.loads(line) for line in file.read_text().splitlines()]
    assert [r["step"] for r in records] == [52]  # the file starts again with this attempt
    # one step timed in this attempt, 48 to go: about 48 x 0.02 s, not 100 x, nor start-up-sized
    assert 48 * 0.015 < records[0]["eta_s"] < 48 * 0.5


def test_following_logs_what_a_worker_appends_and_what_is_left_at_the_end(tmp_path, caplog):
    file = tmp_path / "progress.jsonl"
    rec = {
        "kind": "step",
        "step": 3,
        "total_steps": 9,
        "epoch": 0,
        "epochs": 3,
        "loss": 2.5,
        "images_per_s": 40.0,
        "eta_s": 75.0,
    }
    with caplog.at_level(logging.INFO, logger="synthray.train.progress"):
        with following(file, interval_s=0.05):
            time.sleep(0.1)  # the file does not exist yet: nothing to show, no error
            with open(file, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.write(json.dumps({**rec, "step": 6})[:20])  # a line still being written
            time.sleep(0.2)
            assert "train: step 3/9 (epoch 1/3): loss 2.5000, 40 img/s, ETA 1m15s" in caplog.text
            assert "step 6/9" not in caplog.text
            with open(file, "a") as fh:
                fh.write(json.dumps({**rec, "step": 6})[20:] + "\n")
        # the block ended: the rest is read once more before it returns
        assert "step 6/9" in caplog.text
    assert caplog.text.count("step 3/9") == 1  # each record once
