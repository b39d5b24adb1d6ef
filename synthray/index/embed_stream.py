"""The embedding pass of an index build: the chosen shard rows read and embedded, as a stream
of batches (label columns + ``embedding``), either in this process or on Ray Data's actor pool.

Reader -> embedder (after clip-retrieval's ``clip_inference``); the writer is the driver's
:class:`~synthray.index.sink.ReferenceSink`. Both streams read with the same row predicate
(:func:`~synthray.index.selection.row_predicate`) and embed with the same
:class:`~synthray.attribution.embedder.Embedder`, so they yield the same rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa

from synthray.index.config import IndexConfig
from synthray.index.embed_plan import actor_plan
from synthray.index.selection import row_predicate

log = logging.getLogger(__name__)

#: Shard columns the build reads: the image bytes and the labels a reference's payload keeps.
COLUMNS = ["image", "content_hash", "source_path", "generator", "is_real", "split", "dataset"]


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
