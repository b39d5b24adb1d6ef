"""Test helpers for the Serve app: a small calibrated index of the tiny model, image files.

The index is filled through the store API (embed train images, upsert, calibrate on
validation images, store the thresholds), the way ``synthray.index.build`` does it.
"""

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


def _rows(shards: Path) -> list[dict[str, Any]]:
    from synthray.data.shards import shard_paths

    cols = ["image", "content_hash", "source_path", "generator", "is_real", "split", "dataset"]
    table = pa.concat_tables([pq.read_table(p, columns=cols) for p in shard_paths(shards)])
    return sorted(table.to_pylist(), key=lambda r: r["content_hash"])


def build_test_index(tiny_model: Any, store_path: Path) -> TestIndex:
    """Embeds ``REFS_PER_CLASS`` train images per trained class into an embedded store at
    ``store_path`` and calibrates the open-set thresholds on validation images."""
    from synthray.attribution import AttributionConfig, Embedder, calibrate, vote
    from synthray.config import to_dict
    from synthray.index import StoreConfig
    from synthray.index.store import QdrantStore, references_from_rows

    rows = _rows(tiny_model.shards)
    embedder = Embedder(tiny_model.checkpoint, device="cpu")
    pick = lambda split, n: [r for c in embedder.classes  # noqa: E731
                             for r in [x for x in rows if x["split"] == split and x["generator"] == c][:n]]
    refs, cal = pick("train", REFS_PER_CLASS), pick("val", CAL_PER_CLASS)
    cfg = AttributionConfig()
    with QdrantStore(StoreConfig(path=str(store_path)), embedder.model_version, embedder.dim) as store:
        store.upsert(embedder.embed_bytes([r["image"] for r in refs]),
                     references_from_rows({k: [r[k] for r in refs] for k in refs[0] if k != "image"}))
        neighbours = store.search(embedder.embed_bytes([r["image"] for r in cal]), cfg.k)
        v = vote([[n.generator for n in ns] for ns in neighbours], [[n.similarity for n in ns] for ns in neighbours],
                 weighted=cfg.vote == "weighted")
        thresholds = calibrate(v, [r["generator"] for r in cal], cfg)
        store.set_metadata({"thresholds": thresholds.to_dict(), "attribution": to_dict(cfg)})
    queries = {c: [r["image"] for r in rows if r["split"] == "test" and r["generator"] == c][:10]
               for c in embedder.classes}
    held_out = {c: sorted((Path(tiny_model.root) / c).glob("*.png")) for c in tiny_model.held_out}
    return TestIndex(store_path, embedder.model_version, list(embedder.classes), queries, held_out)


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
