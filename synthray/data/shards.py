"""The on-disk form of an ingested data set: Parquet shards, receipts and a manifest.

An output folder holds::

    part-00000.parquet     rows of SHARD_SCHEMA (image bytes + labels)
    part-00000.done.json   its receipt: every relpath the shard covered, good and bad
    ...
    manifest.json          rebuilt from all receipts and shards after every ingest run

A shard counts only once its receipt exists. Both are written to a hidden temporary name
and ``os.replace``'d into place, shard first, so a crash leaves either a complete
shard+receipt pair or leftovers that :func:`discard_partial` removes on the next run.
Shard files of a chunk that had no valid image are not written; its receipt says
``"file": null`` and still covers the chunk's (bad) relpaths.

Readers (the preprocessing pipeline) need only :func:`shard_paths` and
:func:`read_manifest`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthray.data.schema import LABEL_COLUMNS, SHARD_SCHEMA

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_RECEIPT_RE = re.compile(r"^part-(\d{5,})\.done\.json$")
_TMP_RE = re.compile(r"^\.(?:part-\d{5,}|manifest)\..*\.tmp$")

# Image bytes are flushed to the file in row groups of about this size, so a worker never
# holds a whole 256 MB shard twice (Python lists + Arrow table) and readers can split a
# shard by row group.
ROW_GROUP_BYTES = 64 * 1024 * 1024


def shard_name(index: int) -> str:
    """``part-00007.parquet`` for index 7."""
    return f"part-{index:05d}.parquet"


def receipt_name(index: int) -> str:
    """``part-00007.done.json`` for index 7."""
    return f"part-{index:05d}.done.json"


def _tmp_path(final: Path) -> Path:
    # Hidden and unique per attempt: a retried task never collides with a dying one, and
    # a directory glob for *.parquet never sees half-written data.
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a hidden temporary name beside ``path``, fsyncs it, and renames it
    over ``path``: a reader (or a crash) sees the old file or the new one, never half of one.
    The one place synthray writes a small file atomically."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_jsonl(path: Path, skip_bad: bool = False) -> list[dict[str, Any]]:
    """The records of a JSON-lines file ([] when there is none); blank lines skipped.

    ``skip_bad``: also skip lines that are not JSON (a line cut by a crash), for readers that
    only show the file; records that must be exact (a training history) leave it False.
    """
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if not skip_bad:
                raise
    return out


def write_json_atomic(path: Path, data: Any, indent: int | None = 1, default: Any = None) -> None:
    """Writes JSON atomically (see :func:`write_text_atomic`).

    Args:
        path: the final file.
        data: anything ``json.dumps`` accepts.
        indent: JSON indentation; None = one line.
        default: ``json.dumps``'s fallback for other objects (None: they are an error).
    """
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=False, default=default) + "\n")


class ShardWriter:
    """Streams rows of :data:`SHARD_SCHEMA` into one shard, atomically.

    Rows go to a hidden temporary file in row groups of about :data:`ROW_GROUP_BYTES`;
    :meth:`commit` renames it into place, :meth:`abort` (or leaving the ``with`` block by an
    exception) deletes it.

    Args:
        path: the final shard path.
        compression: Parquet codec (``"none"``, ``"zstd"``, ...).
    """

    def __init__(self, path: Path, compression: str = "none") -> None:
        self.path = Path(path)
        self.compression = compression
        self.rows = 0
        self._tmp = _tmp_path(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._columns: dict[str, list[Any]] = {name: [] for name in SHARD_SCHEMA.names}
        self._pending_bytes = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, row: dict[str, Any]) -> None:
        """Appends one row (a value for every column of :data:`SHARD_SCHEMA`)."""
        for name, values in self._columns.items():
            values.append(row[name])
        self.rows += 1
        self._pending_bytes += len(row["image"])
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._columns["image"]:
            return
        table = pa.Table.from_pydict(self._columns, schema=SHARD_SCHEMA)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._tmp,
                SHARD_SCHEMA,
                compression=self.compression,
                # Statistics and dictionaries of encoded image bytes are pure overhead
                # (min/max would copy two whole images into the footer of every row group).
                write_statistics=list(LABEL_COLUMNS),
                use_dictionary=list(LABEL_COLUMNS),
            )
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._columns = {name: [] for name in SHARD_SCHEMA.names}
        self._pending_bytes = 0

    def commit(self) -> int:
        """Finishes the file and renames it into place.

        Returns:
            the shard's size in bytes.
        Raises:
            ValueError: if no row was added (empty shards are not written).
        """
        if self.rows == 0:
            raise ValueError(f"{self.path.name}: no rows to write")
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        """Drops everything written so far."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted either way
                logger.debug("closing aborted shard %s failed", self._tmp, exc_info=True)
            self._writer = None
        if self._tmp.exists():
            self._tmp.unlink()


# --------------------------------------------------------------------------- receipts


def write_receipt(out: Path, index: int, receipt: dict[str, Any]) -> Path:
    """Writes the receipt that marks shard ``index`` complete (after the shard itself).

    Args:
        out: the output folder.
        index: the shard index.
        receipt: see :func:`read_receipts` for the keys.
    Returns:
        the receipt's path.
    """
    path = Path(out) / receipt_name(index)
    write_json_atomic(path, receipt)
    return path


def _receipt_problem(out: Path, receipt: dict[str, Any]) -> str | None:
    """Why a receipt cannot be trusted, or None when its shard is intact."""
    for key in ("index", "file", "rows", "good", "bad"):
        if key not in receipt:
            return f"missing key {key!r}"
    if receipt["file"] is None:
        return None if receipt["rows"] == 0 else "no file but rows > 0"
    path = out / receipt["file"]
    if not path.is_file():
        return f"its shard {receipt['file']} is missing"
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - an unreadable footer means a broken shard
        return f"its shard {receipt['file']} is unreadable ({exc})"
    if rows != receipt["rows"]:
        return f"its shard has {rows} rows, the receipt says {receipt['rows']}"
    return None


def read_receipts(out: str | Path, *, verify: bool = True) -> dict[int, dict[str, Any]]:
    """Every receipt in ``out``, by shard index.

    A receipt holds ``index``, ``file`` (shard file name or ``None``), ``rows``, ``bytes``
    (shard file size), ``image_bytes``, ``good`` (relpaths written), ``bad`` (list of
    ``{relpath, reason, message}``), ``layout``, ``root``, ``split``, ``validation``,
    ``seconds``.

    Args:
        out: the output folder.
        verify: skip receipts whose shard is missing or has another row count (logged).
    Returns:
        ``{index: receipt}``.
    """
    out = Path(out)
    receipts: dict[int, dict[str, Any]] = {}
    if not out.is_dir():
        return receipts
    for path in sorted(out.iterdir()):
        match = _RECEIPT_RE.match(path.name)
        if not match:
            continue
        try:
            receipt = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable receipt %s: %s", path.name, exc)
            continue
        problem = _receipt_problem(out, receipt) if verify else None
        if problem:
            logger.warning("ignoring receipt %s: %s", path.name, problem)
            continue
        receipts[int(match.group(1))] = receipt
    return receipts


def discard_partial(out: str | Path) -> list[str]:
    """Removes what an interrupted run left: temp files, shards without a valid receipt,
    and receipts whose shard is gone or damaged (their relpaths are then ingested again).

    Args:
        out: the output folder.
    Returns:
        names of the files removed.
    """
    out = Path(out)
    if not out.is_dir():
        return []
    valid = read_receipts(out, verify=True)
    keep = {receipt["file"] for receipt in valid.values() if receipt["file"]}
    removed: list[str] = []
    for path in sorted(out.iterdir()):
        name = path.name
        shard = _SHARD_RE.match(name)
        receipt = _RECEIPT_RE.match(name)
        if (
            _TMP_RE.match(name)
            or (shard and name not in keep)
            or (receipt and int(receipt.group(1)) not in valid)
        ):
            path.unlink()
            removed.append(name)
    if removed:
        logger.warning("discarded %d leftover file(s) from an interrupted run: %s", len(removed), removed[:10])
    return removed


def next_index(out: str | Path) -> int:
    """The first shard index no receipt or shard file in ``out`` uses."""
    out = Path(out)
    used = [-1]
    if out.is_dir():
        for path in out.iterdir():
            match = _SHARD_RE.match(path.name) or _RECEIPT_RE.match(path.name)
            if match:
                used.append(int(match.group(1)))
    return max(used) + 1


# --------------------------------------------------------------------------- readers


def shard_paths(out: str | Path) -> list[Path]:
    """Complete shards (those with a valid receipt), in index order.

    Args:
        out: an ingest output folder.
    Returns:
        absolute shard paths, ready for ``ray.data.read_parquet``.
    """
    out = Path(out).absolute()
    receipts = read_receipts(out, verify=True)
    return [out / r["file"] for _, r in sorted(receipts.items()) if r["file"]]


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


def read_labels(paths: Iterable[Path]) -> pa.Table:
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
    result = []
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
