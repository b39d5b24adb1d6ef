"""Training checkpoints: one folder each, self-describing, verified on load.

A checkpoint folder holds ``model.pt`` (the unwrapped encoder's state), ``state.pt``
(optimizer, scheduler, scaler, epoch, step), ``meta.json`` (resolved config, class list,
model version id, metrics) and, last, ``COMPLETE`` with a digest of the two tensor
files. A folder without a matching ``COMPLETE`` is corrupt or half-written and is
never loaded: resume falls back to the previous good checkpoint and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from synthray.data.files import write_text_atomic

log = logging.getLogger(__name__)

MODEL_FILE, STATE_FILE, META_FILE, COMPLETE_FILE = "model.pt", "state.pt", "meta.json", "COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be loaded (missing, half-written, corrupt)."""


def model_version(state_dict: dict[str, torch.Tensor], classes: Iterable[str]) -> str:
    """A short id of the exact weights and class list, stored with every embedding made
    by them (an index built by one version is refused for queries by another)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(list(classes)).encode())
    return h.hexdigest()[:16]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    state: dict[str, Any],
    meta: dict[str, Any],
) -> str:
    """Writes a checkpoint folder and returns its model version id.

    Args:
        folder: the folder to write (created).
        model: the encoder (wrappers are removed).
        state: optimizer/scheduler/scaler state dicts, epoch, step.
        meta: JSON-able description (config, classes, metrics).
    Returns:
        the model version id.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    version = model_version(weights, meta.get("classes", []))
    torch.save(weights, folder / MODEL_FILE)
    torch.save(state, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({**meta, "model_version": version}, indent=2, default=str))
    complete = {
        "model_version": version,
        MODEL_FILE: _digest(folder / MODEL_FILE),
        STATE_FILE: _digest(folder / STATE_FILE),
    }
    write_text_atomic(folder / COMPLETE_FILE, json.dumps(complete))  # last: it marks the folder whole
    return version


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads and verifies a checkpoint folder.

    Returns:
        {"model": state dict, "state": training state, "meta": meta dict}.
    Raises:
        CheckpointError: when the folder is incomplete or its files do not match their digests.
    """
    folder = Path(folder)
    marker = folder / COMPLETE_FILE
    if not marker.is_file():
        raise CheckpointError(f"{folder}: no {COMPLETE_FILE} marker (half-written or not a checkpoint)")
    try:
        complete = json.loads(marker.read_text())
        for name in (MODEL_FILE, STATE_FILE):
            if _digest(folder / name) != complete[name]:
                raise CheckpointError(f"{folder}/{name}: content does not match its digest (corrupt)")
        meta = json.loads((folder / META_FILE).read_text())
        model = torch.load(folder / MODEL_FILE, map_location=map_location, weights_only=True)
        state = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=False)
    except CheckpointError:
        raise
    except Exception as exc:  # missing file, bad JSON, unpickling error
        raise CheckpointError(f"{folder}: cannot be read: {exc}") from exc
    return {"model": model, "state": state, "meta": meta}


def checkpoint_version(folder: str | Path) -> str:
    """The model version a complete checkpoint folder holds, from its marker (no weights read).

    Raises:
        CheckpointError: no complete checkpoint there.
    """
    marker = Path(folder) / COMPLETE_FILE
    try:
        return str(json.loads(marker.read_text())["model_version"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: no complete checkpoint ({exc})") from exc


def latest_good(folders: Iterable[str | Path]) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint among ``folders`` (ordered oldest first).

    Corrupt ones are skipped with a warning naming them, so a crash during a save costs
    one epoch, not the run.
    """
    for folder in reversed([Path(f) for f in folders]):
        try:
            return folder, load_checkpoint(folder)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s; falling back to the previous one", exc)
    return None
