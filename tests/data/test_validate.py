"""Image validation: every reason code from real files, PIL's globals left as found."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from synthray.config import ValidationConfig
from synthray.data.validate import REASONS, BadImage, ImageInfo, inspect_image, read_image_file, validate_file
from tests.data.imagetrees import (
    bomb_png_bytes,
    chmod_blocks_reads,
    corrupt_png_bytes,
    image_bytes,
    make_bad_files,
    truncated_bytes,
)


def _reason(data: bytes, cfg: ValidationConfig | None = None) -> str:
    with pytest.raises(BadImage) as info:
        inspect_image(data, cfg)
    assert info.value.message
    return info.value.reason


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_accepted_formats(fmt: str) -> None:
    assert inspect_image(image_bytes((40, 24), fmt, seed=1)) == ImageInfo(40, 24, fmt)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"plain text pretending to be a jpeg\n", "not_an_image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not_an_image"),
        (image_bytes((32, 32), "ICO"), "unsupported_format"),
        (image_bytes((32, 32), "TGA"), "unsupported_format"),
        (image_bytes((32, 32), "PCX"), "unsupported_format"),
        (bomb_png_bytes(), "decompression_bomb"),
        (image_bytes((5, 64), "PNG"), "too_small"),
        (truncated_bytes("JPEG"), "truncated"),
        (truncated_bytes("PNG"), "truncated"),
        (image_bytes((64, 64), "PNG")[:20], "truncated"),  # cut inside the header
        (corrupt_png_bytes(), "corrupt"),
    ],
    ids=[
        "empty",
        "text",
        "svg",
        "ico",
        "tga",
        "pcx",
        "bomb",
        "small",
        "cut_jpeg",
        "cut_png",
        "cut_header",
        "scrambled",
    ],
)
def test_reason_codes(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


def test_limits_come_from_config() -> None:
    data = image_bytes((200, 100), "PNG")
    assert _reason(data, ValidationConfig(max_bytes=len(data) - 1)) == "too_large"
    assert _reason(data, ValidationConfig(max_pixels=19_999)) == "decompression_bomb"
    assert _reason(data, ValidationConfig(min_side=101)) == "too_small"
    assert _reason(data, ValidationConfig(formats=("JPEG",))) == "unsupported_format"
    assert inspect_image(data, ValidationConfig(max_pixels=20_000, min_side=100)).width == 200


def test_our_cap_decides_not_pils(monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL would refuse this header itself (DecompressionBombError) or warn; the bomb must be
    # ours, with our reason, and a cap above PIL's own must let a real image through.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert inspect_image(image_bytes((64, 64), "PNG"), ValidationConfig(max_pixels=10_000)).height == 64
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    assert _reason(bomb_png_bytes(50_000, 50_000)) == "decompression_bomb"


def test_truncated_even_if_someone_enabled_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert _reason(truncated_bytes("JPEG")) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_bad_image_pickles_and_checks_reason() -> None:
    error = pickle.loads(pickle.dumps(BadImage("truncated", "half a file")))
    assert (error.reason, error.message) == ("truncated", "half a file")
    with pytest.raises(ValueError, match="unknown reason"):
        BadImage("ugly", "no such code")


def test_every_bad_file_kind_on_disk(tmp_path: Path) -> None:
    expected = make_bad_files(tmp_path)
    assert set(expected.values()) >= set(REASONS) - {"too_large"}
    for name, reason in expected.items():
        with pytest.raises(BadImage) as info:
            validate_file(tmp_path / name)
        assert info.value.reason == reason, name


def test_read_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")  # reading would block forever
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    for name in ("folder.png", "pipe.png", "dangling.png", "missing.png"):
        with pytest.raises(BadImage) as info:
            read_image_file(tmp_path / name)
        assert info.value.reason == "unreadable", name
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes((64, 64), "PNG"))
    with pytest.raises(BadImage, match="too_large"):
        read_image_file(big, ValidationConfig(max_bytes=10))


@pytest.mark.skipif(not chmod_blocks_reads(), reason="running as root: chmod 000 does not stop reads")
def test_permission_denied_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(image_bytes())
    path.chmod(0)
    with pytest.raises(BadImage) as info:
        read_image_file(path)
    assert info.value.reason == "unreadable"


def test_concurrent_inspections_restore_pil_globals() -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    good = [image_bytes((48, 48), "PNG", seed=i) for i in range(8)]
    blobs = good + [truncated_bytes("JPEG", seed=i) for i in range(8)]

    def verdict(data: bytes) -> str:
        try:
            return inspect_image(data).format
        except BadImage as exc:
            return exc.reason

    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(verdict, blobs * 4))
    assert verdicts == (["PNG"] * 8 + ["truncated"] * 8) * 4
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before
