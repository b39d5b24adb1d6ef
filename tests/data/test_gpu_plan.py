"""The GPU resource plan, on CPUs: where Ray Data preprocesses when the cluster has GPUs, and
a stream that finishes while Train-like actors hold every GPU of a declared-GPU cluster
(``ray.init(num_gpus=2)`` declares GPUs without having them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from synthray.config import PipelineConfig, PreprocessConfig
from synthray.data.pipeline import preprocess_plan

GPUS = {"CPU": 2.0, "GPU": 2.0}


def test_ray_data_takes_gpus_only_within_its_budget():
    auto = PreprocessConfig(device="auto")
    plan = preprocess_plan(auto, PipelineConfig(), GPUS)
    assert (plan.on_gpu, plan.workers, plan.gpus_per_worker) == (True, 2, 1.0)  # a cluster of its own
    plan = preprocess_plan(auto, PipelineConfig(gpu_budget=0, cpu_budget=1.0), GPUS)
    assert (plan.on_gpu, plan.workers) == (False, 1)  # Train holds the GPUs: decode on the CPU budget
    plan = preprocess_plan(auto, PipelineConfig(gpu_budget=0.5), GPUS)
    assert (plan.workers, plan.gpus_per_worker) == (1, 0.5)  # a share of one GPU
    assert not preprocess_plan(auto, PipelineConfig(), {"CPU": 2.0}).on_gpu
    assert not preprocess_plan(PreprocessConfig(device="cpu"), PipelineConfig(), GPUS).on_gpu
    with pytest.raises(ValueError, match="gpu_budget is 0"):
        preprocess_plan(PreprocessConfig(device="cuda"), PipelineConfig(gpu_budget=0), GPUS)


def test_training_leaves_ray_data_no_gpu():
    from synthray.config import TrainConfig
    from synthray.train.ray_trainer import data_pipeline

    on_gpus = data_pipeline(TrainConfig(use_gpu=True), 1.0)
    assert (on_gpus.gpu_budget, on_gpus.cpu_budget) == (0, 1.0)
    assert not preprocess_plan(PreprocessConfig(device="auto"), on_gpus, GPUS).on_gpu
    assert data_pipeline(TrainConfig(use_gpu=False), 1.0).gpu_budget is None


SCRIPT = textwrap.dedent("""
    import sys, ray
    from synthray.config import PipelineConfig, PreprocessConfig
    from synthray.data.pipeline import build_dataset, preprocess_plan
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_gpus=1, num_cpus=0)
    class TrainWorker:  # holds a GPU as a Ray Train worker would
        def ready(self):
            return True

    workers = [TrainWorker.remote() for _ in range(2)]
    ray.get([w.ready.remote() for w in workers])
    pre = PreprocessConfig(device="auto", resolution=32)
    pipe = PipelineConfig(gpu_budget=0, cpu_budget=1.0, num_cpus_per_task=1.0, batch_size=16)
    assert preprocess_plan(pre, PipelineConfig(), ray.cluster_resources()).on_gpu  # the old default
    ds = build_dataset(sys.argv[1], sys.argv[2].split(","), pre, pipe, split="train")
    rows = sum(len(b["label"]) for b in ds.iter_batches(batch_size=16, batch_format="numpy"))
    print("ROWS", rows)
    ray.shutdown()
""")


@pytest.mark.timeout(300)
def test_a_stream_finishes_while_train_workers_hold_every_gpu(tiny_model):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model.shards), ",".join(tiny_model.classes)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**__import__("os").environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = int(proc.stdout.split("ROWS")[1].split()[0])
    assert rows > 0
