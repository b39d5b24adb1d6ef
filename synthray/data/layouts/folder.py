"""The plain layout: ``<label>/*``, optional split folders and a ``sources.csv`` of pairs."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Iterator

from synthray.config import SplitConfig
from synthray.data.generators import normalize_generator
from synthray.data.layouts.base import (
    carve_split,
    register_layout,
    StrayHandler,
    _check_root,
    _children,
    _describe,
    _log_stray,
    _records,
    _rel,
)
from synthray.data.schema import SourceRecord


@register_layout("folder")
def scan_folder(root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None) -> Iterator[SourceRecord]:
    """A plain ``<label>/*`` tree: each top folder is a generator (or real) label.

    Labels pass through :func:`~synthray.data.generators.normalize_generator`, so ``real``,
    ``nature``, ``0_real`` ... are real and ``sdv4`` is SD1.4; any other label keeps its own
    spelling. A file directly under ``<label>/train/``, ``val/`` or ``test/`` (any depth below)
    is in that split, so a tree can be split by source photograph rather than by file;
    everything else gets a split drawn by hash with ``SplitConfig.val_fraction`` and
    ``test_fraction``. A ``sources.csv`` at the root (header ``relpath,source``) names, for a
    generated image, the real image it was made from: both get that source as their ``group``
    (DRCT-style pairs for training), and a source the tree does not hold is an error.

    Args:
        root: the folder holding one sub-folder per label.
        split_cfg: fractions and hash salt.
        on_stray: receives files with no label (loose files in ``root``).
    Returns:
        an iterator of records, ``dataset="folder"``, ``category=""``.
    Raises:
        ValueError: if ``root`` has no sub-folder.
    """
    root = _check_root(root)
    report = on_stray or _log_stray
    dirs, files = _children(root)
    if not dirs:
        raise ValueError(f"{root}: not a labelled folder tree: expected <label>/<files>; found {_describe(root)}")
    return _iter_folder(root, split_cfg, report, dirs, files)


def _iter_folder(
    root: Path, split_cfg: SplitConfig, report: StrayHandler, dirs: list[Path], files: list[Path]
) -> Iterator[SourceRecord]:
    sources = _read_sources(root)
    for file in files:
        if file.name != SOURCES_FILE or not sources:
            report(_rel(file, root), "misplaced", "loose file; expected <label>/<files>")

    def split_of(rel: str) -> str:
        parts = rel.split("/")
        if len(parts) > 2 and parts[1].lower() in SPLIT_FOLDERS:
            return parts[1].lower()
        return carve_split(rel, split_cfg, with_test=True)

    found: set[str] = set()
    for label_dir in dirs:
        for record in _records(
            label_dir,
            root,
            generator=normalize_generator(label_dir.name),
            dataset="folder",
            category="",
            split=split_of,
        ):
            found.add(record.relpath)
            group = sources.get(record.relpath, record.relpath if record.relpath in sources.values() else "")
            yield dataclasses.replace(record, group=group) if group else record
    missing = sorted(set(sources.values()) - found)
    if missing:
        raise ValueError(f"{root / SOURCES_FILE} names sources the tree does not hold: {missing[:5]}")


#: Split sub-folders the plain layout honours under a label folder.
SPLIT_FOLDERS = ("train", "val", "test")
#: The plain layout's optional pairing file: ``relpath,source`` of generated images.
SOURCES_FILE = "sources.csv"


def _read_sources(root: Path) -> dict[str, str]:
    """``relpath -> source relpath`` from ``root/sources.csv``, or {} when there is none."""
    path = root / SOURCES_FILE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"relpath", "source"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header 'relpath,source', got {reader.fieldnames}")
        return {row["relpath"]: row["source"] for row in reader}
