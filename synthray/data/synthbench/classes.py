"""Generates one synthbench class: the real crops, or one family's fakes.

Images are split by source photograph: image ``i`` of every class is in the split
:func:`split_of` gives its index, and its crop comes from that split's photographs only, so
test images show photographs that training never saw. With ``pairs`` (the default), fake ``i``
of every family is generated from the very crop that real image ``i`` shows and gets the same
photometric jitter: the pair differs in the generator's traces alone (DRCT's idea), and
``sources.csv`` records the pairing for training.

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
from synthray.data.synthbench.photos import find_photos, split_photos
from synthray.data.synthbench.registry import create_family
from synthray.data.synthbench.seeding import stream, torch_generator, torch_seed

#: Images generated per forward pass (also fixes which noise draw each image gets).
GEN_BATCH = 32
#: Real crops each family is fitted on, and crops per fitting step.
FIT_POOL = 256
FIT_BATCH = 16
#: Glob of the files this module writes into a class's split folders.
NAME_GLOB = "_[0-9][0-9][0-9][0-9][0-9].png"
#: The split folders under each class folder, in index order.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ClassJob:
    """Everything needed to build one class."""

    out: str  # the benchmark root
    label: str  # REAL or a family name
    per_class: int
    resolution: int
    seed: int
    train_steps: int
    val_fraction: float = 0.2  # share of images (and of photographs) in val
    test_fraction: float = 0.2  # ... in test
    pairs: bool = True  # fake i made from real image i's crop (same jitter)
    fit_window: int = 32  # side of the crops windows families are fitted on
    real_per_class: int | None = None  # images of the real class (>= per_class); None = per_class


def split_counts(per_class: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Images per split out of ``per_class`` (val and test rounded, train takes the rest)."""
    val = int(round(per_class * val_fraction))
    test = int(round(per_class * test_fraction))
    return {"train": per_class - val - test, "val": val, "test": test}


def class_layout(total: int, per_class: int, val_fraction: float, test_fraction: float) -> list[tuple[str, range]]:
    """``(split, image indices)`` of a class of ``total`` images.

    The first ``per_class`` indices are laid out as every family's (train, then val, then
    test), so real image i and fake i of every family are in the same split; the real class's
    extra images (``total > per_class``) follow, split by the same fractions.
    """
    out: list[tuple[str, range]] = []
    start = 0
    for size in (per_class, total - per_class):
        counts = split_counts(size, val_fraction, test_fraction)
        for name in SPLITS:
            if counts[name]:
                out.append((name, range(start, start + counts[name])))
            start += counts[name]
    return out


def image_name(label: str, index: int) -> str:
    """File name of image ``index`` of class ``label``."""
    return f"{label}_{index:05d}.png"


def image_relpath(label: str, split: str, index: int) -> str:
    """Path of image ``index`` of class ``label`` inside the benchmark root."""
    return f"{label}/{split}/{image_name(label, index)}"


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


@functools.lru_cache(maxsize=16)
def _cached_sampler(resolution: int, split: str, val_fraction: float, test_fraction: float) -> CropSampler:
    photos = split_photos(find_photos()[0], val_fraction, test_fraction)
    return CropSampler([p.load() for p in photos if p.split == split], resolution, CropConfig())


def _sampler(job: ClassJob, split: str) -> CropSampler:
    # Decoding the photographs takes a moment; every class (and every later build in this
    # process) reuses them. The lock keeps concurrent classes from decoding twice.
    with _SAMPLER_LOCK:
        return _cached_sampler(job.resolution, split, job.val_fraction, job.test_fraction)


class _ClassWriter:
    """Writes one class's images into ``<out>/<label>/<split>/``."""

    def __init__(self, out: Path, label: str) -> None:
        self.out = out
        self.label = label
        for split in SPLITS:
            store.remove_temp_files(out / label / split)

    def write(self, split: str, index: int, img: np.ndarray) -> None:
        path = self.out / image_relpath(self.label, split, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_png(path, to_uint8(img))

    def drop_extra(self, layout: list[tuple[str, range]]) -> None:
        """Removes this module's images that this configuration does not make (an older run's)."""
        for split in SPLITS:
            wanted = [r for name, r in layout if name == split]
            for path in (self.out / self.label / split).glob(self.label + NAME_GLOB):
                index = int(path.stem.rsplit("_", 1)[1])
                if not any(index in r for r in wanted):
                    path.unlink()


def job_layout(job: ClassJob) -> list[tuple[str, range]]:
    """The split layout of the job's class (see :func:`class_layout`)."""
    total = max(job.real_per_class or job.per_class, job.per_class) if job.label == REAL else job.per_class
    return class_layout(total, job.per_class, job.val_fraction, job.test_fraction)


def _real_crop(job: ClassJob, split: str, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Real image ``index``'s crop and jitter (what a paired fake is made from, too)."""
    rng = stream(job.seed, REAL, index)
    crop = _sampler(job, split).sample(rng)
    return crop, draw_jitter(rng)


def _build_real(job: ClassJob) -> dict[str, Any]:
    writer = _ClassWriter(Path(job.out), REAL)
    layout = job_layout(job)
    for split, indices in layout:
        for i in indices:
            crop, jit = _real_crop(job, split, i)
            writer.write(split, i, jitter(crop, jit))
    writer.drop_extra(layout)
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


def _build_family(job: ClassJob) -> dict[str, Any]:
    name, seed = job.label, job.seed
    model = new_family(name, seed)
    # Fitted on training photographs only: nothing of a test photograph is in any network.
    pool = _sampler(job, "train").sample_batch([stream(seed, name, "fit", i) for i in range(FIT_POOL)])
    window = min(job.fit_window, job.resolution)
    window = window if window % model.stride == 0 else job.resolution
    fit = fit_family(
        model,
        pool,
        job.train_steps,
        stream(seed, name, "fit-order"),
        torch_generator(seed, name, "fit-noise"),
        batch_size=FIT_BATCH,
        window=window,
    )
    writer = _ClassWriter(Path(job.out), name)
    layout = job_layout(job)
    for split, indices in layout:
        for batch_index, first in enumerate(range(indices.start, indices.stop, GEN_BATCH)):
            batch = range(first, min(first + GEN_BATCH, indices.stop))
            if job.pairs:
                # Real image i's own crop and jitter: the pair differs in the generator alone.
                drawn = [_real_crop(job, split, i) for i in batch]
            else:
                # The family's own streams: same distribution as the real class, other crops.
                rngs = [stream(seed, name, i) for i in batch]
                drawn = [(_sampler(job, split).sample(rng), draw_jitter(rng)) for rng in rngs]
            crops = np.stack([c for c, _ in drawn])
            fakes = model.generate(_to_nchw(crops), torch_generator(seed, name, "noise", split, batch_index))
            for i, (crop, jit), fake in zip(batch, drawn, fakes.numpy().transpose(0, 2, 3, 1)):
                writer.write(split, i, jitter(match_moments(fake, crop), jit))
    writer.drop_extra(layout)
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
    info = _build_real(job) if job.label == REAL else _build_family(job)
    return {**info, "seconds": round(time.perf_counter() - start, 3)}
