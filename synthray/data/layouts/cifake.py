"""The CIFAKE layout: ``{train,test}/{REAL,FAKE}/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from synthray.config import SplitConfig
from synthray.data.layouts.base import (
    carve_split,
    register_layout,
    StrayHandler,
    _by_lower_name,
    _check_root,
    _child_dirs,
    _children,
    _describe,
    _log_stray,
    _records,
    _rel,
    _stray_tree,
)
from synthray.data.schema import REAL, SourceRecord


_CIFAKE_EXPECTED = "{train,test}/{REAL,FAKE}/<files>"


@register_layout("cifake")
def scan_cifake(root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None) -> Iterator[SourceRecord]:
    """CIFAKE (Bird & Lotfi 2023): ``{train,test}/{REAL,FAKE}/*``; fakes are SD1.4.

    ``train`` is split train/val by hash, ``test`` is test. Folder names match in any case.

    Args:
        root: the folder holding ``train/`` and/or ``test/``.
        split_cfg: val fraction and hash salt.
        on_stray: receives files with no label (default: a logged warning).
    Returns:
        an iterator of records, ``dataset="cifake"``, ``category=""``.
    Raises:
        ValueError: if neither ``train/`` nor ``test/`` holds a ``REAL/`` or ``FAKE/`` folder.
    """
    root = _check_root(root)
    report = on_stray or _log_stray
    dirs, files = _children(root)
    parts = _by_lower_name(dirs)
    if not any(_child_dirs(parts[key], {"real", "fake"}) for key in ("train", "test") if key in parts):
        raise ValueError(f"{root}: not a CIFAKE tree: expected {_CIFAKE_EXPECTED}; found {_describe(root)}")
    return _iter_cifake(root, split_cfg, report, dirs, files)


def _iter_cifake(
    root: Path, split_cfg: SplitConfig, report: StrayHandler, dirs: list[Path], files: list[Path]
) -> Iterator[SourceRecord]:
    for file in files:
        report(_rel(file, root), "misplaced", f"loose file; expected {_CIFAKE_EXPECTED}")
    for folder in dirs:
        key = folder.name.lower()
        if key not in ("train", "test"):
            _stray_tree(folder, root, "misplaced", f"expected {_CIFAKE_EXPECTED}", report)
            continue
        split: str | Callable[[str], str] = (
            "test" if key == "test" else (lambda rel: carve_split(rel, split_cfg, with_test=False))
        )
        class_dirs, loose = _children(folder)
        for file in loose:
            report(_rel(file, root), "misplaced", "loose file beside REAL/ and FAKE/")
        for class_dir in class_dirs:
            label = class_dir.name.lower()
            if label not in ("real", "fake"):
                _stray_tree(class_dir, root, "wrong_label_folder", f"{class_dir.name}/ is not REAL/ or FAKE/", report)
                continue
            yield from _records(
                class_dir,
                root,
                generator=REAL if label == "real" else "SD1.4",
                dataset="cifake",
                category="",
                split=split,
            )
