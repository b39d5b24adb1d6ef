"""The comparison harness end to end, through the `synthray compare` command."""

from __future__ import annotations

import json

import pytest
import yaml

from synthray.cli import main
from synthray.methods.compare import COLUMNS, CompareConfig, load_compare_config
from tests.methods.conftest import HELD_OUT, PIPELINE, PREPROCESS, TINY


def test_compare_writes_table_json_and_figures(method_shards, tmp_path, capsys):
    out = tmp_path / "cmp"
    config = tmp_path / "compare.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "compare": {
                    "shards": str(method_shards),
                    "out": str(out),
                    "experiment": {"setting": "ES4", "held_out": HELD_OUT},
                    "overrides": TINY,
                    "preprocess": PREPROCESS,
                    "pipeline": PIPELINE,
                    "test_per_class": 4,
                    "explain": {"images": 2, "lime": {"n_segments": 8, "n_samples": 20}},
                    "methods": [
                        "small_cnn",
                        "supcon_centroid",
                        {"name": "small_cnn", "label": "broken", "params": {"head": "ternary"}},
                    ],
                }
            }
        )
    )
    assert main(["compare", "--config", str(config), "--set", "seed=1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in printed["rows"]] == ["small_cnn", "supcon_centroid", "broken"]

    result = json.loads((out / "compare.json").read_text())
    assert result["classes"] == {"seen": ["real", "checks", "rings", "stripes"], "zero_shot": HELD_OUT}
    assert result["config"]["seed"] == 1
    rows = {r["method"]: r for r in result["rows"]}
    assert "unknown head" in rows["broken"]["error"]  # reported; the others still ran
    for name in ("small_cnn", "supcon_centroid"):
        r = rows[name]
        assert r["n_test"] == 20 and r["train_s"] > 0 and r["infer_img_s"] > 0 and r["params"] > 0
        assert 0 <= r["acc"] <= 1 and 0 <= r["acc_zero_shot"] <= 1
        assert len(r["explained_scores"]) == 2
    assert rows["small_cnn"]["f1_seen"] is None and rows["supcon_centroid"]["f1_zero_shot"] is not None

    table = (out / "compare.md").read_text().splitlines()
    assert table[0].count("|") == len(COLUMNS) + 3 and "F1 zero-shot" in table[0]
    assert sum(line.startswith("| ") for line in table) == 4  # header + 3 rows
    assert any(line.startswith("| broken | failed") for line in table)
    assert result["n_real_test"] == 4 and "scores acc 0.800 (4 of the 20 test images are real)" in "\n".join(table)
    for fig in ("compare.png", "explanations.png"):
        assert (out / fig).stat().st_size > 1000

    # Run again: unchanged methods keep their rows (same measured train seconds) and the
    # figure is redrawn from their saved maps; the failed one is tried again.
    (out / "explanations.png").unlink()
    maps = out / "work" / "explanations"
    saved = {n: (maps / f"{n}.npz").stat().st_mtime_ns for n in ("small_cnn", "supcon_centroid")}
    assert main(["compare", "--config", str(config), "--set", "seed=1"]) == 0
    again = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    for name in ("small_cnn", "supcon_centroid"):
        assert again[name] == rows[name]
    assert "unknown head" in again["broken"]["error"]
    assert (out / "explanations.png").stat().st_size > 1000
    for name, mtime in saved.items():  # reused, not re-run: their maps were not written again
        assert (maps / f"{name}.npz").stat().st_mtime_ns == mtime
    # A run that reuses every row still writes them all (the last written row was once a reused one).
    assert main(["compare", "--config", str(config), "--set", "seed=1", "--methods", "small_cnn,supcon_centroid"]) == 0
    reused = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in reused["rows"]] == ["small_cnn", "supcon_centroid"] and reused["complete"]
    assert {r["method"]: r for r in reused["rows"]} == {n: rows[n] for n in ("small_cnn", "supcon_centroid")}
    assert "broken" not in (out / "compare.md").read_text()
    # Another seed is another experiment: nothing is reused, every method runs (and saves its maps) again.
    for name in saved:
        (maps / f"{name}.npz").unlink()
    assert main(["compare", "--config", str(config), "--set", "seed=2"]) == 0
    assert all((maps / f"{name}.npz").exists() for name in saved)


def test_compare_config_is_checked_before_any_training(method_shards):
    with pytest.raises(ValueError, match="unknown methods"):
        CompareConfig(methods=["no_such_method"])
    with pytest.raises(ValueError, match="appear twice"):
        CompareConfig(methods=["small_cnn", {"name": "small_cnn"}])
    with pytest.raises(TypeError, match="unknown config keys"):
        load_compare_config({"compare": {"methods": ["small_cnn"], "no_such_key": 1}})
    with pytest.raises(ValueError, match="no method"):
        CompareConfig(methods=[])
