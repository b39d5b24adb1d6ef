"""Runs ingest's chunks: one after another in this process, or as Ray tasks, logging progress.

Either way a failed chunk is reported and the others go on; the output is the same.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from synthray.data import shards
from synthray.data.ingest_chunks import ChunkTask, ChunkWriter

logger = logging.getLogger(__name__)


class Progress:
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


def run_local(tasks: list[ChunkTask], writer: ChunkWriter, progress: Progress) -> list[dict[str, Any]]:
    """Runs chunks one after another in this process; returns the failures."""
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


def run_ray(
    tasks: list[ChunkTask], writer: ChunkWriter, num_workers: int | None, progress: Progress
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
