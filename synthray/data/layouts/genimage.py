"""The GenImage layout: ``<generator>/{train,val}/{ai,nature}/*`` (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from synthray.config import SplitConfig
from synthray.data.generators import lookup_generator, normalize_generator
from synthray.data.layouts.base import (
    carve_split,
    register_layout,
    StrayHandler,
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


_GENIMAGE_SPLITS = {"train": None, "val": "test"}  # None = train with a hashed val carve-out
_GENIMAGE_EXPECTED = (
    "<generator>/{train,val}/{ai,nature}/<files> "
    "(or <generator>/<subdir such as imagenet_ai_0419_sdv4>/{train,val}/{ai,nature}/<files>)"
)


def _has_split_dirs(directory: Path) -> bool:
    """Whether ``directory`` holds ``train/`` or ``val/`` with an ``ai/`` or ``nature/`` inside."""
    return any(_child_dirs(split_dir, {"ai", "nature"}) for split_dir in _child_dirs(directory, set(_GENIMAGE_SPLITS)))


@register_layout("genimage")
def scan_genimage(root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None) -> Iterator[SourceRecord]:
    """GenImage: ``<generator>/{train,val}/{ai,nature}/*``.

    The release's extra level ``<generator>/<subdir>/{train,val}/...`` is accepted too; the
    generator name comes from ``<generator>`` unless only ``<subdir>`` is a known spelling.
    A root that is itself one generator folder (``root/{train,val}/...``) is named after
    the root folder. GenImage's ``train`` becomes train with a hashed val carve-out
    (``SplitConfig.val_fraction``); its ``val`` becomes **test**, as the thesis uses it as
    its test set. ``nature`` is real (ImageNet), ``ai`` is the generator.

    Args:
        root: the GenImage folder.
        split_cfg: val fraction and hash salt.
        on_stray: receives files with no label (default: a logged warning).
    Returns:
        an iterator of records, ``dataset="genimage"``, ``category=""``.
    Raises:
        ValueError: if no folder under ``root`` (nor ``root`` itself) holds ``train/`` or
            ``val/`` with ``ai/`` or ``nature/`` inside.
    """
    root = _check_root(root)
    report = on_stray or _log_stray
    parents, strays = _genimage_parents(root)
    if not parents:
        raise ValueError(f"{root}: not a GenImage tree: expected {_GENIMAGE_EXPECTED}; found {_describe(root)}")
    return _iter_genimage(root, split_cfg, report, parents, strays)


def _iter_genimage(
    root: Path,
    split_cfg: SplitConfig,
    report: StrayHandler,
    parents: list[tuple[str, Path]],
    strays: list[tuple[Path, str]],
) -> Iterator[SourceRecord]:
    # Strays found by the shape check are reported only now, once the tree is known to be
    # GenImage (a wrong tree must fail fast, not first walk every file as a stray).
    for path, message in strays:
        _stray_tree(path, root, "misplaced", message, report)
    for generator, parent in parents:
        yield from _genimage_splits(parent, root, generator, split_cfg, report)


def _genimage_parents(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[Path, str]]]:
    """(generator, folder holding train/ and val/) pairs, and (stray path, why) pairs."""
    if _has_split_dirs(root):
        return [(normalize_generator(root.name), root)], []
    parents: list[tuple[str, Path]] = []
    strays: list[tuple[Path, str]] = []
    dirs, files = _children(root)
    strays += [(file, f"loose file; expected {_GENIMAGE_EXPECTED}") for file in files]
    for gen_dir in dirs:
        if _has_split_dirs(gen_dir):
            parents.append((normalize_generator(gen_dir.name), gen_dir))
            continue
        sub_dirs, sub_files = _children(gen_dir)
        for sub in sub_dirs:
            if _has_split_dirs(sub):
                # The top folder names the generator; the release's subdir is the fallback
                # for a top folder named something the table does not know.
                name = lookup_generator(gen_dir.name) or lookup_generator(sub.name) or gen_dir.name
                parents.append((normalize_generator(name), sub))
            else:
                strays.append((sub, f"no train/ or val/ inside; expected {_GENIMAGE_EXPECTED}"))
        strays += [(file, f"loose file; expected {_GENIMAGE_EXPECTED}") for file in sub_files]
    return parents, strays


def _genimage_splits(
    parent: Path, root: Path, generator: str, split_cfg: SplitConfig, report: StrayHandler
) -> Iterator[SourceRecord]:
    dirs, files = _children(parent)
    for file in files:
        report(_rel(file, root), "misplaced", "loose file beside train/ and val/")
    for split_dir in dirs:
        key = split_dir.name.lower()
        if key not in _GENIMAGE_SPLITS:
            _stray_tree(split_dir, root, "misplaced", "GenImage has only train/ and val/ here", report)
            continue
        fixed = _GENIMAGE_SPLITS[key]
        split: str | Callable[[str], str] = fixed or (lambda rel: carve_split(rel, split_cfg, with_test=False))
        class_dirs, loose = _children(split_dir)
        for file in loose:
            report(_rel(file, root), "misplaced", "loose file beside ai/ and nature/")
        for class_dir in class_dirs:
            label = class_dir.name.lower()
            if label == "ai":
                gen = generator
            elif label == "nature":
                gen = REAL
            else:
                _stray_tree(class_dir, root, "wrong_label_folder", f"{class_dir.name}/ is not ai/ or nature/", report)
                continue
            yield from _records(class_dir, root, generator=gen, dataset="genimage", category="", split=split)
