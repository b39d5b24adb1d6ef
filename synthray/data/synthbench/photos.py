"""The real photographs synthbench crops from, found on disk (never downloaded).

scikit-image ships a few colour photographs in ``skimage/data`` (astronaut, coffee, chelsea,
rocket, ...), scikit-learn two in ``sklearn/datasets/images`` (china, flower) and matplotlib
one in ``mpl-data/sample_data`` (grace_hopper). The same folders also hold plots, logos,
synthetic test patterns, document scans and tiny files; those are skipped with a reason, and
so are grayscale photographs, because every generator family works in colour and a gray
"real" class would be a tell the colour baseline picks up at once.

Fifteen photographs are too few to tell "a photograph" from "these photographs", so synthray
bundles more (``assets/photos``): the example photographs of Debian's ``opencv-doc``
(``examples/data``) and the photographs (not the renders) of ``plasma-workspace-wallpapers``,
each with its source, licence and author in ``assets/photos/sources.json`` (wallpapers
downscaled to 1280 px wide; the rest unchanged).

:func:`split_photos` assigns every photograph to one split, so that test images are crops of
photographs that training never saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: The "package" of the photographs synthray bundles (their origin is in ``sources.json``).
BUNDLED = "synthray"
SOURCES_NAME = "sources.json"

#: (distribution name, import name, folder inside the package) searched, in this order.
PHOTO_FOLDERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("scikit-image", "skimage", ("data",)),
    ("scikit-learn", "sklearn", ("datasets", "images")),
    ("matplotlib", "matplotlib", ("mpl-data", "sample_data")),
    (BUNDLED, "synthray.data.synthbench", ("assets", "photos")),
)

#: File suffixes PIL is asked to open; everything else in those folders is not an image.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp"})

#: Files that decode as colour images but are not photographs: a colour-wheel pattern
#: (color.png), a CT phantom, checkerboards, logos and icons, document scans. No pixel
#: statistic separates color.png from a photo reliably, so they are named.
NOT_PHOTOGRAPHIC = frozenset(
    {
        "color.png",
        "phantom.png",
        "chessboard_rgb.png",
        "chessboard_gray.png",
        "logo.png",
        "logo2.png",
        "horse.png",
        "minduka_present_blue_pack.png",
        "page.png",
        "text.png",
        "multipage.tif",
        "multipage_rgb.tif",
        "no_time_for_that_tiny.gif",
    }
)

#: Shortest side a source photo needs: crops are taken at up to 4x the output side.
MIN_SIDE = 256

#: Mean |channel - gray| (0..255) below which an RGB file is treated as grayscale.
MIN_CHROMA = 1.0


@dataclasses.dataclass(frozen=True)
class Photo:
    """One source photograph used for the real class (and as generator input)."""

    package: str  # distribution that ships the file, e.g. "scikit-image"
    relpath: str  # path inside the package, e.g. "data/astronaut.png"
    path: str  # absolute path on this machine
    width: int
    height: int
    sha256: str  # of the file bytes, so a summary pins the exact source
    licence: str = ""  # the file's licence, where the package records it per file
    origin: str = ""  # where a bundled file came from (Debian package and path)
    split: str = ""  # train | val | test once split_photos assigned it

    def load(self) -> Image.Image:
        """The photograph as a loaded 8-bit RGB PIL image."""
        with Image.open(self.path) as img:
            return _to_rgb(img)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description (no absolute path: it is machine-specific)."""
        out: dict[str, object] = {
            "package": self.package,
            "file": self.relpath,
            "size": [self.width, self.height],
            "sha256": self.sha256,
        }
        out.update({k: v for k, v in (("licence", self.licence), ("origin", self.origin), ("split", self.split)) if v})
        return out


def _package_dir(import_name: str) -> Path | None:
    # find_spec locates the package without importing it (skimage imports slowly).
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def _reject_reason(path: Path, min_side: int) -> str | None:
    """Why ``path`` is not used as a colour photograph, or ``None`` when it is."""
    if path.name.lower() in NOT_PHOTOGRAPHIC:
        return "not a photograph (synthetic pattern, logo, icon or document)"
    try:
        with Image.open(path) as img:
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                return "multi-frame file"
            if min(img.size) < min_side:
                return f"too small ({img.size[0]}x{img.size[1]} < {min_side})"
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                alpha = img.convert("RGBA").getchannel("A")
                if alpha.getextrema()[0] < 255:
                    return "has transparency (logo or icon)"
            if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return "grayscale (colour photographs only)"
            rgb = np.asarray(_to_rgb(img), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"not decodable as an image ({type(exc).__name__})"
    chroma = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())
    if chroma < MIN_CHROMA:
        return "grayscale stored as RGB (colour photographs only)"
    return None


def find_photos(min_side: int = MIN_SIDE) -> tuple[list[Photo], list[dict[str, str]]]:
    """Finds the colour photographs the installed packages ship.

    Args:
        min_side: shortest side a photograph must have.
    Returns:
        ``(used, skipped)``: the photographs, sorted by package then path, and one
        ``{"package", "file", "reason"}`` entry for every image file that was skipped.
    Raises:
        RuntimeError: if none of the packages ships a usable photograph.
    """
    used: list[Photo] = []
    skipped: list[dict[str, str]] = []
    for dist, import_name, parts in PHOTO_FOLDERS:
        pkg_dir = _package_dir(import_name)
        if pkg_dir is None:
            logger.warning("package %s is not installed; its photographs are not used", dist)
            continue
        folder = pkg_dir.joinpath(*parts)
        if not folder.is_dir():
            logger.warning("%s has no %s folder", dist, "/".join(parts))
            continue
        provenance = _bundled_sources(folder) if dist == BUNDLED else {}
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relpath = "/".join((*parts, path.name))
            reason = _reject_reason(path, min_side)
            if reason is not None:
                skipped.append({"package": dist, "file": relpath, "reason": reason})
                continue
            data = path.read_bytes()
            with Image.open(path) as img:
                width, height = img.size
            meta = provenance.get(path.name, {})
            origin = f"{meta['debian_package']} {meta['source_path']}" if meta else ""
            used.append(
                Photo(
                    dist,
                    relpath,
                    str(path),
                    width,
                    height,
                    hashlib.sha256(data).hexdigest(),
                    licence=str(meta.get("license", "")),
                    origin=origin,
                )
            )
    if not used:
        raise RuntimeError(
            "no usable photograph found in scikit-image, scikit-learn or matplotlib; "
            "synthbench needs at least one of them installed"
        )
    # Every build worker finds them again: the build's own line reports the count once.
    logger.debug("synthbench: %d source photographs; %d files skipped", len(used), len(skipped))
    return used, skipped


def _bundled_sources(folder: Path) -> dict[str, dict[str, object]]:
    """``sources.json`` of the bundled photographs, by file name (every file must be listed)."""
    path = folder / SOURCES_NAME
    entries = json.loads(path.read_text(encoding="utf-8"))["photos"]
    by_name = {str(e["file"]): e for e in entries}
    unlisted = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in by_name)
    if unlisted:
        # A photograph without a recorded source and licence must not be shipped or used.
        raise RuntimeError(f"{path} does not record the source of {unlisted}")
    return by_name


#: Photographs of one scene (stereo pairs) share a split: a test crop must not show a scene
#: that training saw from a few pixels to the side.
SCENES = {"data/motorcycle_left.png": "motorcycle", "data/motorcycle_right.png": "motorcycle"}

#: Splits, in the order a photograph's hash rank fills them.
PHOTO_SPLITS = ("test", "val", "train")


def split_photos(
    photos: Sequence[Photo], val_fraction: float, test_fraction: float, salt: str = "synthbench"
) -> list[Photo]:
    """Assigns every photograph to train, val or test: a split by source photo, never by crop.

    Within each package the scenes (a photograph, or the photographs of one stereo pair) are
    ranked by a salted hash; the first ``round(n * test_fraction)`` go to test, the next
    ``round(n * val_fraction)`` to val and the rest to train (each package spreads over the
    splits, so no split is one package's look).
    A split that would get no photograph at all takes one from train (where train keeps one).

    Args:
        photos: from :func:`find_photos`.
        val_fraction: share of the photographs for validation (threshold calibration).
        test_fraction: share for test (every reported figure).
        salt: mixed into the hash; another salt draws another split.
    Returns:
        the photographs with ``split`` set, in the input order.
    Raises:
        ValueError: on fractions outside ``[0, 1)`` or summing to 1 or more.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= fractions and val + test < 1, got {val_fraction}, {test_fraction}")
    fractions = {"test": test_fraction, "val": val_fraction}
    split_of: dict[str, str] = {}
    by_package: dict[str, list[Photo]] = {}
    for photo in photos:
        by_package.setdefault(photo.package, []).append(photo)
    for group in by_package.values():
        scenes = sorted(
            {SCENES.get(p.relpath, p.relpath) for p in group},
            key=lambda key: hashlib.blake2b(f"{salt}/{key}".encode(), digest_size=8).digest(),
        )
        scene_split: dict[str, str] = {}
        start = 0
        for name in PHOTO_SPLITS[:2]:
            count = int(round(len(scenes) * fractions[name]))
            scene_split.update((key, name) for key in scenes[start : start + count])
            start += count
        scene_split.update((key, "train") for key in scenes[start:])
        for p in group:
            split_of[p.relpath] = scene_split[SCENES.get(p.relpath, p.relpath)]
    for name in PHOTO_SPLITS[:2]:
        if fractions[name] > 0 and name not in split_of.values():
            train = sorted(r for r, s in split_of.items() if s == "train")
            if len(train) > 1:
                split_of[train[0]] = name
    return [dataclasses.replace(p, split=split_of[p.relpath]) for p in photos]
