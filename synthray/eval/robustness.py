"""Degraded test images, as in GenImage's robustness study (JPEG, lower resolution, blur).

A degradation acts on the encoded test image, before the encoder's own preprocessing,
the way an image is degraded on its way to a detector (re-saved, shrunk, smoothed):

- ``jpeg:<quality>``: re-encoded as JPEG at that quality (1-100).
- ``downscale:<factor>``: shrunk by ``factor`` in (0, 1), then resized back to the input
  size (bicubic both ways): the detail is gone, the size is not.
- ``blur:<sigma>``: Gaussian blur with standard deviation ``sigma`` pixels.

Non-JPEG results are stored as PNG, which is lossless, so only the degradation itself
changes the pixels.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from synthray.registry import Registry

log = logging.getLogger(__name__)

#: name -> (function(image, parameter) -> encoded bytes, parameter check).
DEGRADATIONS: Registry[tuple[Callable[[Image.Image, float], bytes], Callable[[float], bool], str]] = Registry(
    "degradation"
)


def list_degradations() -> list[str]:
    """Every registered degradation name."""
    return DEGRADATIONS.names()


def _encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: float) -> bytes:
    return _encode(img, "JPEG", quality=int(quality))


def _downscale(img: Image.Image, factor: float) -> bytes:
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC)
    return _encode(small.resize((w, h), Image.Resampling.BICUBIC), "PNG")


def _blur(img: Image.Image, sigma: float) -> bytes:
    # Pillow's GaussianBlur radius is the kernel's standard deviation.
    return _encode(img.filter(ImageFilter.GaussianBlur(radius=sigma)), "PNG")


DEGRADATIONS.register("jpeg")((_jpeg, lambda q: q == int(q) and 1 <= q <= 100, "a quality in 1..100"))
DEGRADATIONS.register("downscale")((_downscale, lambda f: 0 < f < 1, "a factor in (0, 1)"))
DEGRADATIONS.register("blur")((_blur, lambda s: s > 0, "a sigma > 0"))


@dataclasses.dataclass(frozen=True)
class Degradation:
    """One parsed degradation spec; calling it degrades one encoded image."""

    spec: str  # as written, e.g. "jpeg:75"
    name: str
    param: float

    def __call__(self, data: bytes) -> bytes:
        fn = DEGRADATIONS.get(self.name)[0]
        with Image.open(io.BytesIO(data)) as img:
            return fn(img.convert("RGB"), self.param)


def parse_degradation(spec: str) -> Degradation:
    """``"jpeg:75"`` -> :class:`Degradation`.

    Raises:
        ValueError: unknown name, or a missing or out-of-range parameter.
    """
    name, sep, raw = str(spec).partition(":")
    name = name.strip().lower()
    if name not in list_degradations():
        raise ValueError(f"unknown degradation {spec!r}; known: {list_degradations()} as NAME:PARAM, e.g. jpeg:75")
    check, wants = DEGRADATIONS.get(name)[1:]
    try:
        param = float(raw)
    except ValueError:
        raise ValueError(f"degradation {spec!r}: {name} needs {wants}, e.g. {name}:{'75' if name == 'jpeg' else '0.5'}")
    if not check(param):
        raise ValueError(f"degradation {spec!r}: {name} needs {wants}, got {raw}")
    return Degradation(spec=str(spec), name=name, param=param)


def run_robustness(
    specs: Sequence[str],
    embed: Callable[[Callable[[bytes], bytes] | None], np.ndarray],
    score: Callable[[np.ndarray], dict[str, Any]],
    clean: np.ndarray | None = None,
) -> dict[str, Any]:
    """Scores of the same images clean and under each degradation.

    Args:
        specs: degradation specs (parsed first, so a typo fails before any work).
        embed: embeds the robustness images through a transform (None = clean).
        score: metrics of one set of embeddings (aligned with the images).
        clean: the clean embeddings when already computed.
    Returns:
        {"clean": metrics, spec: metrics, ...} (each with "seconds").
    """
    degradations = [parse_degradation(s) for s in specs]
    out: dict[str, Any] = {}
    start = time.perf_counter()
    out["clean"] = score(clean if clean is not None else embed(None))
    out["clean"]["seconds"] = round(time.perf_counter() - start, 2)
    for d in degradations:
        start = time.perf_counter()
        out[d.spec] = score(embed(d))
        out[d.spec]["seconds"] = round(time.perf_counter() - start, 2)
        log.info("robustness %s: %s", d.spec, {k: v for k, v in out[d.spec].items() if not isinstance(v, dict)})
    return out
