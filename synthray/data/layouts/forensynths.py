"""The ForenSynths (CNNDetection) layout: ``<generator>/[<category>/]{0_real,1_fake}/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from synthray.config import SplitConfig
from synthray.data.generators import normalize_generator
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


_FS_LABELS = {"0_real": False, "1_fake": True}  # folder -> is fake
_FS_EXPECTED = (
    "train/<object class>/{0_real,1_fake}/<files>, val/<object class>/{0_real,1_fake}/<files> "
    "and/or test/<generator>/[<object class>/]{0_real,1_fake}/<files>"
)


@register_layout("forensynths")
def scan_forensynths(
    root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None
) -> Iterator[SourceRecord]:
    """ForenSynths (CNNDetection, Wang et al. 2020).

    ``train/<class>/{0_real,1_fake}/*`` is ProGAN training data, split train/val by hash;
    ``val/<class>/...`` (the separate ProGAN validation download), when present, is val;
    ``test/<generator>/[<class>/]{0_real,1_fake}/*`` is test, the fakes labelled with the
    normalised generator folder name. ``category`` is the object class ("" where none).

    Args:
        root: the folder holding ``train/``, ``val/`` and/or ``test/``.
        split_cfg: val fraction and hash salt.
        on_stray: receives files with no label (default: a logged warning).
    Returns:
        an iterator of records, ``dataset="forensynths"``.
    Raises:
        ValueError: if no ``0_real/`` or ``1_fake/`` folder sits where the layout puts them.
    """
    root = _check_root(root)
    report = on_stray or _log_stray
    dirs, files = _children(root)
    parts = _by_lower_name(dirs)
    labels = set(_FS_LABELS)
    # train/<class>/<label>, val/<class>/<label>, test/<generator>/[<class>/]<label>; a label
    # folder one level higher is accepted too (a single class without its folder).
    matches = any(
        _child_dirs(level1, labels) or any(_child_dirs(level2, labels) for level2 in _child_dirs(level1))
        for key in ("train", "val", "test")
        if key in parts
        for level1 in [parts[key], *_child_dirs(parts[key])]
    )
    if not matches:
        raise ValueError(f"{root}: not a ForenSynths tree: expected {_FS_EXPECTED}; found {_describe(root)}")
    return _iter_forensynths(root, split_cfg, report, dirs, files)


def _iter_forensynths(
    root: Path, split_cfg: SplitConfig, report: StrayHandler, dirs: list[Path], files: list[Path]
) -> Iterator[SourceRecord]:
    parts = _by_lower_name(dirs)
    for file in files:
        report(_rel(file, root), "misplaced", f"loose file; expected {_FS_EXPECTED}")
    for folder in dirs:
        key = folder.name.lower()
        if key not in ("train", "val", "test"):
            _stray_tree(folder, root, "misplaced", f"expected {_FS_EXPECTED}", report)
    if "train" in parts:
        yield from _fs_labelled(
            parts["train"],
            root,
            report,
            fake="ProGAN",
            category="",
            allow_class=True,
            split=lambda rel: carve_split(rel, split_cfg, with_test=False),
        )
    if "val" in parts:
        yield from _fs_labelled(parts["val"], root, report, fake="ProGAN", category="", allow_class=True, split="val")
    if "test" in parts:
        gen_dirs, loose = _children(parts["test"])
        for file in loose:
            report(_rel(file, root), "misplaced", "loose file; expected test/<generator>/...")
        for gen_dir in gen_dirs:
            yield from _fs_labelled(
                gen_dir,
                root,
                report,
                fake=normalize_generator(gen_dir.name),
                category="",
                allow_class=True,
                split="test",
            )


def _fs_labelled(
    folder: Path,
    root: Path,
    report: StrayHandler,
    *,
    fake: str,
    category: str,
    allow_class: bool,
    split: str | Callable[[str], str],
) -> Iterator[SourceRecord]:
    """Walks ``folder/{0_real,1_fake}`` or, where allowed, ``folder/<class>/{0_real,1_fake}``."""
    dirs, files = _children(folder)
    for file in files:
        report(_rel(file, root), "misplaced", "loose file; expected 0_real/ and 1_fake/ folders")
    for sub in dirs:
        key = sub.name.lower()
        if key in _FS_LABELS:
            yield from _records(
                sub,
                root,
                generator=fake if _FS_LABELS[key] else REAL,
                dataset="forensynths",
                category=category,
                split=split,
            )
        elif allow_class:
            yield from _fs_labelled(sub, root, report, fake=fake, category=sub.name, allow_class=False, split=split)
        else:
            _stray_tree(sub, root, "wrong_label_folder", f"{sub.name}/ is not 0_real/ or 1_fake/", report)
