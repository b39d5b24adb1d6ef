"""Builds the synthbench folder: ``<out>/<label>/<split>/<label>_NNNNN.png``, ``sources.csv``
(which real image each fake was made from) and ``synthbench.json``.

Class by class: ``real`` (crops of the shipped photographs) and every generator family (its
network is initialised and fitted from the seed, then turns other crops of the same
distribution into fakes), several classes at once in worker threads. Every class is a
deterministic function of ``(seed, label, config)`` (:mod:`.classes`), which makes the run
resumable class by class: a hidden state file records finished classes, an interrupted class
is regenerated whole (same bytes for the files that already exist), and a finished folder with
the same configuration is detected and left alone. The colour baseline and the fingerprint
probe run last and go into ``synthbench.json``, written only when everything is complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from synthray.config import SynthbenchConfig, to_dict
from synthray.data.files import write_text_atomic
from synthray.data.schema import REAL
from synthray.data.synthbench import store
from synthray.data.synthbench.classes import (
    FIT_BATCH,
    FIT_POOL,
    GEN_BATCH,
    NAME_GLOB,
    SPLITS,
    ClassJob,
    build_class,
    class_layout,
    image_relpath,
    single_thread_torch,
    split_counts,
)
from synthray.data.synthbench.crops import CropConfig, JitterConfig
from synthray.data.synthbench.families.procedural import procedural_name
from synthray.data.synthbench.photos import Photo, find_photos, split_photos
from synthray.data.synthbench.probe import baseline_and_probe
from synthray.data.synthbench.registry import check_family, list_families

logger = logging.getLogger(__name__)

#: Bumped whenever a change alters the images; part of the identity a finished folder is
#: matched against, so an old folder is never mistaken for a current one.
SYNTHBENCH_VERSION = 2
#: Families held out for zero-shot evaluation when the config names none: one upsampling
#: decoder, one latent (VQ) decoder and the diffusion-style denoiser.
DEFAULT_HELD_OUT = ("pixel_shuffle", "vq_vae", "sdedit_unet")
SUMMARY_NAME = "synthbench.json"
#: Up to this many classes, the build logs a line for every finished class.
SMALL_BUILD = 20
SOURCES_NAME = "sources.csv"  # the plain-folder layout reads it: relpath,source of every paired fake
STATE_NAME = ".synthbench_state.json"  # hidden: layout readers skip it
MAX_PER_CLASS = 100_000  # file names carry 5 digits
PROBE_PER_CLASS = 60  # images per class the colour baseline and the fingerprint probe read


def resolve_config(cfg: SynthbenchConfig) -> SynthbenchConfig:
    """Validates ``cfg`` and fills in the defaults (all families, default held-out set).

    Args:
        cfg: as given by the user.
    Returns:
        a copy with ``families`` a tuple of registered names and ``held_out`` non-empty
        (unless fewer than 3 families are built).
    Raises:
        ValueError: on sizes out of range, unknown or duplicate families, or a held-out
            family that is not built.
    """
    if not 1 <= cfg.per_class < MAX_PER_CLASS:
        raise ValueError(f"per_class must be in [1, {MAX_PER_CLASS}), got {cfg.per_class}")
    if cfg.resolution < 32 or cfg.resolution % 16:
        raise ValueError(f"resolution must be a multiple of 16 and >= 32, got {cfg.resolution}")
    if cfg.train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {cfg.train_steps}")
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.procedural < 0:
        raise ValueError(f"procedural must be >= 0, got {cfg.procedural}")
    if not (0 <= cfg.val_fraction < 1 and 0 <= cfg.test_fraction < 1 and cfg.val_fraction + cfg.test_fraction < 1):
        raise ValueError(
            f"need val_fraction, test_fraction >= 0 summing below 1, got {cfg.val_fraction}, {cfg.test_fraction}"
        )
    if cfg.fit_window < 8:
        raise ValueError(f"fit_window must be >= 8, got {cfg.fit_window}")
    families = tuple(
        [*list_families(), *(procedural_name(i) for i in range(cfg.procedural))]
        if cfg.families is None
        else cfg.families
    )
    if not families:
        raise ValueError("families must name at least one generator family")
    if len(set(families)) != len(families):
        raise ValueError(f"duplicate families in {families}")
    for name in families:
        check_family(name)  # KeyError with the known names
    if REAL in families:
        raise ValueError(f"{REAL!r} is the real class, not a family")
    held_out = tuple(cfg.held_out)
    unknown = sorted(set(held_out) - set(families))
    if unknown:
        raise ValueError(f"held_out families {unknown} are not among the families built {families}")
    if not held_out and len(families) >= 3:
        held_out = tuple(name for name in DEFAULT_HELD_OUT if name in families)
    return dataclasses.replace(cfg, families=families, held_out=held_out)


def image_identity(cfg: SynthbenchConfig) -> str:
    """Hash of everything that determines the images (``held_out`` does not)."""
    keys = {
        "version": SYNTHBENCH_VERSION,
        "per_class": cfg.per_class,
        "real_per_class": real_count(cfg),
        "resolution": cfg.resolution,
        "seed": cfg.seed,
        "train_steps": cfg.train_steps,
        "fit_window": cfg.fit_window,
        "families": list(cfg.families or ()),
        "splits": [cfg.val_fraction, cfg.test_fraction],
        "pairs": cfg.pairs,
        "photos": sorted(p.sha256 for p in find_photos()[0]),
        "crops": dataclasses.asdict(CropConfig()),
        "jitter": dataclasses.asdict(JitterConfig()),
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def real_count(cfg: SynthbenchConfig) -> int:
    """Images of the real class: ``real_per_class``, or ``per_class`` when that is None."""
    return max(cfg.per_class, cfg.real_per_class or cfg.per_class)


def _layout(cfg: SynthbenchConfig, label: str) -> list[tuple[str, range]]:
    total = real_count(cfg) if label == REAL else cfg.per_class
    return class_layout(total, cfg.per_class, cfg.val_fraction, cfg.test_fraction)


def _class_complete(out: Path, label: str, cfg: SynthbenchConfig) -> bool:
    return all(
        (out / image_relpath(label, split, i)).is_file() for split, indices in _layout(cfg, label) for i in indices
    )


def _remove_class_files(out: Path, label: str) -> None:
    """Deletes the images this module writes for ``label`` (and nothing else there)."""
    folder = out / label
    if not folder.is_dir():
        return
    for sub in (folder, *(folder / split for split in SPLITS)):
        for path in sub.glob(label + NAME_GLOB):
            path.unlink()
        store.remove_temp_files(sub)
        if sub != folder:
            with contextlib.suppress(OSError):
                sub.rmdir()  # only when nothing else is left in it
    with contextlib.suppress(OSError):
        folder.rmdir()


def _write_sources(out: Path, cfg: SynthbenchConfig) -> None:
    """``sources.csv``: for every fake, the real image it was made from (pairs only)."""
    path = out / SOURCES_NAME
    if not cfg.pairs:
        path.unlink(missing_ok=True)
        return
    lines = ["relpath,source"]
    for split, indices in _layout(cfg, "family"):
        for name in cfg.families or ():
            lines += [f"{image_relpath(name, split, i)},{image_relpath(REAL, split, i)}" for i in indices]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _check_previous(out: Path, identity: str, overwrite: bool) -> dict[str, Any] | None:
    """The state of an unfinished run of the same identity, after clearing a foreign one."""
    state = store.read_json(out / STATE_NAME)
    summary = store.read_json(out / SUMMARY_NAME)
    previous = state or summary
    if previous is None:
        return None
    if previous.get("identity") == identity:
        if state is None and summary is not None:
            # A finished build whose files were since damaged: keep what its summary knows
            # about each class; the completeness check decides what is rebuilt.
            times = summary.get("timings", {}).get("classes_s", {})
            families = {f["name"]: f for f in summary.get("families", [])}
            classes = {
                label: {**{k: v for k, v in families.get(label, {}).items() if k != "name"}, "seconds": sec}
                for label, sec in times.items()
            }
            return {"identity": identity, "labels": summary.get("labels", []), "classes": classes}
        return state
    if not overwrite:
        raise FileExistsError(
            f"{out} holds a synthbench built with a different configuration "
            f"(identity {previous.get('identity')} != {identity}); pass overwrite=True to replace "
            "it, or choose another folder"
        )
    old_labels = previous.get("labels") or []
    logger.info("synthbench: replacing the previous build in %s (%d classes)", out, len(old_labels))
    for label in old_labels:
        _remove_class_files(out, label)
    for name in (STATE_NAME, SUMMARY_NAME, SOURCES_NAME):
        (out / name).unlink(missing_ok=True)
    return None


def _run_jobs(jobs: list[ClassJob], num_workers: int) -> Iterator[tuple[ClassJob, dict[str, Any]]]:
    """Builds classes, ``num_workers`` at a time in threads, yielding each as it finishes."""
    with single_thread_torch():
        if num_workers <= 1:
            for job in jobs:
                yield job, build_class(job)
            return
        with concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="synthbench") as pool:
            futures = {pool.submit(build_class, job): job for job in jobs}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()  # on an error, do not start the classes still queued


def _draw_samples(out: Path, labels: list[str]) -> str | None:
    """``samples.png`` (a few test images of each class); a failure to draw is a warning only."""
    from synthray.data.synthbench.samples import sample_grid
    from synthray.plots import draw_safely

    path = draw_safely("synthbench sample images", sample_grid, out, labels)
    return str(path) if path else None


def _summary(
    cfg: SynthbenchConfig,
    identity: str,
    classes: dict[str, dict[str, Any]],
    photos: list[Photo],
    skipped: list[dict[str, str]],
    timings: dict[str, Any],
) -> dict[str, Any]:
    """The ``synthbench.json`` content, baseline results aside."""
    labels = [REAL, *(cfg.families or ())]
    return {
        "name": "synthbench",
        "version": SYNTHBENCH_VERSION,
        "identity": identity,
        "config": to_dict(cfg),
        "labels": labels,
        "real_label": REAL,
        "held_out": list(cfg.held_out),
        "families": [
            {"name": name, **{k: v for k, v in classes[name].items() if k != "seconds"}} for name in cfg.families or ()
        ],
        "counts": {label: real_count(cfg) if label == REAL else cfg.per_class for label in labels},
        "splits": {
            "images_per_family": split_counts(cfg.per_class, cfg.val_fraction, cfg.test_fraction),
            "real_images": {split: sum(len(r) for name, r in _layout(cfg, REAL) if name == split) for split in SPLITS},
            "by": "source photograph: every split's images are crops of its own photographs",
            "photos": {split: sum(p.split == split for p in photos) for split in SPLITS},
            "pairs": cfg.pairs,
        },
        "image": {"format": "PNG", "mode": "RGB", "size": [cfg.resolution, cfg.resolution]},
        "photos": [p.to_dict() for p in photos],
        "photos_skipped": skipped,
        "generation": {
            "crops": dataclasses.asdict(CropConfig()),
            "jitter": dataclasses.asdict(JitterConfig()),
            "gen_batch": GEN_BATCH,
            "fit_pool": FIT_POOL,
            "fit_batch": FIT_BATCH,
            "fake_colour": "per-channel mean/std of each fake matched to its input crop, then the "
            "same jitter as the reals",
        },
        "timings": {
            # Seconds per class as built (one torch thread each); classes from an earlier,
            # interrupted run keep the time they took then.
            "classes_s": {label: classes[label]["seconds"] for label in labels},
            **timings,
        },
        "environment": {
            "torch": torch.__version__,
            "torch_threads_per_class": 1,
            "cores_available": _available_cores(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def build_synthbench(
    out: str | Path,
    cfg: SynthbenchConfig,
    *,
    num_workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generates the synthbench data set (or finds it already generated).

    Args:
        out: output folder; gets ``<label>/<label>_NNNNN.png`` and ``synthbench.json``.
        cfg: sizes, seed, families and held-out families; ``families=None`` means every
            registered family and an empty ``held_out`` means :data:`DEFAULT_HELD_OUT`.
        num_workers: classes built at once (threads, one torch thread each); ``None`` uses
            one per core this process may run on. The images do not depend on it.
        overwrite: replace a build of a *different* configuration found in ``out`` (only the
            files this module wrote are deleted); otherwise that is an error.
    Returns:
        the summary (the content of ``synthbench.json``): config, families with architecture
        and parameter counts, held-out families, counts, source photographs, timings, and the
        colour baseline and fingerprint probe results.
    Raises:
        ValueError: on an invalid config (see :func:`resolve_config`).
        FileExistsError: when ``out`` holds a different build and ``overwrite`` is false.
    """
    cfg = resolve_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = image_identity(cfg)
    labels = [REAL, *(cfg.families or ())]
    existing = store.read_json(out / SUMMARY_NAME)
    if (
        existing is not None
        and existing.get("identity") == identity
        and not (out / STATE_NAME).exists()
        and all(_class_complete(out, label, cfg) for label in labels)
    ):
        if existing.get("held_out") != list(cfg.held_out):
            existing["held_out"] = list(cfg.held_out)
            existing["config"] = to_dict(cfg)
            store.write_json(out / SUMMARY_NAME, existing)
        logger.info("synthbench: %s is already complete for this configuration; skipping", out)
        return existing

    state = _check_previous(out, identity, overwrite)
    if state is None:
        state = {"identity": identity, "labels": labels, "classes": {}}
    (out / SUMMARY_NAME).unlink(missing_ok=True)  # a summary only ever describes a finished folder
    store.write_json(out / STATE_NAME, state)
    total_start = time.perf_counter()
    found, skipped = find_photos()
    photos = split_photos(found, cfg.val_fraction, cfg.test_fraction)
    todo = [
        ClassJob(
            str(out),
            label,
            cfg.per_class,
            cfg.resolution,
            cfg.seed,
            cfg.train_steps,
            cfg.val_fraction,
            cfg.test_fraction,
            cfg.pairs,
            cfg.fit_window,
            real_count(cfg),
        )
        for label in labels
        if not (label in state["classes"] and _class_complete(out, label, cfg))
    ]
    if len(todo) < len(labels):
        logger.info("synthbench: %d of %d classes complete from an earlier run", len(labels) - len(todo), len(labels))
    workers = max(1, min(num_workers or _available_cores(), len(todo)))
    logger.info(
        "synthbench: building %d classes x %d images at %dpx from %d photographs (%d files skipped) into %s "
        "(%d worker%s)",
        len(todo),
        cfg.per_class,
        cfg.resolution,
        len(found),
        len(skipped),
        out,
        workers,
        "" if workers == 1 else "s",
    )
    last_line = total_start
    for done, (job, info) in enumerate(_run_jobs(todo, workers), 1):
        state["classes"][job.label] = info
        store.write_json(out / STATE_NAME, state)  # the class is now safe from interruption
        fit = info.get("fit") or {}
        now = time.perf_counter()
        # A line per class for a small build; a large one (50 classes) one every 10 s with
        # an ETA and the rest at debug level, so the terminal keeps a screenful.
        due = len(todo) <= SMALL_BUILD or done == len(todo) or now - last_line >= 10.0
        last_line = now if due else last_line
        logger.log(
            logging.INFO if due else logging.DEBUG,
            "synthbench [%d/%d] %s: %d images in %.1fs%s; ETA %.0fs",
            done,
            len(todo),
            job.label,
            cfg.per_class,
            info["seconds"],
            f" (fitted: loss {fit['loss_first']} -> {fit['loss_last']})" if fit.get("loss_first") is not None else "",
            (now - total_start) / done * (len(todo) - done),
        )
    generation_seconds = time.perf_counter() - total_start
    _write_sources(out, cfg)

    probe_start = time.perf_counter()
    baseline, probe = baseline_and_probe(out, seed=cfg.seed, size=cfg.resolution, max_per_class=PROBE_PER_CLASS)
    probe_seconds = time.perf_counter() - probe_start
    timings = {
        "generation_wall_s": round(generation_seconds, 3),
        "baseline_and_probe_s": round(probe_seconds, 3),
        "total_wall_s": round(time.perf_counter() - total_start, 3),
        "workers": workers,
        "resumed_classes": len(labels) - len(todo),
    }
    summary = _summary(cfg, identity, state["classes"], photos, skipped, timings)
    summary["baseline"] = baseline
    summary["fingerprint_probe"] = probe
    summary["samples_figure"] = _draw_samples(out, labels)
    store.write_json(out / SUMMARY_NAME, summary)
    (out / STATE_NAME).unlink(missing_ok=True)
    logger.info(
        "synthbench: done in %.1fs; colour baseline real-vs-fake %s (chance 0.5), attribution %s "
        "(chance %s); fingerprint probe attribution %s",
        summary["timings"]["total_wall_s"],
        (baseline["real_vs_fake"] or {}).get("balanced_accuracy"),
        baseline["attribution"]["accuracy"],
        baseline["attribution"]["chance_balanced_accuracy"],
        probe["attribution"]["accuracy"],
    )
    return summary
