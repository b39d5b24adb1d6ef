"""Decode / resize / scale / augment, without Ray, against PIL as the reference."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from synthray.config import AugmentConfig, PreprocessConfig
from synthray.data.augment import build_augmentations, list_augmentations
from synthray.data.preprocess import Preprocessor, decode_rgb, resize_square
from tests.data.imagetrees import image_bytes, truncated_bytes


def _smooth_image(w: int, h: int, fmt: str, mode: str = "RGB") -> bytes:
    # A smooth gradient: lossy codecs keep it close, so decoders can be compared exactly-ish.
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_decode_matches_pil(fmt):
    data = _smooth_image(37, 23, fmt)
    ours = decode_rgb(data)
    ref = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert ours.dtype == torch.uint8 and ours.shape == (3, 23, 37)
    # libjpeg-turbo (torchvision) and PIL's libjpeg may differ by an IDCT rounding step.
    tol = 2 if fmt == "JPEG" else 0
    assert (ours.int() - ref.int()).abs().max().item() <= tol


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decode_any_mode_gives_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = decode_rgb(_smooth_image(16, 16, fmt, mode))
    assert img.shape == (3, 16, 16)


@pytest.mark.parametrize("bad", [b"", b"not an image at all", truncated_bytes("PNG"), b"\xff\xd8\xff\xe0garbage"])
def test_decode_bad_bytes_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        decode_rgb(bad)


def test_resize_modes():
    img = torch.randint(0, 256, (3, 50, 80), dtype=torch.uint8)
    r = resize_square(img, 32)
    assert r.shape == (3, 32, 32) and r.dtype == torch.uint8
    rf = resize_square(img.float(), 32)
    assert rf.dtype == torch.float32 and 0 <= rf.min() and rf.max() <= 255
    assert (rf - r.float()).abs().max() <= 1.0  # the fast uint8 kernel agrees with float to rounding
    c = resize_square(img, 32, "center_crop")
    # Centre crop of a large image keeps pixels untouched (the fingerprint survives).
    assert torch.equal(c, img[:, 9:41, 24:56])
    small = resize_square(torch.zeros(3, 10, 20, dtype=torch.uint8), 32, "center_crop")
    assert small.shape == (3, 32, 32)
    with pytest.raises(ValueError):
        resize_square(img, 32, "stretchy")
    with pytest.raises(ValueError):
        resize_square(img[0], 32)


def test_resize_constant_image_stays_constant():
    img = torch.full((3, 123, 77), 200, dtype=torch.uint8)
    out = resize_square(img, 64)
    assert torch.equal(out, torch.full_like(out, 200))


def test_preprocessor_batch_shape_range_and_normalisation():
    data = [image_bytes((40, 30), "PNG", seed=i) for i in range(3)] + [image_bytes((64, 64), "JPEG", seed=9)]
    out = Preprocessor(PreprocessConfig(resolution=24, device="cpu"))(data)
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    norm = Preprocessor(PreprocessConfig(resolution=24, device="cpu", normalize="imagenet"))(data)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(norm, (out - mean) / std, atol=1e-5)
    assert Preprocessor(PreprocessConfig(resolution=24, device="cpu"))([]).shape == (0, 3, 24, 24)


def test_preprocessor_config_errors():
    with pytest.raises(ValueError, match="normalize"):
        Preprocessor(PreprocessConfig(normalize="zscore", device="cpu"))
    with pytest.raises(ValueError, match="unknown augmentation"):
        Preprocessor(PreprocessConfig(augment=[AugmentConfig("mixup")], device="cpu"))
    with pytest.raises(TypeError):
        Preprocessor(PreprocessConfig(augment=[AugmentConfig("jpeg", params={"qualty": [10, 20]})], device="cpu"))
    with pytest.raises(ValueError):
        Preprocessor(PreprocessConfig(augment=[AugmentConfig("jpeg", params={"quality": [90, 10]})], device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Preprocessor(PreprocessConfig(device="cuda"))


def _img(seed: int = 0, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), generator=g).float()


def test_every_augmentation_keeps_shape_range_and_is_seeded():
    assert set(list_augmentations()) >= {"hflip", "random_resized_crop", "jpeg", "gaussian_blur"}
    for name in list_augmentations():
        runs = []
        for _ in range(2):
            pipe = build_augmentations([AugmentConfig(name)], generator=torch.Generator().manual_seed(3))
            x = _img()
            for step in pipe.before_resize + pipe.after_resize:
                x = step(x)
            runs.append(x)
        assert torch.equal(runs[0], runs[1]), name
        assert runs[0].shape[0] == 3 and runs[0].min() >= 0 and runs[0].max() <= 255.001, name


def test_augmentations_do_what_they_say():
    x = _img(1)
    pipe = build_augmentations([AugmentConfig("hflip")])
    assert torch.equal(pipe.after_resize[0](x), x.flip(-1))
    crop = build_augmentations([AugmentConfig("random_resized_crop", params={"scale": [0.25, 0.25]})]).before_resize[0]
    c = crop(x)
    assert 0.15 < c.shape[1] * c.shape[2] / (48 * 48) < 0.35
    blur = build_augmentations([AugmentConfig("gaussian_blur", params={"sigma": [2.0, 2.0]})]).after_resize[0]
    # Blur removes high-frequency energy: neighbour differences shrink.
    assert blur(x).diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()
    const = torch.full((3, 20, 20), 77.0)
    assert torch.allclose(blur(const), const, atol=1e-3)
    jpeg = build_augmentations([AugmentConfig("jpeg", params={"quality": [10, 10]})]).after_resize[0]
    y = jpeg(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    never = build_augmentations([AugmentConfig("hflip", p=0.0)]).after_resize[0]
    assert torch.equal(never(x), x)
    with pytest.raises(ValueError):
        build_augmentations([AugmentConfig("hflip", p=1.5)])


def test_seeded_preprocessor_is_reproducible():
    cfg = PreprocessConfig(
        resolution=32,
        device="cpu",
        seed=5,
        augment=[AugmentConfig("random_resized_crop"), AugmentConfig("hflip", p=0.5), AugmentConfig("jpeg", p=0.5)],
    )
    data = [image_bytes((50, 40), "PNG", seed=i) for i in range(4)]
    assert torch.equal(Preprocessor(cfg)(data), Preprocessor(cfg)(data))


def test_prepare_then_finalize_is_the_whole_preprocessing():
    data = [image_bytes((40, 30), "PNG", seed=i) for i in range(3)]
    cfg = PreprocessConfig(resolution=24, device="cpu", normalize="imagenet", channels_last=True)
    pre = Preprocessor(cfg)
    u8 = pre.prepare(data)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 3, 24, 24)
    full = pre(data)
    assert torch.equal(pre.finalize(u8.numpy()), full)
    assert full.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        pre.finalize(full)
