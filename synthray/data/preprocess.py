"""Decode, resize and scale images: the preprocessing core, runnable without Ray.

The same functions back the Ray Data pipeline (``pipeline.py``), the plain-loop
benchmark baseline, index building and the serving path, so every consumer sees
identical pixels for identical bytes.

Decoding uses torchvision's native decoders (libjpeg-turbo / libpng / libwebp) and falls
back to PIL for formats they do not cover (BMP, TIFF, ...). Where CUDA is available,
JPEG batches decode on the GPU (nvJPEG via ``torchvision.io.decode_jpeg(device="cuda")``)
and resize there too; anything the GPU decoder refuses falls back to the CPU path.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from synthray.config import PreprocessConfig
from synthray.data.augment import build_augmentations

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats torchvision's CPU decoder reads natively; the rest go through PIL.
_NATIVE_MAGICS = (_JPEG_MAGIC, b"\x89PNG\r\n\x1a\n", b"GIF8")


def resolve_device(device: str) -> torch.device:
    """Maps the config's ``device`` ("auto" | "cpu" | "cuda[:N]") to a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for but CUDA is not available")
    return dev


def _is_native(data: bytes) -> bool:
    return data.startswith(_NATIVE_MAGICS) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode_rgb(data: bytes) -> torch.Tensor:
    """Decodes encoded image bytes to an RGB tensor.

    Args:
        data: the encoded file (JPEG, PNG, WebP, GIF, BMP, TIFF, ...).
    Returns:
        uint8 tensor of shape (3, H, W).
    Raises:
        ValueError: when the bytes are not a decodable image.
    """
    if not data:
        raise ValueError("empty image bytes")
    if _is_native(data):
        try:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            img = decode_image(buf, mode=ImageReadMode.RGB)
            return img[:3] if img.shape[0] != 3 else img
        except RuntimeError:
            pass  # torchvision refuses some valid files (odd PNG chunks, CMYK JPEG): PIL decides
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types for broken input
        raise ValueError(f"cannot decode image: {exc}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


#: Crop modes: the image keeps its pixel scale when it is large enough.
CROP_MODES = ("center_crop", "random_crop")
#: At most this many views per image (center, 4 corners, 4 edge middles).
MAX_VIEWS = 9


def eval_preprocess(cfg: PreprocessConfig) -> PreprocessConfig:
    """What validation, indexing and queries use: no augmentation, a deterministic crop."""
    mode = "center_crop" if cfg.resize_mode == "random_crop" else cfg.resize_mode
    return dataclasses.replace(cfg, augment=[], resize_mode=mode)


def view_offsets(height: int, width: int, resolution: int, views: int) -> list[tuple[int, int]]:
    """``(top, left)`` of up to ``views`` crops: center, the four corners, the edge middles.

    Averaging the embeddings of several native-scale crops uses more of a large image's pixels
    than one crop does, without resampling them.
    """
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be in [1, {MAX_VIEWS}], got {views}")
    bottom, right = height - resolution, width - resolution
    cy, cx = bottom // 2, right // 2
    spots = [(cy, cx), (0, 0), (0, right), (bottom, 0), (bottom, right), (0, cx), (bottom, cx), (cy, 0), (cy, right)]
    return spots[:views]


def resize_square(
    img: torch.Tensor,
    resolution: int,
    mode: str = "resize",
    generator: torch.Generator | None = None,
    offset: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Brings one image to ``resolution`` x ``resolution``.

    Args:
        img: (3, H, W) uint8 or float tensor (values in [0, 255]), on any device.
        resolution: output side.
        mode: "resize" stretches the whole image (the thesis's choice); "center_crop" takes
            the central square without resampling when the image is large enough, which
            keeps a generator's pixel-level fingerprint, and resizes only smaller images;
            "random_crop" does the same at a random position (training).
        generator: the random crop's RNG (None = torch's global one).
        offset: ``(top, left)`` of the crop, instead of the center (crop modes, large images).
    Returns:
        (3, resolution, resolution) tensor of the input's dtype.
    """
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    if mode in CROP_MODES:
        if h >= resolution and w >= resolution:
            if offset is not None:
                top, left = offset
            elif mode == "random_crop":
                top = int(torch.randint(0, h - resolution + 1, (), generator=generator))
                left = int(torch.randint(0, w - resolution + 1, (), generator=generator))
            else:
                top, left = (h - resolution) // 2, (w - resolution) // 2
            return img[:, top : top + resolution, left : left + resolution]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[:, top : top + side, left : left + side]
    elif mode != "resize":
        raise ValueError(f"unknown resize_mode {mode!r}; use 'resize', 'center_crop' or 'random_crop'")
    if img.shape[-2:] == (resolution, resolution):
        return img
    # Antialiased bilinear: downscaling without it aliases and invents high-frequency
    # patterns that look like generator fingerprints. uint8 input takes torchvision's
    # vectorised uint8 kernel, about 5x faster on CPU than resizing in float.
    out = TF.resize(img, [resolution, resolution], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return out if out.dtype == torch.uint8 else out.clamp_(0, 255)


class Preprocessor:
    """Encoded bytes -> a float batch ready for the encoder.

    A callable class so Ray Data's ``map_batches`` builds it once per actor (the
    augmentation pipeline and device are set up in ``__init__``).

    Args:
        cfg: the preprocessing config.
    """

    def __init__(self, cfg: PreprocessConfig | None = None) -> None:
        self.cfg = cfg or PreprocessConfig()
        if self.cfg.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.cfg.resolution}")
        if self.cfg.normalize not in (None, "imagenet"):
            raise ValueError(f"unknown normalize {self.cfg.normalize!r}; use null or 'imagenet'")
        self.device = resolve_device(self.cfg.device)
        self.generator = torch.Generator().manual_seed(self.cfg.seed) if self.cfg.seed is not None else None
        self.augment = build_augmentations(self.cfg.augment, generator=self.generator)

    def decode_batch(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        """Decodes a batch; JPEGs go to nvJPEG in one call when on CUDA."""
        if self.device.type != "cuda":
            return [decode_rgb(b) for b in images]
        out: list[torch.Tensor | None] = [None] * len(images)
        jpeg_idx = [i for i, b in enumerate(images) if bytes(b[:3]) == _JPEG_MAGIC]
        if jpeg_idx:
            bufs = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in jpeg_idx]
            try:
                decoded = decode_jpeg(bufs, mode=ImageReadMode.RGB, device=self.device)
                for i, img in zip(jpeg_idx, decoded):
                    out[i] = img
            except RuntimeError as exc:  # e.g. progressive/CMYK JPEGs nvJPEG rejects
                log.debug("GPU JPEG decode fell back to CPU for a batch: %s", exc)
        for i, b in enumerate(images):
            if out[i] is None:
                out[i] = decode_rgb(b).to(self.device, non_blocking=True)
        return out  # type: ignore[return-value]

    def __call__(self, images: Sequence[bytes]) -> torch.Tensor:
        """Preprocesses one batch: :meth:`prepare` then :meth:`finalize`.

        Args:
            images: N encoded images.
        Returns:
            float32 tensor (N, 3, R, R) on ``self.device``, in [0, 1] (or ImageNet-normalised).
        """
        return self.finalize(self.prepare(images))

    def prepare(self, images: Sequence[bytes]) -> torch.Tensor:
        """Decode, augment and resize: everything up to the float conversion.

        Kept in uint8 because that is what crosses process boundaries (Ray's object
        store, host-to-GPU copies): a quarter of the bytes of float32.

        Args:
            images: N encoded images.
        Returns:
            uint8 tensor (N, 3, R, R) on ``self.device``.
        """
        r = self.cfg.resolution
        if len(images) == 0:
            return torch.empty((0, 3, r, r), dtype=torch.uint8, device=self.device)
        decoded = self.decode_batch(images)
        batch = torch.stack([self._one(img) for img in decoded])
        assert batch.shape[-2:] == (r, r)
        return batch

    def views(self, images: Sequence[bytes], views: int | None = None) -> torch.Tensor:
        """Several native-scale crops of every image (see :func:`view_offsets`).

        Args:
            images: N encoded images.
            views: crops per image; None = ``cfg.views``. An image too small for a crop, or a
                ``resize`` config, gives its one view repeated (their mean is that view).
        Returns:
            uint8 tensor (N, V, 3, R, R) on ``self.device``.
        """
        v = self.cfg.views if views is None else views
        r = self.cfg.resolution
        if len(images) == 0:
            return torch.empty((0, v, 3, r, r), dtype=torch.uint8, device=self.device)
        out = []
        for img in self.decode_batch(images):
            for step in self.augment.before_resize:
                img = step(img)
            h, w = img.shape[-2:]
            if self.cfg.resize_mode in CROP_MODES and h >= r and w >= r:
                crops = [resize_square(img, r, self.cfg.resize_mode, offset=o) for o in view_offsets(h, w, r, v)]
                out.append(torch.stack([self._after_resize(c) for c in crops]))
            else:
                one = self._after_resize(resize_square(img, r, self.cfg.resize_mode, self.generator))
                out.append(one.unsqueeze(0).expand(v, -1, -1, -1))
        return torch.stack(out)

    def finalize(self, batch: torch.Tensor | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """:func:`finalize_pixels` with this preprocessor's config (default device: its own)."""
        return finalize_pixels(batch, self.cfg, self.device if device is None else device)

    def _one(self, img: torch.Tensor) -> torch.Tensor:
        # Augmentations that change geometry (random resized crop) must see the original
        # pixels, so they run before the resize; photometric ones run on the resized image.
        for step in self.augment.before_resize:
            img = step(img)
        img = resize_square(img, self.cfg.resolution, self.cfg.resize_mode, self.generator)
        return self._after_resize(img)

    def _after_resize(self, img: torch.Tensor) -> torch.Tensor:
        if self.augment.after_resize:
            img = img.float()
            for step in self.augment.after_resize:
                img = step(img)
            # Back to 8 bits, as a saved image would be: a rounding step, nothing more.
            img = img.round_().clamp_(0, 255).to(torch.uint8)
        return img


def finalize_pixels(
    batch: torch.Tensor | np.ndarray, cfg: PreprocessConfig, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (-> ImageNet-normalised) (-> channels_last).

    The last preprocessing step, run where the batch is consumed: on the training GPU,
    after a copy of 4x fewer bytes than float32 would need.

    Args:
        batch: (N, 3, R, R) uint8 tensor or array, as :meth:`Preprocessor.prepare` returns.
        cfg: the preprocessing config (``normalize``, ``channels_last``).
        device: where to convert.
    Returns:
        float32 tensor (N, 3, R, R) on ``device``.
    """
    x = torch.as_tensor(batch).to(device, non_blocking=True)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {x.dtype}")
    x = x.float().div_(255.0)
    if cfg.normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
