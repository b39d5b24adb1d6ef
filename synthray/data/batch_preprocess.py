"""The per-batch step of the stream: encoded rows -> uint8 pixels + integer labels.

One callable for every way the stream runs: Ray Data ``map_batches`` on GPU actors
(:class:`PreprocessBatch`) or in CPU tasks (:func:`preprocess_batch`), and the plain loop
of ``loader.py``. The preprocessing itself lives in ``preprocess.py`` and runs without Ray.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from synthray.config import PreprocessConfig
from synthray.data.downsample import keep_mask
from synthray.data.preprocess import Preprocessor, finalize_pixels
from synthray.data.shard_reader import GROUP, PASSTHROUGH

if TYPE_CHECKING:
    import torch


class PreprocessBatch:
    """Encoded rows -> uint8 pixels + integer labels, for Ray Data ``map_batches``.

    Used two ways: as a callable class on GPU actors (built once per actor, which keeps one
    CUDA context), and through :func:`preprocess_batch` in CPU tasks, which Ray Data fuses
    with the Parquet read so encoded bytes never cross the object store.

    Args:
        preprocess: the preprocessing config.
        class_names: label order; row ``generator`` values map to their index here.
        keep_rates: the share of rows kept per generator (:func:`~synthray.data.downsample.downsampling`).
        sample_seed: seed of that draw; None = a fresh draw on every pass.
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

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = keep_mask(batch, self.keep_rates, self.sample_seed)
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


def finalize_batch(
    batch: dict[str, Any], preprocess: PreprocessConfig, device: "torch.device | str" = "cpu"
) -> dict[str, Any]:
    """The batch with ``image`` turned into the model's float input on ``device``."""
    out = dict(batch)
    out["image"] = finalize_pixels(batch["image"], preprocess, device)
    return out
