"""Generates one synthbench class: the real crops, or one family's fakes.

A class is a pure function of ``(seed, label, config)``: crops, jitter and noise come from
streams keyed by the label and image index (:mod:`.seeding`), and torch runs on one thread, so
the bytes do not depend on how many classes are built side by side or in which order. That is
what lets :mod:`.build` run classes in parallel threads and resume an interrupted run class by
class. Threads rather than processes: torch and PIL release the GIL in their kernels, and no
``__main__`` guard is demanded of the caller as ``spawn`` would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from synthray.data.schema import REAL
from synthray.data.synthbench import store
from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.crops import (
    CropConfig,
    CropSampler,
    draw_jitter,
    jitter,
    match_moments,
    to_uint8,
)
from synthray.data.synthbench.fitting import fit_family
from synthray.data.synthbench.photos import find_photos
from synthray.data.synthbench.registry import create_family
from synthray.data.synthbench.seeding import stream, torch_generator, torch_seed

#: Images generated per forward pass (also fixes which noise draw each image gets).
GEN_BATCH = 32
#: Real crops each family is fitted on, and crops per fitting step.
FIT_POOL = 256
FIT_BATCH = 16
#: Glob of the files this module writes into a class folder.
NAME_GLOB = "_[0-9][0-9][0-9][0-9][0-9].png"


@dataclasses.dataclass(frozen=True)
class ClassJob:
    """Everything needed to build one class."""

    out: str  # the benchmark root
    label: str  # REAL or a family name
    per_class: int
    resolution: int
    seed: int
    train_steps: int


def image_name(label: str, index: int) -> str:
    """File name of image ``index`` of class ``label``."""
    return f"{label}_{index:05d}.png"


#: Guards torch's global RNG while a family is initialised (classes run in threads).
_INIT_LOCK = threading.Lock()
_SAMPLER_LOCK = threading.Lock()


@contextlib.contextmanager
def single_thread_torch() -> Iterator[None]:
    """One intra-op torch thread for the duration; restored afterwards.

    One thread makes every float reduction run in a fixed order whatever the machine's core
    count (parallelism is across classes instead), and avoids OpenMP barriers stalling on a
    busy machine. That, explicit generators for every random draw, and the CPU (the builder
    never uses CUDA) make the output deterministic; ``torch.use_deterministic_algorithms``
    would only guard CUDA kernels here, and costs seconds on first use. The setting is
    process-wide: enter this once around all class builds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=4)
def _cached_sampler(resolution: int) -> CropSampler:
    photos, _ = find_photos()
    return CropSampler([p.load() for p in photos], resolution, CropConfig())


def _sampler(resolution: int) -> CropSampler:
    # Decoding the photographs takes a moment; every class (and every later build in this
    # process) reuses them. The lock keeps concurrent classes from decoding twice.
    with _SAMPLER_LOCK:
        return _cached_sampler(resolution)


class _ClassWriter:
    """Writes one class's images into ``<out>/<label>/``."""

    def __init__(self, out: Path, label: str) -> None:
        self.folder = out / label
        self.label = label
        self.folder.mkdir(parents=True, exist_ok=True)
        store.remove_temp_files(self.folder)

    def write(self, index: int, img: np.ndarray) -> None:
        store.write_png(self.folder / image_name(self.label, index), to_uint8(img))

    def drop_extra(self, per_class: int) -> None:
        """Removes this module's images with an index >= ``per_class`` (from an older run)."""
        for path in self.folder.glob(self.label + NAME_GLOB):
            if int(path.stem.rsplit("_", 1)[1]) >= per_class:
                path.unlink()


def _build_real(job: ClassJob, sampler: CropSampler) -> dict[str, Any]:
    writer = _ClassWriter(Path(job.out), REAL)
    for i in range(job.per_class):
        rng = stream(job.seed, REAL, i)
        crop = sampler.sample(rng)
        writer.write(i, jitter(crop, draw_jitter(rng)))
    writer.drop_extra(job.per_class)
    return {}


def new_family(name: str, seed: int) -> GeneratorFamily:
    """Family ``name`` initialised from the seed, leaving torch's global RNG as it was."""
    # Layer constructors draw from torch's global generator; the lock keeps two classes
    # initialising at once from interleaving their draws.
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, name, "init"))
        return create_family(name)


def _to_nchw(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def _build_family(job: ClassJob, sampler: CropSampler) -> dict[str, Any]:
    name, seed = job.label, job.seed
    model = new_family(name, seed)
    pool = sampler.sample_batch([stream(seed, name, "fit", i) for i in range(FIT_POOL)])
    half = job.resolution // 2
    window = half if half % model.stride == 0 else job.resolution
    fit = fit_family(
        model, pool, job.train_steps, stream(seed, name, "fit-order"),
        torch_generator(seed, name, "fit-noise"), batch_size=FIT_BATCH, window=window,
    )
    writer = _ClassWriter(Path(job.out), name)
    for batch_index, first in enumerate(range(0, job.per_class, GEN_BATCH)):
        indices = range(first, min(first + GEN_BATCH, job.per_class))
        # The generator's input crops use the family's own streams: same distribution as
        # the real class, different crops.
        rngs = [stream(seed, name, i) for i in indices]
        crops = sampler.sample_batch(rngs)
        fakes = model.generate(_to_nchw(crops), torch_generator(seed, name, "noise", batch_index))
        for i, rng, crop, fake in zip(indices, rngs, crops, fakes.numpy().transpose(0, 2, 3, 1)):
            writer.write(i, jitter(match_moments(fake, crop), draw_jitter(rng)))
    writer.drop_extra(job.per_class)
    return {
        "architecture": model.architecture,
        "parameters": model.num_parameters(),
        "fit": {**fit.to_dict(), "window": window, "pool": FIT_POOL},
    }


def build_class(job: ClassJob) -> dict[str, Any]:
    """Writes every image of one class (overwriting same-named files) and describes it.

    Call inside :func:`single_thread_torch` (the images depend on the thread count otherwise).

    Args:
        job: the class and the configuration.
    Returns:
        ``{"seconds", ...}``; families add ``architecture``, ``parameters`` and ``fit``.
    """
    start = time.perf_counter()
    sampler = _sampler(job.resolution)
    info = _build_real(job, sampler) if job.label == REAL else _build_family(job, sampler)
    return {**info, "seconds": round(time.perf_counter() - start, 3)}
