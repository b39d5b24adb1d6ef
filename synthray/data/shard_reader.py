"""What the stream reads from the shards: which files, which columns, which rows.

Shared by the Ray Data pipeline (``pipeline.py``), the single-process loader
(``loader.py``) and everything that counts rows per class without reading an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow.compute as pc
import pyarrow.dataset as pads

from synthray.config import PipelineConfig
from synthray.data.schema import REAL
from synthray.data.shards import shard_paths

#: Columns carried through preprocessing next to the pixels.
PASSTHROUGH = ("generator", "content_hash", "is_real", "split", "source_path")
#: The source-group column, read only when pair batches ask for it (older shards lack it).
GROUP = "group"


def read_columns(pipeline: PipelineConfig) -> list[str]:
    """The shard columns a pipeline reads."""
    return ["image", *PASSTHROUGH, *((GROUP,) if pipeline.pairs else ())]


def real_label_of(class_names: Sequence[str]) -> int | None:
    """The label index of the real class, or None when it is not among the classes."""
    return list(class_names).index(REAL) if REAL in class_names else None


def find_shards(shards: str | Path | Sequence[str | Path]) -> list[str]:
    """Resolves a shard folder (or an explicit list) to sorted Parquet file paths."""
    if isinstance(shards, (str, Path)):
        root = Path(shards)
        if root.is_file():
            return [str(root)]
        # Only shards with a completion receipt: a leftover of an interrupted ingest is
        # not data yet.
        files = [str(p) for p in shard_paths(root)]
        if not files:
            raise FileNotFoundError(f"no Parquet shards (*.parquet) in {root}; run `synthray ingest` first")
        return files
    files = [str(p) for p in shards]
    if not files:
        raise ValueError("empty shard list")
    return files


def row_filter(split: str | None = None, classes: Sequence[str] | None = None) -> pc.Expression | None:
    """A pyarrow predicate selecting a split and/or generator classes (for plain pyarrow reads)."""
    expr = None
    if split is not None:
        expr = pc.field("split") == split
    if classes is not None:
        cls = pc.field("generator").isin(list(classes))
        expr = cls if expr is None else (expr & cls)
    return expr


def ray_filter(split: str | None, classes: Sequence[str]) -> "Any":
    """The same predicate as a Ray Data expression; Ray pushes it into the Parquet scan,
    so rows of other splits/classes never have their image bytes read."""
    from ray.data.expressions import col

    expr = col("generator").is_in(list(classes))
    if split is not None:
        expr = (col("split") == split) & expr
    return expr


def class_counts(shards: str | Path | Sequence[str | Path], split: str | None = None) -> dict[str, int]:
    """Rows per generator, read from the label columns only (no image bytes)."""
    dataset = pads.dataset(find_shards(shards), format="parquet")
    table = dataset.to_table(columns=["generator"], filter=row_filter(split))
    counts = table.column("generator").value_counts()
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
