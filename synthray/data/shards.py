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
:func:`synthray.data.manifest.read_manifest`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synthray.data.files import tmp_path, write_json_atomic
from synthray.data.schema import LABEL_COLUMNS, SHARD_SCHEMA

logger = logging.getLogger(__name__)

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
        self._tmp = tmp_path(self.path)
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
        if _TMP_RE.match(name) or (shard and name not in keep) or (receipt and int(receipt.group(1)) not in valid):
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
