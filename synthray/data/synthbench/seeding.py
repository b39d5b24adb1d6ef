"""Named random streams derived from one seed.

Every random draw in synthbench comes from a stream keyed by ``(seed, *keys)`` (for example
``(0, "real", 17)`` for the 18th real image), never from global state. A class therefore
comes out the same whether it is built alone, first or after an interrupted run, and a
different seed changes every stream.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _entropy(seed: int, keys: tuple[str | int, ...]) -> list[int]:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    words = [int(seed)]
    for key in keys:
        # crc32 rather than hash(): str hashing is salted per process.
        words.append(zlib.crc32(key.encode("utf-8")) if isinstance(key, str) else int(key))
    return words


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """A NumPy generator for one named purpose.

    Args:
        seed: the benchmark seed (>= 0).
        keys: names and indices that identify the purpose, e.g. ``("real", 17)``.
    Returns:
        a ``numpy.random.Generator`` that depends only on ``seed`` and ``keys``.
    """
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, keys)))


def torch_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit integer seed for torch, derived like :func:`stream`."""
    return int(stream(seed, *keys).integers(0, 2**63 - 1))


def torch_generator(seed: int, *keys: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` for one named purpose (noise draws, batch order)."""
    return torch.Generator(device="cpu").manual_seed(torch_seed(seed, *keys))
