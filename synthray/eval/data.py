"""Evaluation rows: label columns selected first, image bytes streamed only when embedded.

A GenImage test split is tens of gigabytes of encoded images, so nothing here holds
image bytes beyond one batch: rows are chosen from the label columns, then the shards
are streamed with a ``content_hash`` predicate and each batch is embedded and dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from synthray.data.pipeline import find_shards, row_filter
from synthray.data.schema import REAL
from synthray.index.selection import choose_rows, parse_cap

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RowSet:
    """Rows of one split, labels only, sorted by class (real first) then content hash."""

    split: str
    content_hash: np.ndarray  # (N,) str
    generator: np.ndarray  # (N,) str: the true class
    source_path: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.content_hash)

    def counts(self) -> dict[str, int]:
        names, n = np.unique(self.generator.astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n)}

    def take(self, index: np.ndarray) -> "RowSet":
        index = np.asarray(index, dtype=np.int64)
        return RowSet(self.split, self.content_hash[index], self.generator[index], self.source_path[index])

    def capped(self, max_per_class: int | str | None) -> "RowSet":
        """At most ``max_per_class`` rows of each class: the smallest content hashes, the
        same rows every run (and the rows the index build keeps). None or "all" keeps all."""
        if max_per_class is None or max_per_class == "all":
            return self
        keep = (
            np.concatenate(
                [np.flatnonzero(self.generator == c)[: int(max_per_class)] for c in dict.fromkeys(self.generator)]
            )
            if len(self)
            else np.zeros(0, np.int64)
        )
        return self.take(np.sort(keep))


def select_rows(
    labels: pa.Table, split: str, classes: Sequence[str], cap: int | str | None = None, exclude: Iterable[str] = ()
) -> RowSet:
    """The rows of ``classes`` in ``split``, chosen as the index build chooses its references
    (:func:`synthray.index.selection.choose_rows`: distinct images, smallest content hashes
    first, images filed under two classes left out).

    Args:
        labels: shard label columns (:func:`synthray.data.manifest.read_labels`).
        split: the split.
        classes: the classes wanted.
        cap: images per class (int), or None / "all".
        exclude: content hashes never chosen (test images that are also references).
    """
    choice = choose_rows(labels, split, list(classes), parse_cap(cap), exclude=exclude)
    if choice.excluded:
        log.warning("%s split: %d images also appear in the reference split; left out", split, choice.excluded)
    order = sorted(choice.hashes, key=lambda c: (c != REAL, c))
    hashes = [h for c in order for h in choice.hashes[c]]
    gens = [c for c in order for _ in choice.hashes[c]]
    rows = labels.filter((pc.field("split") == split) & pc.field("content_hash").isin(hashes))
    paths = dict(zip(rows.column("content_hash").to_pylist(), rows.column("source_path").to_pylist()))
    return RowSet(
        split,
        np.asarray(hashes, dtype=str).reshape(-1),
        np.asarray(gens, dtype=str).reshape(-1),
        np.asarray([paths[h] for h in hashes], dtype=str).reshape(-1),
    )


def available(labels: pa.Table, split: str) -> dict[str, int]:
    """Distinct usable images per class in ``split`` (what :func:`select_rows` can choose from)."""
    in_split = labels.filter(pc.field("split") == split)
    classes = sorted(set(in_split.column("generator").to_pylist()))
    return choose_rows(labels, split, classes, None).available if classes else {}


def iter_images(
    shards: str | Path | Sequence[str | Path], split: str, hashes: Sequence[str] | np.ndarray, batch_size: int
) -> Iterator[tuple[list[str], list[bytes]]]:
    """Streams (content hashes, encoded bytes) of the given rows, ``batch_size`` at a time."""
    wanted = pc.field("content_hash").isin(list(hashes))
    flt = row_filter(split) & wanted
    dataset = pads.dataset(find_shards(shards), format="parquet")
    buf_h: list[str] = []
    buf_b: list[bytes] = []
    for record_batch in dataset.to_batches(columns=["content_hash", "image"], filter=flt, batch_size=batch_size):
        buf_h.extend(record_batch.column("content_hash").to_pylist())
        buf_b.extend(record_batch.column("image").to_pylist())
        while len(buf_h) >= batch_size:
            yield buf_h[:batch_size], buf_b[:batch_size]
            buf_h, buf_b = buf_h[batch_size:], buf_b[batch_size:]
    if buf_h:
        yield buf_h, buf_b


def embed_rows(
    embedder,
    shards: str | Path | Sequence[str | Path],
    rows: RowSet,
    batch_size: int = 64,
    transform: Callable[[bytes], bytes] | None = None,
    what: str = "",
) -> np.ndarray:
    """Embeddings of ``rows`` in their order (streamed; progress logged).

    Args:
        embedder: a :class:`~synthray.attribution.Embedder`.
        shards: the shard folder.
        rows: which rows.
        batch_size: images per read and forward pass.
        transform: applied to each encoded image before the encoder's preprocessing
            (robustness degradations).
        what: a name for the progress log.
    Returns:
        (len(rows), D) float32 unit vectors.
    Raises:
        ValueError: rows that the shards no longer hold.
    """
    position = {h: i for i, h in enumerate(rows.content_hash)}
    out = np.zeros((len(rows), embedder.dim), dtype=np.float32)
    done = np.zeros(len(rows), dtype=bool)
    start = last = time.perf_counter()
    for hashes, images in iter_images(shards, rows.split, rows.content_hash, batch_size):
        if transform is not None:
            images = [transform(b) for b in images]
        idx = np.asarray([position[h] for h in hashes])
        out[idx] = embedder.embed_bytes(images)
        done[idx] = True
        now = time.perf_counter()
        if now - last > 30:
            last = now
            log.info(
                "embedding %s: %d/%d images (%.1f img/s)",
                what or rows.split,
                int(done.sum()),
                len(rows),
                done.sum() / (now - start),
            )
    if not done.all():
        raise ValueError(
            f"{int((~done).sum())} selected {rows.split} rows are missing from {shards} "
            "(shards changed during evaluation?)"
        )
    log.info("embedded %d %s images in %.1f s", len(rows), what or rows.split, time.perf_counter() - start)
    return out
