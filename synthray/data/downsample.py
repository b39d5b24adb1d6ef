"""Class balance by downsampling: every class kept at the smallest class's size.

Rows are dropped before preprocessing (in :class:`~synthray.data.batch_preprocess.PreprocessBatch`),
so a dropped row costs no decode. This balances the data set an epoch sees; the batchers
(``balanced.py``, ``pairs.py``) balance what each batch holds, and need no Ray or shards.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.config import PipelineConfig
from synthray.data.shard_reader import class_counts


def _unit_hash(content_hash: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{content_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def keep_mask(batch: Mapping[str, np.ndarray], keep_rates: Mapping[str, float], seed: int | None) -> np.ndarray | None:
    """Which rows of ``batch`` a per-class subsampling keeps; None = all of them.

    Decided from the content hash (so the same rows are kept whichever worker sees them)
    and the seed (so each epoch keeps a different subset).

    Args:
        batch: numpy columns with at least ``generator`` and ``content_hash``.
        keep_rates: the share of rows kept per generator (missing = 1).
        seed: the draw's seed; None = a fresh draw every pass (every epoch of a Ray Train run).
    Returns:
        a boolean mask over the rows, or None when every rate is 1.
    """
    if not keep_rates or all(r >= 1.0 for r in keep_rates.values()):
        return None
    rates = np.array([keep_rates.get(g, 1.0) for g in batch["generator"]])
    if seed is None:
        return np.random.default_rng().random(len(rates)) < rates
    draws = np.array([_unit_hash(h, seed) for h in batch["content_hash"]])
    return draws < rates


def downsampling(
    pipeline: PipelineConfig, files: Sequence[str], split: str | None, class_names: Sequence[str], seed: int | None
) -> dict[str, Any]:
    """The :class:`~synthray.data.batch_preprocess.PreprocessBatch` keywords that
    ``pipeline.balance`` asks for."""
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
