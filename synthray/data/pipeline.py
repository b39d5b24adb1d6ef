"""Ray Data streaming: Parquet shards -> preprocessed, class-balanced batches.

Reader -> preprocessing actors (``map_batches`` with
:class:`~synthray.data.batch_preprocess.PreprocessBatch`, one model of the preprocessing
config per actor, on a GPU where the cluster has one) -> the consumer's iterator (local
shuffle, then :class:`~synthray.data.balanced.BalancedBatcher` for training). This module
plans and builds the Ray Dataset and iterates it; what is read is ``shard_reader.py``'s,
the per-batch step ``batch_preprocess.py``'s, class downsampling ``downsample.py``'s, and
the preprocessing itself lives in ``preprocess.py`` and runs without Ray.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pyarrow.fs as pafs

from synthray.config import PipelineConfig, PreprocessConfig
from synthray.data.batch_preprocess import PreprocessBatch, finalize_batch, preprocess_batch
from synthray.data.downsample import downsampling
from synthray.data.pairs import make_batcher
from synthray.data.shard_reader import find_shards, ray_filter, read_columns

# Re-exported: train, eval, index, methods, the demo, the benchmarks and the tests import
# these from here, where they lived before the stream was split by concern.
from synthray.data.downsample import balance_rates as balance_rates
from synthray.data.shard_reader import GROUP as GROUP
from synthray.data.shard_reader import PASSTHROUGH as PASSTHROUGH
from synthray.data.shard_reader import class_counts as class_counts
from synthray.data.shard_reader import real_label_of as real_label_of
from synthray.data.shard_reader import row_filter as row_filter

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class PreprocessPlan:
    """Where Ray Data preprocesses: how many workers, and the GPU share each holds (0 = CPU)."""

    workers: int
    gpus_per_worker: float

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def preprocess_plan(
    preprocess: PreprocessConfig, pipeline: PipelineConfig, resources: Mapping[str, float]
) -> PreprocessPlan:
    """The preprocessing resources for a cluster with ``resources`` (``ray.cluster_resources()``).

    GPU actors only within ``pipeline.gpu_budget``: a GPU every Train worker also asks for
    would leave one side waiting for the other forever.

    Raises:
        ValueError: ``device: cuda`` on a cluster (or budget) without a GPU.
    """
    gpus = float(resources.get("GPU", 0))
    budget = gpus if pipeline.gpu_budget is None else min(float(pipeline.gpu_budget), gpus)
    if preprocess.device.startswith("cuda") and budget <= 0:
        raise ValueError(
            "preprocess.device='cuda' but Ray Data has no GPU: the cluster has none, or "
            "pipeline.gpu_budget is 0 (Train workers hold them)"
        )
    if preprocess.device != "cpu" and budget > 0:
        workers = pipeline.concurrency or max(1, int(budget))
        return PreprocessPlan(workers, min(1.0, budget / workers))
    cpus = pipeline.cpu_budget if pipeline.cpu_budget is not None else float(resources.get("CPU", 1))
    return PreprocessPlan(pipeline.concurrency or max(1, int(cpus // max(pipeline.num_cpus_per_task, 1e-6))), 0.0)


def build_dataset(
    shards: str | Path | Sequence[str | Path],
    class_names: Sequence[str],
    preprocess: PreprocessConfig | None = None,
    pipeline: PipelineConfig | None = None,
    split: str | None = None,
    shuffle_seed: int | None = None,
    sample_seed: int | None | str = "shuffle",
) -> "Any":
    """A lazy Ray Dataset of preprocessed rows.

    Args:
        shards: a folder of Parquet shards or a list of shard files.
        class_names: the classes to keep, in label order (rows of other classes are
            filtered out in the Parquet reader, before their bytes are read).
        preprocess: decode/resize/augment settings.
        pipeline: batch sizes and the CPUs/actors Ray Data may use.
        split: "train" | "val" | "test" | None (all).
        shuffle_seed: when set, the order of shard blocks is randomised with it (per epoch
            shuffling is then the consumer's local shuffle buffer); it also picks which rows
            of the larger classes ``balance="downsample"`` keeps (pass the epoch).
        sample_seed: seed of the downsampling draw; "shuffle" = ``shuffle_seed or 0``; None =
            a fresh draw on every pass over the dataset (Ray Train re-reads it each epoch).
    Returns:
        ``ray.data.Dataset`` with columns image (uint8, N x 3 x R x R: the float conversion
        is :func:`finalize_batch`'s, on the consumer's device), label (int64) and
        :data:`PASSTHROUGH`.
    """
    import ray

    preprocess = preprocess or PreprocessConfig()
    pipeline = pipeline or PipelineConfig()
    if len(class_names) != len(set(class_names)):
        raise ValueError(f"duplicate names in class list {list(class_names)}")
    files = find_shards(shards)
    columns = read_columns(pipeline)
    # One read task per shard: blocks stream into preprocessing as each shard is read
    # (Ray would otherwise merge small shard lists into a few big read tasks).
    ds = ray.data.read_parquet(files, filesystem=pafs.LocalFileSystem(), override_num_blocks=len(files))
    ds = ds.select_columns(columns).filter(expr=ray_filter(split, class_names))
    if pipeline.cpu_budget is not None:
        # Ray Train workers and Ray Data share the same CPUs: without a cap Data's
        # actors take them all and the trainers wait forever. Set on this dataset's own
        # context so other datasets in the process keep theirs.
        opts = ds.context.execution_options
        opts.resource_limits = opts.resource_limits.copy(cpu=pipeline.cpu_budget)
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(seed=shuffle_seed)
    plan = preprocess_plan(preprocess, pipeline, ray.cluster_resources())
    kwargs: dict[str, Any] = {
        "preprocess": preprocess,
        "class_names": list(class_names),
        **downsampling(
            pipeline,
            files,
            split,
            class_names,
            (shuffle_seed or 0) if isinstance(sample_seed, str) else sample_seed,  # "shuffle": the shuffle's seed
        ),
    }
    if plan.on_gpu:
        # GPU decode/resize on a fixed actor pool within the GPU budget; the read tasks keep the CPUs.
        return ds.map_batches(
            PreprocessBatch,
            fn_constructor_kwargs=kwargs,
            batch_size=pipeline.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.workers),
            num_cpus=min(pipeline.num_cpus_per_task, 0.5),
            num_gpus=plan.gpus_per_worker,
        )
    # Decoding on CPUs while a GPU is configured: the worker's own device finishes the batch.
    kwargs["preprocess"] = dataclasses.replace(preprocess, device="cpu")
    # On CPU, tasks rather than actors: Ray Data fuses them with the read (no copy of the
    # encoded bytes between operators), and an actor pool holding every CPU would leave
    # none for the read tasks that feed it (a deadlock on small machines).
    return ds.map_batches(
        preprocess_batch,
        fn_kwargs=kwargs,
        batch_size=pipeline.batch_size,
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=plan.workers),
        num_cpus=pipeline.num_cpus_per_task,
    )


def iter_balanced_batches(
    ds: "Any",
    num_classes: int,
    batch_size: int,
    pipeline: PipelineConfig | None = None,
    seed: int | None = None,
    drop_last: bool = True,
    preprocess: PreprocessConfig | None = None,
    device: "torch.device | str" = "cpu",
    real_label: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Streams a preprocessed dataset (or a Ray Train dataset shard) as balanced batches
    (pair batches when ``pipeline.pairs``).

    Args:
        ds: a ``ray.data.Dataset`` or ``DataIterator`` from :func:`build_dataset`.
        num_classes: classes in the label space.
        batch_size: rows per training batch.
        pipeline: shuffle buffer and balance settings.
        seed: seeds the local shuffle and the batcher's tie-breaks.
        drop_last: drop a final short batch (DDP workers must take equal steps).
        preprocess: the config the dataset was built with (scaling/normalisation);
            None = defaults.
        device: where ``image`` is converted to float (the training device).
        real_label: the real class's label (pair batches group around it); None = not trained.
    Yields:
        dicts of ``batch_size`` rows: ``image`` a float32 torch tensor on ``device``,
        ``label`` int64 numpy, and the passthrough columns.
    """
    preprocess = preprocess or PreprocessConfig()
    pipeline = pipeline or PipelineConfig()
    batcher = make_batcher(pipeline, num_classes, batch_size, real_label, drop_last, seed)
    stream = ds.iter_batches(
        batch_size=pipeline.batch_size,
        batch_format="numpy",
        local_shuffle_buffer_size=pipeline.shuffle_buffer or None,
        local_shuffle_seed=seed,
    )
    for batch in batcher(stream):
        yield finalize_batch(batch, preprocess, device)
