"""Test helpers for the Serve app: a small calibrated index of the tiny model, a free port."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: Train references per class and calibration queries per class.
REFS_PER_CLASS, CAL_PER_CLASS = 30, 20


@dataclasses.dataclass
class TestIndex:
    """A built index and the images the tests query it with."""

    store_path: Path
    model_version: str
    classes: list[str]  # indexed classes (the model's trained ones)
    queries: dict[str, list[bytes]]  # test-split images per trained class, never indexed
    held_out: dict[str, list[Path]]  # held-out class -> its image files (never seen by the model)
    references: int  # references the build stored (real gets more than each generator)


def build_test_index(tiny_model: Any, store_path: Path) -> TestIndex:
    """``REFS_PER_CLASS`` train images per trained class in an embedded store at
    ``store_path``, open-set thresholds calibrated on validation images (the index build's
    no-Ray path: the session's 2-CPU Ray cluster is left to the Serve app)."""
    from synthray.attribution import AttributionConfig
    from synthray.data.shards import shard_paths
    from synthray.index import IndexConfig, StoreConfig
    from synthray.index.build import build_index

    cfg = IndexConfig(
        checkpoint=str(tiny_model.checkpoint),
        shards=str(tiny_model.shards),
        per_class=REFS_PER_CLASS,
        calibration_per_class=CAL_PER_CLASS,
        device="cpu",
        store=StoreConfig(path=str(store_path)),
    )
    summary = build_index(cfg, AttributionConfig(), use_ray=False)
    classes = sorted(summary["counts"])
    table = pa.concat_tables(
        [pq.read_table(p, columns=["image", "generator", "split"]) for p in shard_paths(tiny_model.shards)]
    )
    rows = table.to_pylist()
    queries = {c: [r["image"] for r in rows if r["split"] == "test" and r["generator"] == c][:10] for c in classes}
    held_out = {c: sorted((Path(tiny_model.root) / c).glob("*.png")) for c in tiny_model.held_out}
    references = sum(c["trained"] for c in summary["counts"].values())
    return TestIndex(store_path, summary["model_version"], classes, queries, held_out, references)


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
