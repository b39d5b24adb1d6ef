"""The same stream as ``pipeline.py``, in one process and without Ray.

For single-process training, the GPU benchmark machine (which has no Ray) and tests of
the training core: pyarrow reads the shards with the split/class predicate, the rows go
through the same :class:`~synthray.data.batch_preprocess.PreprocessBatch` (so the pixels are
identical), then the same class-balanced batcher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.dataset as pads
import torch

from synthray.config import PipelineConfig, PreprocessConfig
from synthray.data.pairs import make_batcher
from synthray.data.batch_preprocess import PreprocessBatch, finalize_batch
from synthray.data.downsample import downsampling
from synthray.data.shard_reader import find_shards, read_columns, real_label_of, row_filter


def iter_preprocessed(
    shards: str | Path | Sequence[str | Path],
    class_names: Sequence[str],
    preprocess: PreprocessConfig | None = None,
    pipeline: PipelineConfig | None = None,
    split: str | None = None,
    seed: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Preprocessed row batches (``pipeline.batch_size`` rows) in a shuffled order.

    Args:
        shards: shard folder or files.
        class_names: classes kept, in label order.
        preprocess: decode/resize/augment settings.
        pipeline: batch size, shuffle buffer and class balance settings.
        split: the split read (None = all).
        seed: shuffles fragment order and rows; also the epoch seed of downsampling.
    Yields:
        numpy column dicts like the Ray pipeline's rows (uint8 pixels).
    """
    preprocess = preprocess or PreprocessConfig()
    pipeline = pipeline or PipelineConfig()
    files = find_shards(shards)
    fn = PreprocessBatch(preprocess, class_names, **downsampling(pipeline, files, split, class_names, seed or 0))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files)) if seed is not None else np.arange(len(files))
    columns = read_columns(pipeline)
    flt = row_filter(split, class_names)
    for i in order:
        fragment = pads.dataset(files[i], format="parquet")
        for record_batch in fragment.to_batches(columns=columns, filter=flt, batch_size=pipeline.batch_size):
            if record_batch.num_rows == 0:
                continue
            batch = {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in columns}
            if seed is not None:
                perm = rng.permutation(record_batch.num_rows)
                batch = {k: v[perm] for k, v in batch.items()}
            out = fn(batch)
            if len(out["label"]):
                yield out


def iter_balanced_local(
    shards: str | Path | Sequence[str | Path],
    class_names: Sequence[str],
    batch_size: int,
    preprocess: PreprocessConfig | None = None,
    pipeline: PipelineConfig | None = None,
    split: str | None = None,
    seed: int | None = None,
    drop_last: bool = True,
    device: "torch.device | str" = "cpu",
) -> Iterator[dict[str, Any]]:
    """:func:`iter_preprocessed` regrouped into class-balanced (or pair) batches of ``batch_size``,
    ``image`` converted to float on ``device`` as :func:`iter_balanced_batches` does."""
    pipeline = pipeline or PipelineConfig()
    preprocess = preprocess or PreprocessConfig()
    batcher = make_batcher(pipeline, len(class_names), batch_size, real_label_of(class_names), drop_last, seed)
    for batch in batcher(iter_preprocessed(shards, class_names, preprocess, pipeline, split, seed)):
        yield finalize_batch(batch, preprocess, device)
