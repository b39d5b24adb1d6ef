"""benchmarks/gpu_check.py, the GPU measurement script, in its CPU smoke mode: every measure
runs end to end (both backbones, training, model-only and JPEG-bytes embedding) and the rows
come out as a table and JSON. The GPU figures themselves need the lent GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.timeout(600)
def test_gpu_check_runs_in_cpu_smoke_mode(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    measures = {(r["measure"], r["backbone"]) for r in result["rows"]}
    assert measures == {
        (m, b) for m in ("train", "embed_model", "embed_jpeg") for b in ("efficientnet_b0", "tf_efficientnet_lite0")
    }
    assert all(r["img_s"] > 0 for r in result["rows"])
    assert result["info"]["device"] == "cpu" and result["cuda_tests"] == "skipped"
    assert "| train | efficientnet_b0 |" in proc.stdout  # the table people read


def test_gpu_check_refuses_to_measure_a_gpu_it_does_not_have():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full check runs instead")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--no-tests"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr
