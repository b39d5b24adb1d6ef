"""What every layout reader shares: the registry, hashed splits, sorted walking, strays."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Protocol

from synthray.config import SplitConfig
from synthray.data.schema import SourceRecord
from synthray.registry import Registry

logger = logging.getLogger(__name__)

#: ``on_stray(relpath, reason, message)``: a file the layout cannot label.
StrayHandler = Callable[[str, str, str], None]

#: Reason codes a reader gives strays (validation has its own, see ``validate.REASONS``).
STRAY_REASONS = ("wrong_label_folder", "misplaced")


class LayoutReader(Protocol):
    """What :func:`register_layout` accepts: a scan function over one layout."""

    def __call__(
        self, root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None
    ) -> Iterator[SourceRecord]: ...


_LAYOUTS: Registry[LayoutReader] = Registry("layout")


def register_layout(name: str) -> Callable[[LayoutReader], LayoutReader]:
    """Registers a layout reader under ``name``, the name users pass on the command line
    (``synthray ingest <name> ...``) (decorator).

    Raises:
        ValueError: if ``name`` is already registered.
    """
    return _LAYOUTS.register(name)


def list_layouts() -> list[str]:
    """Names of every registered layout, sorted."""
    return _LAYOUTS.names()


def get_layout(name: str) -> LayoutReader:
    """The reader registered as ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    return _LAYOUTS.get(name)


# --------------------------------------------------------------------------- splits


def hash_unit(relpath: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) for a file.

    Python's ``hash()`` is salted per process, so splits use blake2b instead: the same
    file lands in the same split on every run and machine.

    Args:
        relpath: the file's path relative to the data set root (posix separators).
        salt: ``SplitConfig.salt``.
    Returns:
        a float in [0, 1).
    """
    digest = hashlib.blake2b(f"{salt}\0{relpath}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def carve_split(relpath: str, split_cfg: SplitConfig, *, with_test: bool) -> str:
    """Draws a split by hash for a layout part that has none of its own.

    Args:
        relpath: the file's path relative to the root.
        split_cfg: fractions and salt.
        with_test: True for layouts with no test part at all (a test share is carved too);
            False for a layout's train part (only val is carved out).
    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    u = hash_unit(relpath, split_cfg.salt)
    if with_test:
        if u < split_cfg.test_fraction:
            return "test"
        if u < split_cfg.test_fraction + split_cfg.val_fraction:
            return "val"
        return "train"
    return "val" if u < split_cfg.val_fraction else "train"


# --------------------------------------------------------------------------- walking


def _log_stray(relpath: str, reason: str, message: str) -> None:
    logger.warning("stray file %s (%s): %s", relpath, reason, message)


def _children(directory: Path) -> tuple[list[Path], list[Path]]:
    """Sorted (sub-directories, other entries) of a folder, hidden names left out."""
    dirs: list[Path] = []
    others: list[Path] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks: a linked folder is a folder
            except OSError:
                is_dir = False  # cannot tell; let ingest report it as unreadable
            (dirs if is_dir else others).append(Path(entry.path))
    dirs.sort(key=lambda p: p.name)
    others.sort(key=lambda p: p.name)
    return dirs, others


def _walk_files(directory: Path, _seen: set[str] | None = None) -> Iterator[Path]:
    """Every non-hidden, non-directory entry under ``directory``, depth first, sorted."""
    seen = _seen if _seen is not None else set()
    real = os.path.realpath(directory)
    if real in seen:  # a symlink cycle; walking it again would never end
        logger.warning("skipping %s: symlink loop back to %s", directory, real)
        return
    seen.add(real)
    dirs, files = _children(directory)
    yield from files
    for sub in dirs:
        yield from _walk_files(sub, seen)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _stray_tree(path: Path, root: Path, reason: str, message: str, on_stray: StrayHandler) -> None:
    """Reports one stray file, or every file under a stray folder."""
    if path.is_dir():
        for file in _walk_files(path):
            on_stray(_rel(file, root), reason, message)
    else:
        on_stray(_rel(path, root), reason, message)


def _check_root(root: Path | str) -> Path:
    path = Path(os.path.abspath(root))
    if not path.is_dir():
        raise ValueError(f"{path}: data set root is not a directory")
    return path


def _describe(directory: Path, limit: int = 12) -> str:
    """A short listing of a folder for error messages ("train/, val/, notes.txt")."""
    dirs, files = _children(directory)
    names = [d.name + "/" for d in dirs] + [f.name for f in files]
    if not names:
        return "an empty folder"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _child_dirs(directory: Path, names: set[str] | None = None) -> list[Path]:
    """Non-hidden sub-folders, optionally only those whose lower-cased name is in ``names``.

    Used by the shape checks, which look only at folder names near the top of a tree.
    """
    try:
        dirs, _ = _children(directory)
    except OSError:
        return []
    return [d for d in dirs if names is None or d.name.lower() in names]


def _by_lower_name(paths: list[Path]) -> dict[str, Path]:
    return {p.name.lower(): p for p in paths}


def _records(
    folder: Path,
    root: Path,
    *,
    generator: str,
    dataset: str,
    category: str,
    split: str | Callable[[str], str],
) -> Iterator[SourceRecord]:
    """Records for every file under a class folder; ``split`` is fixed or drawn per relpath."""
    for file in _walk_files(folder):
        relpath = _rel(file, root)
        yield SourceRecord(
            path=str(file),
            relpath=relpath,
            generator=generator,
            split=split if isinstance(split, str) else split(relpath),
            dataset=dataset,
            category=category,
        )
