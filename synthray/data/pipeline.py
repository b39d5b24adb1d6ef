"""Ray Data streaming: Parquet shards -> preprocessed, class-balanced batches.

Reader -> preprocessing actors (``map_batches`` with :class:`PreprocessBatch`, one model
of the preprocessing config per actor, on a GPU where the cluster has one) -> the
consumer's iterator (local shuffle, then :class:`~synthray.data.balanced.BalancedBatcher`
for training). The preprocessing itself lives in ``preprocess.py`` and runs without Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from synthray.config import PipelineConfig, PreprocessConfig
from synthray.data.pairs import make_batcher
from synthray.data.schema import REAL
from synthray.data.preprocess import Preprocessor, finalize_pixels
from synthray.data.shards import shard_paths

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Columns carried through preprocessing next to the pixels.
PASSTHROUGH = ("generator", "content_hash", "is_real", "split", "source_path")
#: The source-group column, read only when pair batches ask for it (older shards lack it).
GROUP = "group"


def read_columns(pipeline: PipelineConfig) -> list[str]:
    """The shard columns a pipeline reads."""
    return ["image", *PASSTHROUGH, *((GROUP,) if pipeline.pairs else ())]


def real_label_of(class_names: Sequence[str]) -> int | None:
    """The label index of the real class, or None when it is not among the classes."""
    return list(class_names).index(REAL) if REAL in class_names else None


def find_shards(shards: str | Path | Sequence[str | Path]) -> list[str]:
    """Resolves a shard folder (or an explicit list) to sorted Parquet file paths."""
    if isinstance(shards, (str, Path)):
        root = Path(shards)
        if root.is_file():
            return [str(root)]
        # Only shards with a completion receipt: a leftover of an interrupted ingest is
        # not data yet.
        files = [str(p) for p in shard_paths(root)]
        if not files:
            raise FileNotFoundError(f"no Parquet shards (*.parquet) in {root}; run `synthray ingest` first")
        return files
    files = [str(p) for p in shards]
    if not files:
        raise ValueError("empty shard list")
    return files


def row_filter(split: str | None = None, classes: Sequence[str] | None = None) -> pc.Expression | None:
    """A pyarrow predicate selecting a split and/or generator classes (for plain pyarrow reads)."""
    expr = None
    if split is not None:
        expr = pc.field("split") == split
    if classes is not None:
        cls = pc.field("generator").isin(list(classes))
        expr = cls if expr is None else (expr & cls)
    return expr


def _ray_filter(split: str | None, classes: Sequence[str]) -> "Any":
    """The same predicate as a Ray Data expression; Ray pushes it into the Parquet scan,
    so rows of other splits/classes never have their image bytes read."""
    from ray.data.expressions import col

    expr = col("generator").is_in(list(classes))
    if split is not None:
        expr = (col("split") == split) & expr
    return expr


def class_counts(shards: str | Path | Sequence[str | Path], split: str | None = None) -> dict[str, int]:
    """Rows per generator, read from the label columns only (no image bytes)."""
    dataset = pads.dataset(find_shards(shards), format="parquet")
    table = dataset.to_table(columns=["generator"], filter=row_filter(split))
    counts = table.column("generator").value_counts()
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


class PreprocessBatch:
    """Encoded rows -> uint8 pixels + integer labels, for Ray Data ``map_batches``.

    Used two ways: as a callable class on GPU actors (built once per actor, which keeps one
    CUDA context), and through :func:`preprocess_batch` in CPU tasks, which Ray Data fuses
    with the Parquet read so encoded bytes never cross the object store.

    Args:
        preprocess: the preprocessing config.
        class_names: label order; row ``generator`` values map to their index here.
    """

    def __init__(
        self,
        preprocess: PreprocessConfig,
        class_names: Sequence[str],
        keep_rates: Mapping[str, float] | None = None,
        sample_seed: int | None = 0,
    ) -> None:
        self.pre = Preprocessor(preprocess)
        self.class_index = {name: i for i, name in enumerate(class_names)}
        self.keep_rates = dict(keep_rates or {})
        self.sample_seed = sample_seed

    def _keep_mask(self, batch: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per-class subsampling, decided from the content hash (so the same rows are kept
        whichever worker sees them) and the seed (so each epoch keeps a different subset)."""
        if not self.keep_rates or all(r >= 1.0 for r in self.keep_rates.values()):
            return None
        rates = np.array([self.keep_rates.get(g, 1.0) for g in batch["generator"]])
        if self.sample_seed is None:  # a fresh draw every pass (every epoch of a Ray Train run)
            return np.random.default_rng().random(len(rates)) < rates
        draws = np.array([_unit_hash(h, self.sample_seed) for h in batch["content_hash"]])
        return draws < rates

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = self._keep_mask(batch)
        if keep is not None:
            batch = {k: v[keep] for k, v in batch.items()}
        # uint8 leaves the worker; the float conversion happens where the batch is used.
        pixels = self.pre.prepare(list(batch["image"]))
        out: dict[str, np.ndarray] = {"image": pixels.cpu().numpy()}
        gens = batch["generator"]
        try:
            out["label"] = np.fromiter((self.class_index[g] for g in gens), dtype=np.int64, count=len(gens))
        except KeyError as exc:
            raise ValueError(f"row with generator {exc.args[0]!r} not in class list {list(self.class_index)}") from exc
        for key in (*PASSTHROUGH, GROUP):
            if key in batch:
                out[key] = batch[key]
        return out


# One PreprocessBatch per (config, classes) in each worker process: CPU tasks are
# stateless, and rebuilding the augmentation pipeline per batch would cost more than it does.
_WORKER_CACHE: dict[bytes, PreprocessBatch] = {}


def preprocess_batch(batch: dict[str, np.ndarray], **kwargs: Any) -> dict[str, np.ndarray]:
    """Stateless form of :class:`PreprocessBatch` for CPU tasks (same keyword arguments)."""
    key = pickle.dumps(sorted(kwargs.items()))
    fn = _WORKER_CACHE.get(key)
    if fn is None:
        fn = _WORKER_CACHE[key] = PreprocessBatch(**kwargs)
    return fn(batch)


def _unit_hash(content_hash: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{content_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def downsampling(
    pipeline: PipelineConfig, files: Sequence[str], split: str | None, class_names: Sequence[str], seed: int | None
) -> dict[str, Any]:
    """The :class:`PreprocessBatch` keywords that ``pipeline.balance`` asks for."""
    if pipeline.balance == "none" or pipeline.pairs:  # pair batches are balanced by construction
        return {}
    if pipeline.balance != "downsample":
        raise ValueError(f"unknown pipeline.balance {pipeline.balance!r}; use 'downsample' or 'none'")
    return {"keep_rates": balance_rates(class_counts(files, split), class_names), "sample_seed": seed}


def balance_rates(counts: Mapping[str, int], class_names: Sequence[str]) -> dict[str, float]:
    """Keep rates that bring every class down to the smallest one's size (the thesis
    downsampled GenImage's real images to the per-generator count the same way)."""
    present = {c: counts.get(c, 0) for c in class_names}
    empty = sorted(c for c, n in present.items() if n == 0)
    if empty:
        raise ValueError(f"classes with no rows in this split: {empty}")
    smallest = min(present.values())
    return {c: smallest / n for c, n in present.items()}


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
    ds = ds.select_columns(columns).filter(expr=_ray_filter(split, class_names))
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


def finalize_batch(
    batch: dict[str, Any], preprocess: PreprocessConfig, device: "torch.device | str" = "cpu"
) -> dict[str, Any]:
    """The batch with ``image`` turned into the model's float input on ``device``."""
    out = dict(batch)
    out["image"] = finalize_pixels(batch["image"], preprocess, device)
    return out


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


def stream_summary(
    shards: str | Path | Sequence[str | Path],
    preprocess: PreprocessConfig,
    pipeline: PipelineConfig,
    batch_size: int,
    split: str | None = "train",
    class_names: Sequence[str] | None = None,
    max_batches: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Streams shards through the pipeline once and measures what comes out.

    The check a user runs before training: do batches have the right shape, range and
    class balance, and how fast do they arrive.

    Args:
        shards: a shard folder or list of files.
        preprocess: preprocessing settings.
        pipeline: Ray Data settings.
        batch_size: rows per balanced batch.
        split: the split streamed (None = all).
        class_names: classes to keep (None = every generator found in the split).
        max_batches: stop after this many batches (None = one full pass).
        seed: shuffle / tie-break seed.
    Returns:
        a JSON-able dict: rows, batches, images/s, shape, dtype, value range, distinct
        classes per full batch (min/mean), the largest share any class took in a full batch.
    """
    import time

    counts = class_counts(shards, split)
    names = sorted(counts) if class_names is None else list(class_names)
    if len(names) < 2:
        raise ValueError(f"need at least two classes to stream balanced batches, found {names}")
    ds = build_dataset(shards, names, preprocess, pipeline, split=split, shuffle_seed=seed)
    start = time.perf_counter()
    rows = batches = 0
    lo, hi = float("inf"), float("-inf")
    classes_per_batch: list[int] = []
    max_share = 0.0
    shape: tuple[int, ...] = ()
    dtype = ""
    for batch in iter_balanced_batches(
        ds,
        len(names),
        batch_size,
        pipeline,
        seed=seed,
        drop_last=False,
        preprocess=preprocess,
        real_label=real_label_of(names),
    ):
        img = batch["image"]
        shape, dtype = tuple(img.shape[1:]), str(img.dtype).replace("torch.", "")
        lo, hi = min(lo, float(img.min())), max(hi, float(img.max()))
        per_class = np.bincount(batch["label"], minlength=len(names))
        if len(batch["label"]) == batch_size:  # the last, short batch says nothing of balance
            classes_per_batch.append(int((per_class > 0).sum()))
            max_share = max(max_share, float(per_class.max()) / batch_size)
        rows += len(batch["label"])
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
    elapsed = time.perf_counter() - start
    return {
        "split": split,
        "classes": names,
        "rows_in_split": {n: counts.get(n, 0) for n in names},
        "rows_streamed": rows,
        "batches": batches,
        "batch_size": batch_size,
        "image_shape": list(shape),
        "dtype": dtype,
        "value_range": [lo, hi] if rows else None,
        "full_batch_classes_min": min(classes_per_batch) if classes_per_batch else 0,
        "full_batch_classes_mean": float(np.mean(classes_per_batch)) if classes_per_batch else 0.0,
        "max_class_share_in_full_batch": max_share,
        "seconds": elapsed,
        "images_per_s": rows / elapsed if elapsed > 0 else None,
    }
