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
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from synthray.errors import ConfigError
from synthray.attribution.config import AttributionConfig
from synthray.index.config import IndexConfig
from synthray.index.selection import Choice, check_classes, choose_rows, parse_cap, reference_caps, row_predicate
from synthray.data.schema import REAL
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.store import CALIBRATION, BaseStore, alias_name, open_store, point_id, references_from_rows

log = logging.getLogger(__name__)

#: Shard columns the build reads: the image bytes and the labels a reference's payload keeps.
COLUMNS = ["image", "content_hash", "source_path", "generator", "is_real", "split", "dataset"]
#: Seconds between progress lines.
PROGRESS_EVERY_S = 5.0


class _Sink:
    """The driver's end of the stream: reference rows go to the store as they arrive,
    calibration rows are kept (vectors + true class) until every reference is written.

    Args:
        store: the open store (owned by this process).
        ref_split: split of the reference rows.
        missing: content hashes of references still to write.
        cal_split: split of the calibration rows.
        cal_hashes: content hashes of the calibration queries.
    """

    def __init__(
        self, store: BaseStore, ref_split: str, missing: set[str], cal_split: str, cal_hashes: set[str]
    ) -> None:
        self.store = store
        self.ref_split, self.missing = ref_split, set(missing)
        self.cal_split, self.cal_left = cal_split, set(cal_hashes)
        self.total = len(self.missing) + len(self.cal_left)
        self.added = 0
        self.rows = 0
        self.write_s = 0.0
        self.cal_vectors: list[np.ndarray] = []
        self.cal_labels: list[str] = []
        self.cal_hashes: list[str] = []
        self.start = time.perf_counter()
        self._last_log = self.start

    def consume(self, batch: dict[str, Any]) -> None:
        """Takes one embedded batch (label columns + ``embedding``)."""
        hashes = [str(h) for h in batch["content_hash"]]
        splits = [str(s) for s in batch["split"]]
        emb = np.asarray(batch["embedding"], dtype=np.float32)
        ref_rows, cal_rows = [], []
        for i, (h, s) in enumerate(zip(hashes, splits)):
            # A hash is taken once: duplicate rows (the same file ingested twice) add nothing.
            if s == self.ref_split and h in self.missing:
                self.missing.discard(h)
                ref_rows.append(i)
            elif s == self.cal_split and h in self.cal_left:
                self.cal_left.discard(h)
                cal_rows.append(i)
        if ref_rows:
            cols = {
                k: [batch[k][i] for i in ref_rows]
                for k in ("content_hash", "generator", "is_real", "split", "dataset", "source_path")
            }
            t0 = time.perf_counter()
            self.store.upsert(emb[ref_rows], references_from_rows(cols))
            self.write_s += time.perf_counter() - t0
            self.added += len(ref_rows)
        for i in cal_rows:
            self.cal_vectors.append(emb[i])
            self.cal_labels.append(str(batch["generator"][i]))
            self.cal_hashes.append(hashes[i])
        self.rows += len(ref_rows) + len(cal_rows)
        now = time.perf_counter()
        if now - self._last_log >= PROGRESS_EVERY_S or self.rows == self.total:
            self._last_log = now
            log.info(
                "index: %d/%d images embedded (%d references written, %d calibration queries), %.1f images/s",
                self.rows,
                self.total,
                self.added,
                len(self.cal_labels),
                self.rows / max(now - self.start, 1e-9),
            )


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Filtered record batches (often a few rows each) regrouped into ``size``-row tables."""
    pending: list[pa.RecordBatch] = []
    n = 0
    for rb in batches:
        if rb.num_rows == 0:
            continue
        pending.append(rb)
        n += rb.num_rows
        while n >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, n = rest.to_batches(), rest.num_rows
    if n:
        yield pa.Table.from_batches(pending)


def _timed(items: Iterator[Any], timings: dict[str, float], key: str) -> Iterator[Any]:
    """Yields from ``items``, adding the time spent waiting for each to ``timings[key]``."""
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        timings[key] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def stream_local(
    files: Sequence[str], parts: list, embedder: Any, batch_size: int, timings: dict[str, float]
) -> Iterator[dict[str, Any]]:
    """Embedded batches without Ray: pyarrow reads with the same predicate, this process embeds.

    Args:
        files: shard files.
        parts: ``(split, classes, hashes or None)`` row selections (see ``row_predicate``).
        embedder: an :class:`~synthray.attribution.embedder.Embedder`.
        batch_size: rows per embedded batch.
        timings: ``read_s`` and ``embed_s`` are added to.
    Yields:
        numpy column dicts: the label columns and ``embedding`` (N, D).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    dataset = pads.dataset(list(files), format="parquet")
    reader = _rebatch(
        dataset.to_batches(columns=COLUMNS, filter=row_predicate(parts, pc.field, "isin"), batch_size=batch_size),
        batch_size,
    )
    for table in _timed(reader, timings, "read_s"):
        t0 = time.perf_counter()
        out = embedder({name: table.column(name).to_numpy(zero_copy_only=False) for name in COLUMNS})
        timings["embed_s"] += time.perf_counter() - t0
        yield out


def actor_plan(device: str, num_actors: int | None) -> tuple[int, bool]:
    """(embedding actors, whether each takes a GPU) for the connected Ray cluster.

    One actor per GPU where the cluster has GPUs; on CPU, one per CPU but one, so a CPU
    stays free for the Parquet read tasks that feed them (an actor pool holding every
    CPU starves its own readers: a deadlock on a 2-core machine).

    Raises:
        ValueError: ``device="cuda"`` on a cluster without GPUs.
    """
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if device.startswith("cuda") and gpus == 0:
        raise ValueError("index.device='cuda' but the Ray cluster has no GPU")
    use_gpu = gpus > 0 and device != "cpu"
    default = gpus if use_gpu else max(1, int(res.get("CPU", 1)) - 1)
    return (num_actors or default), use_gpu


def stream_ray(
    files: Sequence[str], parts: list, checkpoint: Path, cfg: IndexConfig, timings: dict[str, float]
) -> Iterator[dict[str, Any]]:
    """Embedded batches from Ray Data: read + filter in tasks, embed on an actor pool.

    Args:
        files: shard files (readable by every node).
        parts: ``(split, classes, hashes or None)`` row selections (see ``row_predicate``).
        checkpoint: the checkpoint folder each actor loads.
        cfg: batch size, device and actor count.
        timings: ``embed_s`` is added to (time waiting for the stream).
    Yields:
        numpy column dicts as :func:`stream_local`.
    """
    import pyarrow.fs as pafs
    import ray
    from ray.data.expressions import col

    from synthray.attribution.embedder import Embedder

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    actors, use_gpu = actor_plan(cfg.device, cfg.num_actors)
    log.info("index: Ray Data embedding on %d actor(s) (%s)", actors, "one GPU each" if use_gpu else "CPU")
    # Ask for one read task per shard so blocks reach the actors while other shards are still
    # read (Ray 2.60 still groups small shards into one task: byte-sized read buckets).
    ds = ray.data.read_parquet(list(files), filesystem=pafs.LocalFileSystem(), override_num_blocks=len(files))
    ds = ds.select_columns(COLUMNS).filter(expr=row_predicate(parts, col, "is_in"))
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "checkpoint": str(checkpoint),
            "device": "cuda" if use_gpu else "cpu",
            "batch_size": cfg.batch_size,
        },
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
    )
    # Read, decode and embed overlap inside the stream: the time spent waiting for it counts
    # as embedding time (read_s keeps only the label reads of the selection).
    yield from _timed(iter(ds.iter_batches(batch_size=cfg.batch_size, batch_format="numpy")), timings, "embed_s")


def calibrate_store(
    store: Any,
    vectors: np.ndarray,
    true_labels: Sequence[str],
    attribution: AttributionConfig,
    figure: Path | None = None,
) -> tuple[Any, str | None]:
    """The rule's thresholds from queries of known classes, scored against ``store``.

    Args:
        store: the reference store (already holding the references).
        vectors: (N, D) query embeddings.
        true_labels: N true classes (each indexed).
        attribution: k, unknown rate and target FPR.
        figure: where to draw the scores and the chosen thresholds (PNG); None: no figure.
    Returns:
        (:class:`~synthray.attribution.rule.Thresholds`, the figure's path or None when none
        was drawn).
    """
    from synthray.attribution.rule import calibrate, class_scores

    hits = store.class_hits(np.asarray(vectors, dtype=np.float32), attribution.k)
    classes = sorted(store.counts())
    cs = class_scores(hits, classes)
    thresholds = calibrate(cs, true_labels, attribution.target_fpr, attribution.unknown_rate, attribution.k)
    drawn = None
    if figure is not None:
        from synthray.attribution.figure import calibration_figure
        from synthray.plots import draw_safely

        drawn = draw_safely("calibration figure", calibration_figure, cs, true_labels, thresholds, figure)
    return thresholds, str(drawn) if drawn else None


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


#: Up to this many CPUs on one GPU-less node, embedding in the driver beats Ray Data's actor
#: pool (benchmarks/RESULTS.md, 2 cores: the pool ran at 0.10x the in-process loop, its
#: actors and the driver competing for the same cores while torch already uses them all).
LOCAL_MAX_CPUS = 4


def ray_pays_off(nodes: int, cpus: float, gpus: float) -> tuple[bool, str]:
    """Whether embedding on Ray is worth it on a cluster of this size, and why.

    Ray spreads the work over nodes and GPUs; on one small CPU-only node it only adds
    processes that compete for the cores torch already uses, so the driver does it alone.
    """
    if gpus > 0:
        return True, f"{gpus:g} GPU(s): Ray Data's actors embed on them"
    if nodes > 1:
        return True, f"{nodes} nodes: Ray Data spreads the embedding over them"
    if cpus > LOCAL_MAX_CPUS:
        return True, f"{cpus:g} CPUs on one node: Ray Data's actors decode and embed in parallel"
    return False, (
        f"one CPU-only node with {cpus:g} CPUs: embedding in this process is faster than Ray Data's actor "
        "pool there (benchmarks/RESULTS.md); use_ray=True uses Ray anyway"
    )


def choose_ray(use_ray: bool | None) -> bool:
    """``use_ray`` when given; otherwise (None) decided by :func:`ray_pays_off` on the
    connected Ray cluster, or on this machine when Ray is not initialized. Logs the choice."""
    if use_ray is not None:
        return use_ray
    try:
        import ray

        if ray.is_initialized():
            total = ray.cluster_resources()
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            choice, why = ray_pays_off(nodes, total.get("CPU", 0.0), total.get("GPU", 0.0))
        else:
            import os

            import torch

            choice, why = ray_pays_off(1, os.cpu_count() or 1, torch.cuda.device_count())
    except ImportError:
        choice, why = False, "Ray is not installed"
    log.info("index: embedding %s: %s", "on Ray" if choice else "in this process", why)
    return choice


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
    from synthray.config import to_dict
    from synthray.data.pipeline import find_shards
    from synthray.data.shards import read_labels

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
    timings["select_s"] = time.perf_counter() - t0
    extra = sorted(set(classes) & set(embedder.held_out))
    if extra:
        log.info("indexing class(es) %s that training held out: they become known classes of this index", extra)

    with open_store(cfg.store, embedder.model_version, embedder.dim) as store:
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
        sink = _Sink(store, cfg.split, missing, cfg.calibration_split, cal.all_hashes())
        t_stream = time.perf_counter()
        if parts:
            stream = (
                stream_ray(files, parts, checkpoint, cfg, timings)
                if use_ray
                else stream_local(files, parts, embedder, cfg.batch_size, timings)
            )
            for batch in stream:
                sink.consume(batch)
        stream_s = time.perf_counter() - t_stream
        timings["write_s"] = sink.write_s
        if sink.missing:
            log.warning(
                "%d chosen reference(s) never came out of the stream (shards changed during the build?)",
                len(sink.missing),
            )

        t0 = time.perf_counter()
        thresholds, calibration, calibration_png = None, _calibration_gap(cal, cfg), None
        if sink.cal_labels:
            cal_vectors = np.stack(sink.cal_vectors)
            figure = cfg.figures_root() / f"calibration-{embedder.model_version}.png"
            thresholds, calibration_png = calibrate_store(store, cal_vectors, sink.cal_labels, attribution, figure)
            calibration = {**thresholds.calibration, **calibration}
            _keep_real_calibration(store, cal_vectors, sink)
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
        timings["calibrate_s"] = time.perf_counter() - t0
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
        counts = store.counts()
        summary = {
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
            "already_present": len(present),
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


def reenroll_archive(
    store: BaseStore, embedder: Any, archive: EnrollmentArchive, attribution: AttributionConfig
) -> dict[str, Any]:
    """Enrolls every archived image into ``store`` again, embedded by this model, with the
    service's checks (:class:`~synthray.index.enrollment.Enroller`); a generator the new model
    refuses (it now looks real) is reported and stays in the archive.

    Returns:
        ``{"generators": {name: {"enrolled", "unchanged"} or {"refused": why}}, "missing": [hashes]}``.
    """
    from synthray.index.enrollment import Enroller, EnrollmentError

    entries = archive.entries()
    if not entries:
        return {"generators": {}, "missing": []}
    enroller = Enroller(store, attribution, archive=None)  # the archive already holds them
    by_generator: dict[str, list[Any]] = {}
    for e in entries:
        by_generator.setdefault(e.generator, []).append(e)
    out: dict[str, Any] = {"generators": {}, "missing": []}
    for generator, items in by_generator.items():
        data, kept = [], []
        for e in items:
            try:
                data.append(archive.read(e.content_hash))
                kept.append(e)
            except FileNotFoundError:
                out["missing"].append(e.content_hash)
        if not kept:
            continue
        vectors = np.concatenate([embedder.embed_bytes(data[s : s + 64]) for s in range(0, len(data), 64)])
        try:
            r = enroller.enroll(generator, vectors, [e.content_hash for e in kept], [e.name for e in kept])
            out["generators"][generator] = {"enrolled": r["enrolled"], "unchanged": r["unchanged"]}
        except EnrollmentError as exc:
            log.warning("archived enrollment of %s not carried into %s: %s", generator, store.collection, exc.message)
            out["generators"][generator] = {"refused": exc.message}
    if out["missing"]:
        log.warning("%d archived enrollment image(s) are missing from %s", len(out["missing"]), archive.root)
    log.info("re-enrolled archived generators into %s: %s", store.collection, out["generators"])
    return out


def _keep_real_calibration(store: BaseStore, vectors: np.ndarray, sink: _Sink) -> None:
    """Stores the real calibration photographs (origin ``calibration``, never searched as
    references): enrollment checks against them that a new generator flags no more of them."""
    from synthray.index.store import Reference

    real = [i for i, lab in enumerate(sink.cal_labels) if lab == REAL]
    if real:
        store.upsert(
            vectors[real],
            [Reference(REAL, True, sink.cal_hashes[i], split=sink.cal_split, origin=CALIBRATION) for i in real],
        )


def _calibration_gap(cal: Choice, cfg: IndexConfig) -> dict[str, Any]:
    """Says which classes calibration has no images for (all of them: no thresholds)."""
    lacking = sorted(c for c, h in cal.hashes.items() if not h)
    if cal.total == 0:
        log.warning(
            "split %r has no images of the indexed classes: no open-set thresholds stored; the index "
            "answers closed-set only (never 'unknown') until it is calibrated",
            cfg.calibration_split,
        )
        return {"skipped": f"no images of the indexed classes in split {cfg.calibration_split!r}"}
    if lacking:
        log.warning(
            "calibration split %r has no images of %s: thresholds come from the other classes",
            cfg.calibration_split,
            lacking,
        )
    return {"classes_without_queries": lacking}


def index_configs(data: dict[str, Any], overrides: Sequence[str] = ()) -> tuple[IndexConfig, AttributionConfig]:
    """The build's configs from a YAML mapping and ``--set key=value`` overrides.

    Args:
        data: a mapping with ``index:`` and/or ``attribution:`` sections (a mapping with
            neither is read as the index section alone).
        overrides: ``key=value`` items; keys starting with ``attribution.`` set the rule,
            others (with or without an ``index.`` prefix) set :class:`IndexConfig` fields.
    Raises:
        TypeError: an unknown key; ValueError: a malformed override or value.
    """
    from synthray.config import from_dict
    from synthray.train.overrides import apply_overrides

    if "index" in data or "attribution" in data:
        unknown = sorted(set(data) - {"index", "attribution"})
        if unknown:
            raise ConfigError(f"index config: unknown sections {unknown}; expected index: and attribution:")
        sections = {"index": data.get("index") or {}, "attribution": data.get("attribution") or {}}
    else:
        sections = {"index": dict(data), "attribution": {}}
    keyed = [o if o.startswith(("index.", "attribution.")) else f"index.{o}" for o in overrides]
    sections = apply_overrides(sections, keyed)
    return from_dict(IndexConfig, sections["index"]), from_dict(AttributionConfig, sections["attribution"])
