"""Readers that turn a data set's folder tree into :class:`SourceRecord` s.

Each reader knows one layout as it ships (see DESIGN.md) and is registered by name::

    for record in get_layout("genimage")(Path("/data/GenImage"), SplitConfig()):
        ...

Readers do not open files. They yield every non-hidden, non-directory entry found where an
image belongs (ingest's validation decides what is an image, so a ``.txt`` in a class folder is
reported as bad, not silently skipped), labelled with the canonical generator name
(:func:`~synthray.data.generators.normalize_generator`) and a split. Files the layout has no
label for (a ``fake/`` folder where ``ai/`` and ``nature/`` belong, a loose file beside the
class folders) are handed to ``on_stray(relpath, reason, message)`` with reason
``wrong_label_folder`` or ``misplaced``; the default logs a warning. Hidden entries (names
starting with ``.``) are skipped. Traversal is sorted by name at every level, so the order
is deterministic. Sub-folders of a class folder are walked too: everything inside
``ai/`` is AI-made, however it is organised.

A reader checks the tree's shape when called (a root that does not match raises
``ValueError`` at once, naming what was expected and what was found); records and strays
then stream lazily as the returned iterator is consumed.

Splits the layout does not give are drawn by a stable hash of ``salt + relpath``
(:func:`hash_unit`), so they never change between runs or machines.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Protocol

from synthray.config import SplitConfig
from synthray.data.generators import lookup_generator, normalize_generator
from synthray.data.schema import REAL, SourceRecord
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


# --------------------------------------------------------------------------- GenImage

_GENIMAGE_SPLITS = {"train": None, "val": "test"}  # None = train with a hashed val carve-out
_GENIMAGE_EXPECTED = (
    "<generator>/{train,val}/{ai,nature}/<files> "
    "(or <generator>/<subdir such as imagenet_ai_0419_sdv4>/{train,val}/{ai,nature}/<files>)"
)


def _has_split_dirs(directory: Path) -> bool:
    """Whether ``directory`` holds ``train/`` or ``val/`` with an ``ai/`` or ``nature/`` inside."""
    return any(
        _child_dirs(split_dir, {"ai", "nature"})
        for split_dir in _child_dirs(directory, set(_GENIMAGE_SPLITS))
    )


@register_layout("genimage")
def scan_genimage(
    root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None
) -> Iterator[SourceRecord]:
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
        raise ValueError(
            f"{root}: not a GenImage tree: expected {_GENIMAGE_EXPECTED}; found {_describe(root)}"
        )
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
        split: str | Callable[[str], str] = fixed or (
            lambda rel: carve_split(rel, split_cfg, with_test=False)
        )
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


# --------------------------------------------------------------------------- ForenSynths

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
        _child_dirs(level1, labels)
        or any(_child_dirs(level2, labels) for level2 in _child_dirs(level1))
        for key in ("train", "val", "test") if key in parts
        for level1 in [parts[key], *_child_dirs(parts[key])]
    )
    if not matches:
        raise ValueError(
            f"{root}: not a ForenSynths tree: expected {_FS_EXPECTED}; found {_describe(root)}"
        )
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
            parts["train"], root, report, fake="ProGAN", category="", allow_class=True,
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
                gen_dir, root, report, fake=normalize_generator(gen_dir.name), category="",
                allow_class=True, split="test",
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
                sub, root, generator=fake if _FS_LABELS[key] else REAL,
                dataset="forensynths", category=category, split=split,
            )
        elif allow_class:
            yield from _fs_labelled(sub, root, report, fake=fake, category=sub.name, allow_class=False, split=split)
        else:
            _stray_tree(sub, root, "wrong_label_folder", f"{sub.name}/ is not 0_real/ or 1_fake/", report)


# --------------------------------------------------------------------------- CIFAKE

_CIFAKE_EXPECTED = "{train,test}/{REAL,FAKE}/<files>"


@register_layout("cifake")
def scan_cifake(
    root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None
) -> Iterator[SourceRecord]:
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
                class_dir, root, generator=REAL if label == "real" else "SD1.4",
                dataset="cifake", category="", split=split,
            )


# --------------------------------------------------------------------------- plain folders


@register_layout("folder")
def scan_folder(
    root: Path, split_cfg: SplitConfig, on_stray: StrayHandler | None = None
) -> Iterator[SourceRecord]:
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
        for record in _records(label_dir, root, generator=normalize_generator(label_dir.name), dataset="folder",
                               category="", split=split_of):
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
