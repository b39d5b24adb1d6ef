"""Ingest's unit of work: a chunk of input files, planned by size and written as one shard.

A chunk is plain data (:class:`ChunkTask`) so it pickles to a Ray worker; :func:`write_chunk`
reads, validates and stores its files, then writes the receipt that marks the shard
complete. How the chunks run (here or on Ray) is ``ingest_runner.py``'s; what is left to
do, and the manifest, ``ingest.py``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synthray.config import ValidationConfig
from synthray.data import shards
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
