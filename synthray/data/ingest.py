"""Layout folder -> validated Parquet shards + manifest, resumable, in parallel with Ray.

The driver scans the layout (cheap: names only), drops every relpath a receipt already
covers, shuffles the rest with a fixed seed so every shard mixes classes, and cuts them into
chunks by file size (``stat``) and row count. Each chunk becomes one shard, written by one
task that reads, validates and stores its files (:func:`write_chunk`): a Ray task with one CPU
when ``IngestConfig.use_ray``, else a plain call in this process; the output is the same.

Re-running is safe and cheap: covered relpaths are skipped, leftovers of an interrupted run
are discarded and redone, new input files go into new shards, and the manifest is rebuilt
from every receipt each time. Workers read the input paths themselves, so on a multi-node
cluster the root must be on a file system every node mounts at the same path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synthray.config import IngestConfig, ValidationConfig, to_dict
from synthray.data import manifest as manifest_file
from synthray.data import shards
from synthray.data.layouts import get_layout
from synthray.data.schema import SourceRecord
from synthray.data.validate import BadImage, validate_file

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ChunkTask:
    """Everything one shard writer needs; plain data so it pickles to a Ray worker."""

    out: str  # output folder
    index: int  # shard index: part-<index>.parquet
    records: list[SourceRecord]  # files of this shard, in the (shuffled) row order
    validation: ValidationConfig  # what counts as an image
    compression: str  # Parquet codec
    meta: dict[str, Any]  # copied into the receipt: layout, root, split and validation configs


#: ``writer(task) -> summary``; :func:`write_chunk` unless a caller injects another one.
ChunkWriter = Callable[[ChunkTask], dict[str, Any]]


class IngestError(RuntimeError):
    """Some chunks failed; the rest is written and the manifest rebuilt. Re-run to redo them.

    Attributes:
        failures: ``{"shard": name, "error": text}`` per failed chunk.
        manifest: the manifest written before raising.
    """

    def __init__(self, failures: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
        listed = "; ".join(f"{f['shard']}: {f['error']}" for f in failures[:5])
        super().__init__(
            f"{len(failures)} shard(s) failed ({listed}); the other shards are complete, "
            "re-run the same ingest to redo the failed ones"
        )
        self.failures = failures
        self.manifest = manifest


def _row(record: SourceRecord, data: bytes, width: int, height: int, fmt: str) -> dict[str, Any]:
    return {
        "image": data,
        "content_hash": hashlib.sha256(data).hexdigest(),
        "source_path": record.relpath,
        "generator": record.generator,
        "is_real": record.is_real,
        "split": record.split,
        "dataset": record.dataset,
        "category": record.category,
        "group": record.group,
        "width": width,
        "height": height,
        "format": fmt,
        "num_bytes": len(data),
    }


def shuffle_groups(records: list[SourceRecord], seed: int) -> list[SourceRecord]:
    """Shuffles records so every shard mixes classes, keeping each source group together.

    Records of one group (a real image and the fakes made from it) stay next to each other,
    in a random order of groups: the pair batcher then finds a pair within a few rows of the
    stream instead of having to hold the whole data set. Records without a group are groups of
    one. The input should be sorted, so the result depends on the file set alone.
    """
    groups: dict[str, list[SourceRecord]] = {}
    for record in records:
        groups.setdefault(record.group or "\0" + record.relpath, []).append(record)
    keys = list(groups)
    rng = random.Random(seed)
    rng.shuffle(keys)
    out: list[SourceRecord] = []
    for key in keys:
        members = groups[key]
        rng.shuffle(members)
        out.extend(members)
    return out


def write_chunk(task: ChunkTask) -> dict[str, Any]:
    """Validates every file of a chunk, writes its shard, then its receipt.

    A bad file is recorded in the receipt with its reason and never stops the chunk; any
    other error (disk full, a killed worker) fails the whole chunk, which leaves no receipt,
    so the next run redoes it.

    Args:
        task: the chunk.
    Returns:
        a summary: ``index``, ``file``, ``rows``, ``bytes``, ``num_bad``, ``seconds``.
    """
    start = time.perf_counter()
    out = Path(task.out)
    good: list[str] = []
    bad: list[dict[str, str]] = []
    image_bytes = 0
    file_bytes = 0
    written_name = shards.shard_name(task.index)
    name: str | None = written_name  # None once it turns out no image was valid
    with shards.ShardWriter(out / written_name, task.compression) as writer:
        for record in task.records:
            try:
                data, info = validate_file(record.path, task.validation)
            except BadImage as exc:
                bad.append({"relpath": record.relpath, "reason": exc.reason, "message": exc.message})
                continue
            except Exception as exc:  # noqa: BLE001 - one file must never sink the run
                logger.exception("unexpected error validating %s", record.path)
                bad.append({"relpath": record.relpath, "reason": "corrupt", "message": f"unexpected {exc!r}"})
                continue
            writer.add(_row(record, data, info.width, info.height, info.format))
            good.append(record.relpath)
            image_bytes += len(data)
        if writer.rows:
            file_bytes = writer.commit()
        else:
            writer.abort()
            name = None
    seconds = time.perf_counter() - start
    receipt = {
        "index": task.index,
        "file": name,
        "rows": len(good),
        "bytes": file_bytes,
        "image_bytes": image_bytes,
        **task.meta,
        "seconds": round(seconds, 3),
        "good": good,
        "bad": bad,
    }
    shards.write_receipt(out, task.index, receipt)
    return {
        "index": task.index,
        "file": name,
        "rows": len(good),
        "bytes": file_bytes,
        "num_bad": len(bad),
        "seconds": seconds,
    }


def plan_chunks(sizes: Sequence[int], shard_bytes: int, max_rows: int) -> list[tuple[int, int]]:
    """Cuts a sequence of files into consecutive chunks under both caps.

    A file larger than ``shard_bytes`` gets a chunk of its own rather than being refused here
    (validation's ``max_bytes`` decides about it).

    Args:
        sizes: file sizes in bytes, in row order.
        shard_bytes: target encoded bytes per chunk.
        max_rows: most files per chunk.
    Returns:
        ``(start, stop)`` index ranges covering ``sizes`` in order.
    """
    if shard_bytes <= 0 or max_rows <= 0:
        raise ValueError("shard_bytes and max_rows_per_shard must be positive")
    chunks: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        rows = i - start
        if rows and (rows >= max_rows or total + size > shard_bytes):
            chunks.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        chunks.append((start, len(sizes)))
    return chunks


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # unreadable; the writer reports it, it costs no shard space


class _Progress:
    """Logs one line per finished shard with the running rate."""

    def __init__(self, total_shards: int, total_files: int) -> None:
        self.total_shards = total_shards
        self.total_files = total_files
        self.done_shards = 0
        self.done_files = 0
        self.start = time.perf_counter()

    def update(self, summary: dict[str, Any], files: int) -> None:
        self.done_shards += 1
        self.done_files += files
        rate = self.done_files / max(time.perf_counter() - self.start, 1e-9)
        logger.info(
            "shard %s: %d rows, %d bad (%d/%d shards, %d/%d files, %.0f files/s)",
            summary["file"] or f"#{summary['index']} (no valid image)",
            summary["rows"],
            summary["num_bad"],
            self.done_shards,
            self.total_shards,
            self.done_files,
            self.total_files,
            rate,
        )


def _run_local(tasks: list[ChunkTask], writer: ChunkWriter, progress: _Progress) -> list[dict[str, Any]]:
    failures: list[dict[str, Any]] = []
    for task in tasks:
        try:
            summary = writer(task)
        except Exception as exc:  # noqa: BLE001 - a failed chunk is reported, the others go on
            logger.exception("shard %s failed", shards.shard_name(task.index))
            failures.append({"shard": shards.shard_name(task.index), "error": f"{type(exc).__name__}: {exc}"})
        else:
            progress.update(summary, len(task.records))
    return failures


def _run_ray(
    tasks: list[ChunkTask], writer: ChunkWriter, num_workers: int | None, progress: _Progress
) -> tuple[list[dict[str, Any]], int]:
    """Runs chunks as Ray tasks, at most ``num_workers`` at once; returns (failures, workers)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Connects to a running cluster when there is one (RAY_ADDRESS, `ray job submit`),
        # else starts a local one that lives only for this call.
        ray.init(include_dashboard=False)
    try:
        workers = num_workers or max(1, int(ray.available_resources().get("CPU", 1)))
        # One retry covers a worker lost to a node failure; writes are idempotent (temp name
        # + rename), so a second attempt cannot duplicate rows. Exceptions raised by the
        # writer itself are not retried: they would fail the same way again.
        remote = ray.remote(num_cpus=1, max_retries=1)(writer)
        queue = iter(tasks)
        pending: dict[Any, ChunkTask] = {}
        failures: list[dict[str, Any]] = []

        def submit() -> None:
            task = next(queue, None)
            if task is not None:
                pending[remote.remote(task)] = task

        for _ in range(workers):
            submit()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    summary = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError ...
                    logger.error("shard %s failed: %s", shards.shard_name(task.index), exc)
                    failures.append({"shard": shards.shard_name(task.index), "error": f"{type(exc).__name__}: {exc}"})
                else:
                    progress.update(summary, len(task.records))
                submit()
        except BaseException:
            # Interrupted (Ctrl-C): stop what is still queued; finished shards keep their
            # receipts and the next run picks up from there.
            for ref in pending:
                ray.cancel(ref)
            raise
        return failures, workers
    finally:
        if started:
            ray.shutdown()


def _check_compatible(receipts: dict[int, dict[str, Any]], meta: dict[str, Any]) -> None:
    """Refuses to add to an output folder written with another layout or other labels."""
    for receipt in receipts.values():
        for key in ("layout", "split", "validation"):
            if receipt.get(key) != meta[key]:
                raise ValueError(
                    f"{shards.receipt_name(receipt['index'])} was written with {key}={receipt.get(key)!r}, "
                    f"this run has {key}={meta[key]!r}; mixing them would label or filter files "
                    "two ways in one data set. Ingest into a new output folder instead."
                )


def ingest(
    layout: str,
    root: str | Path,
    out: str | Path,
    cfg: IngestConfig | None = None,
    *,
    chunk_writer: ChunkWriter | None = None,
) -> dict[str, Any]:
    """Ingests a data set folder into Parquet shards and a manifest (resumable).

    Args:
        layout: a registered layout name (``genimage``, ``forensynths``, ``cifake``,
            ``folder``).
        root: the data set folder.
        out: the output folder (created; must not lie inside ``root``).
        cfg: sharding, parallelism, split and validation settings; ``None`` = defaults.
        chunk_writer: replaces :func:`write_chunk` (fault injection in tests); with Ray it
            must pickle.
    Returns:
        the manifest (also written to ``out/manifest.json``); see
        :func:`synthray.data.manifest.build_manifest`.
    Raises:
        ValueError: unknown layout, a root that does not match it, ``out`` inside ``root``,
            or an ``out`` written with another layout / split / validation config.
        IngestError: after writing every other shard and the manifest, if chunks failed.
    """
    cfg = cfg or IngestConfig()
    if cfg.num_workers is not None and cfg.num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 or None, got {cfg.num_workers}")
    reader = get_layout(layout)
    root_path = Path(os.path.abspath(root))
    out_path = Path(os.path.abspath(out))
    if out_path == root_path or root_path in out_path.parents:
        raise ValueError(f"output {out_path} lies inside the input {root_path}; the shards would be scanned as images")
    t0 = time.perf_counter()

    strays: list[dict[str, str]] = []

    def on_stray(relpath: str, reason: str, message: str) -> None:
        strays.append({"relpath": relpath, "reason": reason, "message": message})

    records = list(reader(root_path, cfg.split, on_stray))
    t_scan = time.perf_counter()
    logger.info("%s %s: %d files found, %d stray", layout, root_path, len(records), len(strays))

    out_path.mkdir(parents=True, exist_ok=True)
    discarded = shards.discard_partial(out_path)
    receipts = shards.read_receipts(out_path)
    meta = {
        "layout": layout,
        "root": str(root_path),
        "split": to_dict(cfg.split),
        "validation": to_dict(cfg.validation),
    }
    _check_compatible(receipts, meta)
    covered = {p for r in receipts.values() for p in [*r["good"], *(b["relpath"] for b in r["bad"])]}
    todo = shuffle_groups(
        sorted((r for r in records if r.relpath not in covered), key=lambda r: r.relpath), cfg.shuffle_seed
    )
    ranges = plan_chunks([_file_size(r.path) for r in todo], cfg.shard_bytes, cfg.max_rows_per_shard)
    first = shards.next_index(out_path)
    tasks = [
        ChunkTask(
            out=str(out_path),
            index=first + i,
            records=todo[a:b],
            validation=cfg.validation,
            compression=cfg.compression,
            meta=meta,
        )
        for i, (a, b) in enumerate(ranges)
    ]
    logger.info(
        "%d files already covered by %d shard receipt(s); %d new file(s) -> %d shard(s)",
        len(records) - len(todo),
        len(receipts),
        len(todo),
        len(tasks),
    )
    t_plan = time.perf_counter()

    writer = chunk_writer or write_chunk
    progress = _Progress(len(tasks), len(todo))
    workers = 1
    if not tasks:
        failures: list[dict[str, Any]] = []
    elif cfg.use_ray:
        failures, workers = _run_ray(tasks, writer, cfg.num_workers, progress)
    else:
        failures = _run_local(tasks, writer, progress)
    t_write = time.perf_counter()

    failed = {f["shard"] for f in failures}
    written = [t for t in tasks if shards.shard_name(t.index) not in failed]
    files_done = sum(len(t.records) for t in written)
    run = {
        "scanned_files": len(records),
        "stray_files": len(strays),
        "already_covered": len(records) - len(todo),
        "ingested_files": files_done,
        "new_shards": [shards.shard_name(t.index) for t in written],
        "failed_shards": failures,
        "discarded": discarded,
        "used_ray": bool(cfg.use_ray and tasks),
        "num_workers": workers,
    }
    manifest = manifest_file.build_manifest(
        out_path,
        layout=layout,
        root=str(root_path),
        config=to_dict(cfg),
        strays=strays,
        scanned={r.relpath for r in records},
        run=run,
    )
    t_manifest = time.perf_counter()
    manifest["timings"] = {
        "scan_s": round(t_scan - t0, 3),
        "plan_s": round(t_plan - t_scan, 3),
        "write_s": round(t_write - t_plan, 3),
        "manifest_s": round(t_manifest - t_write, 3),
        "total_s": round(t_manifest - t0, 3),
        "files_per_s": round(files_done / (t_write - t_plan), 1) if files_done else 0.0,
    }
    manifest_file.write_manifest(out_path, manifest)
    logger.info(
        "%s: %d rows in %d shards, %d bad, %d duplicate group(s) (%d across classes); %.1fs",
        out_path,
        manifest["total_rows"],
        len(manifest["shards"]),
        manifest["num_bad"],
        manifest["num_duplicate_groups"],
        manifest["num_cross_class_duplicate_groups"],
        t_manifest - t0,
    )
    if failures:
        raise IngestError(failures, manifest)
    return manifest


# Re-exported so readers need one import.
read_manifest = manifest_file.read_manifest
shard_paths = shards.shard_paths
