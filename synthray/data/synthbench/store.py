"""Crash-safe files for synthbench: every file appears whole or not at all.

Images and JSON are written to a hidden temporary name in the target folder and moved into
place with ``os.replace`` (atomic on POSIX within one file system), so an interrupted run leaves
complete files plus, at worst, hidden ``.tmp`` leftovers that the next run deletes. Hidden
names are also what the layout readers skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthray.data.files import write_json_atomic

TMP_SUFFIX = ".tmp"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_png(path: Path, img: np.ndarray) -> None:
    """Writes a uint8 ``(H, W, 3)`` image as PNG, atomically.

    PIL's PNG encoder writes no time stamp or other varying metadata, so equal pixels give
    equal bytes.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {img.dtype} {img.shape}")
    tmp = _tmp_path(path)
    try:
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` as indented JSON, atomically."""
    write_json_atomic(path, data, indent=2)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_temp_files(folder: Path) -> int:
    """Deletes leftover hidden ``.*.tmp`` files of interrupted writes; returns how many."""
    removed = 0
    if folder.is_dir():
        for path in folder.glob(f".*{TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
