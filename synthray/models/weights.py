"""Loading a backbone's weights from a local file (never from a hub)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_MAX_LISTED = 8  # keys named in an error message; a wrong file can mismatch hundreds


def check_weights_path(path: str | Path) -> Path:
    """Checks that ``path`` names an existing weights file of a known kind.

    Args:
        path: the weights file.
    Returns:
        the path as a ``Path``.
    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: if its suffix is not one of ``WEIGHT_SUFFIXES``.
    """
    p = Path(path)
    if p.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"{p}: weights file must end in one of {WEIGHT_SUFFIXES}")
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    return p


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a state_dict from a local file onto the CPU, with timm's own reader.

    timm accepts a bare state_dict or a checkpoint that wraps one (``state_dict``, ``model``,
    or its EMA weights, preferred), removes a ``module.`` prefix (a model saved inside DDP),
    reads .safetensors, and unpickles with ``weights_only`` (a weights file must not be able
    to run code when it is read). What is ours: the checks and the messages.

    Args:
        path: a .pt/.pth/.bin (``torch.save``) or .safetensors file.
    Returns:
        parameter and buffer names -> tensors.
    Raises:
        FileNotFoundError / ValueError: see :func:`check_weights_path`; ValueError if the
            file does not hold a mapping of names to tensors.
    """
    from timm.models import load_state_dict

    p = check_weights_path(path)
    try:
        obj: Any = load_state_dict(str(p), device="cpu")
    except (AttributeError, TypeError):  # timm walks .items() of whatever the file holds
        obj = None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{p}: expected a state_dict (a mapping of names to tensors)")
    return dict(obj)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_backbone_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Loads a local weights file into a timm backbone built with ``num_classes=0``.

    Keys of the backbone's classifier (named by timm's ``pretrained_cfg["classifier"]``) are
    dropped when the model has none, so a full timm checkpoint with its ImageNet head loads
    into the headless backbone.

    Args:
        model: the backbone.
        path: the weights file (see :func:`read_state_dict`).
        strict: if True, any missing or unexpected key is an error; if False they are logged.
    Raises:
        ValueError: on shape mismatches (always) or key mismatches (when strict), naming
            the keys; FileNotFoundError if the file does not exist.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    prefixes = _classifier_prefixes(model)
    dropped = [k for k in state if k not in own and prefixes and k.startswith(prefixes)]
    for k in dropped:
        del state[k]
    if dropped:
        log.info("%s: ignored %d classifier keys the headless backbone does not have", path, len(dropped))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(state) & set(own)
        if state[k].shape != own[k].shape
    )
    problems = []
    if shapes:
        problems.append(f"shape mismatches: {_listed(shapes)}")
    if strict and missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if problems:
        raise ValueError(
            f"{path} does not fit backbone {type(model).__name__}: "
            + "; ".join(problems)
            + " (was it saved from another backbone?)"
        )
    if missing or unexpected:
        log.warning(
            "%s: loaded non-strictly; missing %s; unexpected %s",
            path,
            _listed(missing) or "none",
            _listed(unexpected) or "none",
        )
    model.load_state_dict(state, strict=False)
    log.info("loaded backbone weights from %s (%d tensors)", path, len(state))
