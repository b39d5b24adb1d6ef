"""Layout folder -> validated Parquet shards + manifest, resumable, in parallel with Ray.

The driver scans the layout (cheap: names only), drops every relpath a receipt already
covers, shuffles the rest with a fixed seed so every shard mixes classes, and cuts them into
chunks by file size (``stat``) and row count. Each chunk becomes one shard, written by one
task that reads, validates and stores its files (:func:`write_chunk`): a Ray task with one CPU
when ``IngestConfig.use_ray``, else a plain call in this process; the output is the same.
The chunks themselves are ``ingest_chunks.py``'s, running them ``ingest_runner.py``'s; this
module decides what is left to do and rebuilds the manifest.

Re-running is safe and cheap: covered relpaths are skipped, leftovers of an interrupted run
are discarded and redone, new input files go into new shards, and the manifest is rebuilt
from every receipt each time. Workers read the input paths themselves, so on a multi-node
cluster the root must be on a file system every node mounts at the same path.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from synthray.config import IngestConfig, to_dict
from synthray.data import manifest as manifest_file
from synthray.data import shards

# ChunkTask, ChunkWriter, plan_chunks and write_chunk are also imported from here (tests, callers
# injecting a chunk writer), where they lived before the chunks had a module of their own.
from synthray.data.ingest_chunks import ChunkTask, ChunkWriter, plan_chunks, shuffle_groups, write_chunk
from synthray.data.ingest_runner import Progress, run_local, run_ray
from synthray.data.layouts import get_layout

logger = logging.getLogger(__name__)


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


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # unreadable; the writer reports it, it costs no shard space


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
    progress = Progress(len(tasks), len(todo))
    workers = 1
    if not tasks:
        failures: list[dict[str, Any]] = []
    elif cfg.use_ray:
        failures, workers = run_ray(tasks, writer, cfg.num_workers, progress)
    else:
        failures = run_local(tasks, writer, progress)
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
