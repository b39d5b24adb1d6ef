"""The cluster start-up files, checked offline: the `ray up` config validates as Ray's
launcher reads it and has a GPU worker type; the Dockerfile builds on the Ray image of
the Ray this package pins and copies what the jobs, configs and Serve app need; the local
cluster script's CLI fails clearly without a cluster."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGE_ROOT = "/home/ray/synthray"  # the k8s manifests and configs/cluster use this path too
RAY_IMAGE = f"rayproject/ray:{ray.__version__}-py311"


def _launcher_config() -> dict:
    return yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())


def _validate_launcher(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before launching
    validate_config(prepared)
    return prepared


def test_ray_up_config_validates_and_has_a_gpu_worker_type():
    config = _validate_launcher(_launcher_config())
    types = config["available_node_types"]
    gpu = [name for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(types[name]["max_workers"] >= 1 for name in gpu)
    # Images: Ray's own, of the pinned Ray and Python 3.11; the GPU variant on GPU nodes.
    assert config["docker"]["image"] == f"{RAY_IMAGE}-cpu"
    for name in gpu:
        assert types[name]["docker"]["worker_image"] == f"{RAY_IMAGE}-gpu"
    # The checkout lands where the image and the k8s manifests keep it, and is installed.
    assert config["file_mounts"] == {IMAGE_ROOT: "."}
    assert any(f"cd {IMAGE_ROOT} && pip install" in c for c in config["setup_commands"])
    # The shared volume the cluster configs write to is mounted on the hosts and in containers.
    train = yaml.safe_load((REPO / "configs" / "cluster" / "train-gpu.yaml").read_text())
    assert train["run_dir"].startswith("/data/") and "-v /data:/data" in config["docker"]["run_options"]
    assert any("/data" in c for c in config["initialization_commands"])

    misspelt = _launcher_config()
    misspelt["available_node_types"]["gpu_worker"]["max_worker"] = 4
    with pytest.raises(Exception, match="max_worker"):
        _validate_launcher(misspelt)


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_dockerfile_builds_on_the_pinned_ray_image_and_copies_what_jobs_need():
    text = _dockerfile()
    assert re.search(rf"^ARG RAY_IMAGE={re.escape(RAY_IMAGE)}-cpu$", text, re.M)
    assert f"RAY_IMAGE={RAY_IMAGE}-gpu" in text  # the documented GPU build
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", text, re.M)
    assert re.search(rf"^WORKDIR {IMAGE_ROOT}$", text, re.M)
    assert re.search(rf"^ENV PYTHONPATH={IMAGE_ROOT}$", text, re.M)  # serve.app imports from there

    copied = set()
    for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            copied.add(src.rstrip("/"))
    assert {"synthray", "jobs", "configs", "serve", "pyproject.toml"} <= copied
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert ".venv" in ignored and not ignored & copied

    # torch and torchvision as pyproject.toml pins them (the CPU or CUDA build of the same version).
    pins = re.findall(r'^\s*"((?:torch|torchvision)==[^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert len(pins) == 2, pins
    for pin in pins:
        assert re.search(rf"\s{re.escape(pin)}(\s|$)", text), f"the Dockerfile does not install {pin}"


def test_local_cluster_cli_without_a_cluster(tmp_path):
    script = REPO / "cluster" / "local_cluster.py"
    run = [sys.executable, str(script), "--state-dir", str(tmp_path / "none")]
    stopped = subprocess.run([*run, "stop"], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr  # nothing recorded: nothing to stop
    status = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode != 0 and "run `start` first" in status.stderr
    bad = subprocess.run([*run, "add-worker", "--resources", "{not json"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--resources" in bad.stderr
