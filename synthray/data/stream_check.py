"""One pass of the stream, measured: the check ``synthray stream`` runs before training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthray.config import PipelineConfig, PreprocessConfig
from synthray.data.pipeline import build_dataset, iter_balanced_batches
from synthray.data.shard_reader import class_counts, real_label_of


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
