"""Building the reference index: shards -> embeddings -> the vector store, then calibration.

Reader -> embedder -> writer (after clip-retrieval's ``clip_inference``):

- the rows are chosen from the label columns (:mod:`synthray.index.selection`), and the
  store is asked which of their deterministic point ids it already holds, so only the
  missing ones are embedded: a re-run adds nothing, a crashed run resumes where it stopped;
- Ray path: ``read_parquet`` -> ``filter`` (pushed into the scan) -> ``map_batches`` with
  :class:`~synthray.attribution.embedder.Embedder` on an actor pool (one model load per
  actor, one GPU each where the cluster has GPUs) -> the driver;
- no-Ray path: the same rows through pyarrow and the same :class:`Embedder`, in this
  process (the GPU machine has no Ray; tests compare both paths);
- the driver writes: it is the ONLY process that opens the store, because embedded Qdrant
  lets one process own a storage folder (actors only return vectors);
- afterwards the open-set thresholds are calibrated on validation images of the indexed
  classes (embedded in the same pass) and stored in the collection's metadata, where the
  :class:`~synthray.attribution.attributor.Attributor` reads them.

Modules: the row choice (:mod:`synthray.index.selection`), where to embed
(:mod:`synthray.index.embed_plan`), the embedding pass (:mod:`synthray.index.embed_stream`),
the driver's writer (:mod:`synthray.index.sink`), calibration (:mod:`synthray.index.calibration`),
the enrollment archive carried over (:mod:`synthray.index.reenroll`) and the configs from YAML
(:mod:`synthray.index.build_configs`); this module runs them in order and re-exports their
public names.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from synthray.attribution.config import AttributionConfig
from synthray.data.schema import REAL
from synthray.index.build_configs import index_configs
from synthray.index.calibration import calibrate_store, calibration_gap, keep_real_calibration
from synthray.index.config import IndexConfig
from synthray.index.embed_plan import LOCAL_MAX_CPUS, actor_plan, choose_ray, ray_pays_off
from synthray.index.embed_stream import COLUMNS, stream_local, stream_ray
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.reenroll import reenroll_archive
from synthray.index.selection import Choice, check_classes, choose_rows, parse_cap, reference_caps
from synthray.index.sink import PROGRESS_EVERY_S, ReferenceSink
from synthray.index.collections import alias_name
from synthray.index.store import BaseStore, open_store, point_id

__all__ = [
    "COLUMNS",
    "LOCAL_MAX_CPUS",
    "PROGRESS_EVERY_S",
    "ReferenceSink",
    "actor_plan",
    "build_index",
    "calibrate_store",
    "choose_ray",
    "index_configs",
    "ray_pays_off",
    "reenroll_archive",
    "stream_local",
    "stream_ray",
]

log = logging.getLogger(__name__)


def build_index(
    cfg: IndexConfig, attribution: AttributionConfig | None = None, use_ray: bool | None = None
) -> dict[str, Any]:
    """Embeds the chosen shard rows into the store, then calibrates and stores the rule.

    Args:
        cfg: checkpoint, shards, per-class cap, classes, store.
        attribution: the rule calibrated and stored with the index (None = defaults).
        use_ray: embed with Ray Data on an actor pool (True) or in this process (False);
            None chooses the faster for the cluster (:func:`choose_ray`).
    Returns:
        a JSON-able summary: collection, store, model_version, counts per class
        ({trained, enrolled}), added, already_present, calibration, timings, images_per_s.
    Raises:
        CheckpointError: no loadable checkpoint at ``cfg.checkpoint``.
        ValueError: an unknown class, a class without images, a bad ``per_class``.
        StoreError: the store belongs to another model version / is open elsewhere.
    """
    from synthray.attribution.embedder import Embedder, resolve_checkpoint

    attribution = attribution or AttributionConfig()
    use_ray = choose_ray(use_ray)
    start = time.perf_counter()
    timings = {"select_s": 0.0, "read_s": 0.0, "embed_s": 0.0, "write_s": 0.0, "calibrate_s": 0.0}
    cap = parse_cap(cfg.per_class)
    if cfg.calibration_split == cfg.split:
        raise ValueError(
            f"calibration_split must differ from the indexed split {cfg.split!r}: queries that are "
            "their own references would calibrate the thresholds on perfect matches"
        )
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    # The driver needs the weights' version and embedding size before anything is embedded
    # (point ids, the store's collection). On the Ray path the actors load their own copy.
    embedder = Embedder(checkpoint, device=cfg.device if not use_ray else "cpu", batch_size=cfg.batch_size)
    classes = list(cfg.classes) or list(embedder.classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate names in classes {classes}")

    t0 = time.perf_counter()
    files, refs, cal = _select(cfg, classes, cap)
    timings["select_s"] = time.perf_counter() - t0
    extra = sorted(set(classes) & set(embedder.held_out))
    if extra:
        log.info("indexing class(es) %s that training held out: they become known classes of this index", extra)

    with open_store(cfg.store, embedder.model_version, embedder.dim) as store:
        sink, present, stream_s = _embed(store, cfg, embedder, checkpoint, files, classes, refs, cal, use_ray, timings)
        timings["write_s"] = sink.write_s
        if sink.missing:
            log.warning(
                "%d chosen reference(s) never came out of the stream (shards changed during the build?)",
                len(sink.missing),
            )

        t0 = time.perf_counter()
        calibration, calibration_png = _calibrate(store, cfg, embedder, checkpoint, classes, cal, sink, attribution)
        timings["calibrate_s"] = time.perf_counter() - t0
        reenrolled, previous = _carry_over_and_activate(store, cfg, embedder, attribution, timings)
        counts = store.counts()
        summary: dict[str, Any] = {
            "collection": store.collection,
            "store": store.where(),
            "model_version": embedder.model_version,
            "checkpoint": str(checkpoint),
            "path": "ray" if use_ray else "local",
            "classes": classes,
            "held_out": embedder.held_out,
            "per_class": cfg.per_class,
            "selected": {c: len(h) for c, h in refs.hashes.items()},
            "counts": counts,
            "total_points": store.count(),
            "added": sink.added,
            "already_present": present,
            "calibration": calibration,
            "calibration_figure": calibration_png,
            "enrollments": reenrolled,
            "active": {"alias": alias_name(cfg.store), "previous": previous} if cfg.activate else None,
        }
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["total_s"] = round(time.perf_counter() - start, 3)
    summary["timings"] = timings
    summary["images_per_s"] = round(sink.rows / stream_s, 2) if sink.rows and stream_s > 0 else None
    log.info("index built: %s", json.dumps(summary, default=str))
    return summary


def _select(cfg: IndexConfig, classes: list[str], cap: int | None) -> tuple[list[str], Choice, Choice]:
    """(shard files, the references chosen, the calibration queries chosen), from the label columns."""
    from synthray.data.pipeline import find_shards
    from synthray.data.manifest import read_labels

    files = find_shards(cfg.shards)
    labels = read_labels(files)
    refs = choose_rows(labels, cfg.split, classes, reference_caps(classes, cfg.per_class, cfg.real_per_class))
    check_classes(classes, refs, labels)
    _warn_short(refs, cap)
    # A validation image whose bytes are also a reference would find itself at similarity 1.
    cal = choose_rows(
        labels,
        cfg.calibration_split,
        classes,
        {**{c: cfg.calibration_per_class for c in classes}, REAL: cfg.calibration_real},
        exclude=refs.all_hashes(),
    )
    return files, refs, cal


def _warn_short(choice: Choice, cap: int | None) -> None:
    for c, n in choice.available.items():
        if cap is not None and 0 < n < cap:
            log.warning(
                "class %r has %d usable images in split %r, fewer than per_class=%d: all of them are used",
                c,
                n,
                choice.split,
                cap,
            )


def _embed(
    store: BaseStore,
    cfg: IndexConfig,
    embedder: Any,
    checkpoint: Any,
    files: list[str],
    classes: list[str],
    refs: Choice,
    cal: Choice,
    use_ray: bool,
    timings: dict[str, float],
) -> tuple[ReferenceSink, int, float]:
    """Embeds the references the store lacks and every calibration query; returns the sink
    that wrote them (and kept the queries), how many references were already stored, and the
    stream's seconds."""
    ids = {point_id(embedder.model_version, h): h for h in refs.all_hashes()}
    present = store.existing(list(ids))
    missing = {h for i, h in ids.items() if i not in present}
    log.info(
        "index: %d references chosen (%s per class), %d already in %s, %d to embed; %d calibration queries",
        refs.total,
        cfg.per_class,
        len(present),
        store.collection,
        len(missing),
        cal.total,
    )
    parts = []
    if missing:
        everything = refs.complete and len(missing) == refs.total
        parts.append((cfg.split, classes, None if everything else missing))
    if cal.total:
        parts.append((cfg.calibration_split, classes, None if cal.complete else cal.all_hashes()))
    sink = ReferenceSink(store, cfg.split, missing, cfg.calibration_split, cal.all_hashes())
    t_stream = time.perf_counter()
    if parts:
        stream = (
            stream_ray(files, parts, checkpoint, cfg, timings)
            if use_ray
            else stream_local(files, parts, embedder, cfg.batch_size, timings)
        )
        for batch in stream:
            sink.consume(batch)
    return sink, len(present), time.perf_counter() - t_stream


def _calibrate(
    store: BaseStore,
    cfg: IndexConfig,
    embedder: Any,
    checkpoint: Any,
    classes: list[str],
    cal: Choice,
    sink: ReferenceSink,
    attribution: AttributionConfig,
) -> tuple[dict[str, Any], str | None]:
    """Calibrates the rule on the kept queries and stores it with the index's facts in the
    collection's metadata; returns (the calibration's summary, the figure's path or None)."""
    from synthray.config import to_dict

    thresholds, calibration, calibration_png = None, calibration_gap(cal, cfg), None
    if sink.cal_labels:
        cal_vectors = np.stack(sink.cal_vectors)
        figure = cfg.figures_root() / f"calibration-{embedder.model_version}.png"
        thresholds, calibration_png = calibrate_store(store, cal_vectors, sink.cal_labels, attribution, figure)
        calibration = {**thresholds.calibration, **calibration}
        keep_real_calibration(store, cal_vectors, sink)
    store.set_metadata(
        {
            "thresholds": thresholds.to_dict() if thresholds is not None else None,  # None removes stale ones
            "attribution": to_dict(attribution),
            "classes": classes,
            "held_out": embedder.held_out,
            "checkpoint": str(checkpoint),
            "per_class": cfg.per_class,
            "calibration_split": cfg.calibration_split,
            "built_at": time.time(),
        }
    )
    return calibration, calibration_png


def _carry_over_and_activate(
    store: BaseStore, cfg: IndexConfig, embedder: Any, attribution: AttributionConfig, timings: dict[str, float]
) -> tuple[dict[str, Any], Any]:
    """Re-enrolls the archive, optimizes a large collection and points the alias at it;
    returns (the re-enrollment's summary, the alias's former target)."""
    t0 = time.perf_counter()
    reenrolled = (
        reenroll_archive(store, embedder, EnrollmentArchive(cfg.store.enrolled_root()), attribution)
        if cfg.include_enrolled
        else {"skipped": "include_enrolled is false"}
    )
    timings["reenroll_s"] = time.perf_counter() - t0
    optimize = getattr(store, "optimize", None)
    if optimize is not None and store.count() > cfg.store.exact_max:
        t0 = time.perf_counter()
        optimize()  # build the HNSW graph now, not during the first queries
        timings["optimize_s"] = time.perf_counter() - t0
    previous = store.set_alias(alias_name(cfg.store)) if cfg.activate else None
    return reenrolled, previous
