"""A shard folder's ``manifest.json``: what an ingest run wrote, rebuilt from every receipt.

It counts images per class and split, the bad files with their reasons, and the images found
twice (same content hash); readers (the pipeline, evaluation) read it with :func:`read_manifest`
and the label columns of the shards with :func:`read_labels`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthray.data.files import write_json_atomic
from synthray.data.schema import LABEL_COLUMNS, SHARD_SCHEMA
from synthray.data.shards import read_receipts

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of an ingest output folder.

    Args:
        out: an ingest output folder.
    Returns:
        the manifest dict (see :func:`build_manifest`).
    Raises:
        FileNotFoundError: if ``out`` has no manifest (nothing was ingested there).
    """
    path = Path(out) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `synthray ingest` into {Path(out)} first")
    return json.loads(path.read_text(encoding="utf-8"))


def read_labels(paths: Iterable[str | Path]) -> pa.Table:
    """Every column but the image bytes, from the given shards, concatenated.

    Args:
        paths: shard files.
    Returns:
        a table with :data:`LABEL_COLUMNS` (empty when there are no shards).
    """
    tables = [pq.read_table(p, columns=LABEL_COLUMNS) for p in paths]
    if not tables:
        return pa.schema([SHARD_SCHEMA.field(c) for c in LABEL_COLUMNS]).empty_table()
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------- manifest


def _counts(labels: pa.Table) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    if labels.num_rows:
        grouped = labels.group_by(["generator", "split"]).aggregate([("source_path", "count")])
        for row in grouped.to_pylist():
            counts[row["generator"]][row["split"]] = row["source_path_count"]
    return {gen: dict(sorted(splits.items())) for gen, splits in sorted(counts.items())}


def _duplicates(labels: pa.Table) -> list[dict[str, Any]]:
    """Groups of rows with the same content hash; cross-class groups first."""
    if not labels.num_rows:
        return []
    per_hash = labels.group_by("content_hash").aggregate([("content_hash", "count")])
    repeated = per_hash.filter(pc.greater(per_hash["content_hash_count"], 1))["content_hash"]
    if not len(repeated):
        return []
    rows = labels.filter(pc.is_in(labels["content_hash"], value_set=repeated))
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows.select(["content_hash", "source_path", "generator", "split"]).to_pylist():
        groups[row["content_hash"]].append(
            {"source_path": row["source_path"], "generator": row["generator"], "split": row["split"]}
        )
    result: list[dict[str, Any]] = []
    for content_hash, files in groups.items():
        files.sort(key=lambda f: f["source_path"])
        generators = sorted({f["generator"] for f in files})
        splits = sorted({f["split"] for f in files})
        result.append(
            {
                "content_hash": content_hash,
                "count": len(files),
                "labels": generators,
                "splits": splits,
                # The same bytes under two labels cannot both be right: a labelling error.
                "cross_class": len(generators) > 1,
                # The same bytes in train and test inflate test scores (leakage).
                "cross_split": len(splits) > 1,
                "files": files,
            }
        )
    result.sort(key=lambda g: (not g["cross_class"], g["files"][0]["source_path"]))
    return result


def build_manifest(
    out: str | Path,
    *,
    layout: str,
    root: str,
    config: dict[str, Any],
    strays: list[dict[str, str]],
    scanned: set[str] | None = None,
    run: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Rebuilds the manifest from every valid receipt and shard in ``out``.

    Args:
        out: the output folder.
        layout: layout name.
        root: the ingested root.
        config: the resolved ingest config (``synthray.config.to_dict``).
        strays: files the layout could not label, as ``{relpath, reason, message}``.
        scanned: relpaths the current scan found; relpaths in receipts but not here are
            listed as ``missing_from_input``. ``None`` skips that check.
        run: facts about this run (files ingested, shards written, failures ...).
        timings: seconds per phase.
    Returns:
        the manifest dict (also the content of ``manifest.json``): ``layout``, ``root``,
        ``config``, ``total_rows``, ``total_bytes`` (encoded image bytes),
        ``total_shard_bytes``, ``counts`` (generator -> split -> rows), ``split_totals``,
        ``shards`` (``file``, ``rows``, ``bytes``), ``num_bad``, ``bad_reasons``, ``bad``
        (``relpath``, ``reason``, ``message``), ``num_duplicate_groups``,
        ``num_cross_class_duplicate_groups``, ``duplicates`` (``content_hash``, ``count``,
        ``labels``, ``splits``, ``cross_class``, ``cross_split``, ``files``),
        ``missing_from_input``, ``run``, ``timings``.
    """
    out = Path(out).absolute()
    receipts = read_receipts(out, verify=True)
    shards = [
        {"file": r["file"], "rows": r["rows"], "bytes": r.get("bytes", 0)}
        for _, r in sorted(receipts.items())
        if r["file"]
    ]
    labels = read_labels(out / s["file"] for s in shards)
    bad = [dict(b) for r in receipts.values() for b in r["bad"]] + [dict(s) for s in strays]
    bad.sort(key=lambda b: b["relpath"])
    reasons: dict[str, int] = defaultdict(int)
    for item in bad:
        reasons[item["reason"]] += 1
    counts = _counts(labels)
    split_totals: dict[str, int] = defaultdict(int)
    for splits in counts.values():
        for split, n in splits.items():
            split_totals[split] += n
    duplicates = _duplicates(labels)
    missing: list[str] = []
    if scanned is not None:
        covered = (p for r in receipts.values() for p in [*r["good"], *(b["relpath"] for b in r["bad"])])
        missing = sorted(p for p in covered if p not in scanned)
    total_bytes = pc.sum(labels["num_bytes"]).as_py() if labels.num_rows else 0
    return {
        "format_version": MANIFEST_VERSION,
        "layout": layout,
        "root": root,
        "out": str(out),
        "config": config,
        "total_rows": labels.num_rows,
        "total_bytes": int(total_bytes or 0),
        "total_shard_bytes": sum(s["bytes"] for s in shards),
        "counts": counts,
        "split_totals": dict(sorted(split_totals.items())),
        "shards": shards,
        "num_bad": len(bad),
        "bad_reasons": dict(sorted(reasons.items())),
        "bad": bad,
        "num_duplicate_groups": len(duplicates),
        "num_cross_class_duplicate_groups": sum(g["cross_class"] for g in duplicates),
        "duplicates": duplicates,
        "missing_from_input": missing,
        "run": run or {},
        "timings": timings or {},
    }


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest.json`` atomically.

    Args:
        out: the output folder.
        manifest: from :func:`build_manifest`.
    Returns:
        the manifest's path.
    """
    path = Path(out) / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path
