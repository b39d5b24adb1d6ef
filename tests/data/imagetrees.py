"""Builders for small image trees in every supported layout, good and bad files alike.

Reusable by any test that needs a data set on disk::

    from tests.data.imagetrees import make_tree, make_bad_files, bad_dir

    expected = make_tree("genimage", tmp_path / "gi", per_class=4)
    bad = make_bad_files(bad_dir("genimage", tmp_path / "gi"))

Every image is random noise drawn from its own seed, so no two files share content unless a
test copies one on purpose (duplicate detection).
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# PIL format name per file suffix the builders write.
_SUFFIX_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
    ".ico": "ICO",
    ".tga": "TGA",
    ".pcx": "PCX",
}


@dataclasses.dataclass(frozen=True)
class Expected:
    """The label a reader should give one file of a built tree."""

    relpath: str
    generator: str  # canonical name
    splits: tuple[str, ...]  # the split, or the splits a hash may draw
    category: str = ""


def image_bytes(size: tuple[int, int] = (32, 32), fmt: str = "PNG", seed: int = 0, mode: str = "RGB") -> bytes:
    """Encoded random-noise image.

    Args:
        size: (width, height).
        fmt: PIL format name.
        seed: noise seed (different seeds give different bytes).
        mode: PIL mode of the image.
    Returns:
        the encoded bytes.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_image(path: str | Path, size: tuple[int, int] = (32, 32), fmt: str | None = None, seed: int = 0) -> Path:
    """Writes a random-noise image, the format taken from the suffix unless given.

    Args:
        path: destination; parent folders are created.
        size: (width, height).
        fmt: PIL format name; ``None`` = from the suffix.
        seed: noise seed.
    Returns:
        the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(size, fmt or _SUFFIX_FORMAT[path.suffix.lower()], seed))
    return path


def truncated_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    """The first half of an encoded image: the header parses, the decode runs out of data."""
    data = image_bytes(size, fmt, seed)
    return data[: len(data) // 2]


def corrupt_png_bytes(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    """A PNG whose compressed pixel data is scrambled (full length, bad content)."""
    data = bytearray(image_bytes(size, "PNG", seed))
    start = data.index(b"IDAT") + 8
    for i in range(start, min(start + 200, len(data) - 16)):
        data[i] ^= 0x5A
    return bytes(data)


def bomb_png_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny 1-bit PNG whose header claims ``width x height`` pixels.

    The IHDR chunk of a 16x16 image is patched and its CRC recomputed, so every reader
    trusts the header; a decoder that believed it would allocate width*height pixels.
    """
    buffer = io.BytesIO()
    Image.new("1", (16, 16)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def chmod_blocks_reads() -> bool:
    """Whether ``chmod 000`` stops this process reading a file (not as root)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


def make_bad_files(directory: str | Path, seed: int = 10_000) -> dict[str, str]:
    """Writes one file of every bad kind into ``directory``.

    The unreadable file is a dangling symlink (``gone.png``), which fails to open for any
    user; where ``chmod 000`` does stop reads (not root), a permission-denied file
    (``locked.png``) is added too. Tests running as root therefore still cover the
    ``unreadable`` path.

    Args:
        directory: a class folder of some layout (created if missing).
        seed: base noise seed.
    Returns:
        ``{file name: expected reason code}`` with the default ``ValidationConfig``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, str]] = {
        "empty.png": (b"", "empty"),
        "cut.jpg": (truncated_bytes("JPEG", seed=seed), "truncated"),
        "cut.png": (truncated_bytes("PNG", seed=seed + 1), "truncated"),
        "notes.jpg": (b"these are my holiday notes, not a picture\n" * 4, "not_an_image"),
        "readme.txt": (b"a text file in a class folder\n", "not_an_image"),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "not_an_image"),
        "icon.ico": (image_bytes((32, 32), "ICO", seed + 2), "unsupported_format"),
        "old.pcx": (image_bytes((32, 32), "PCX", seed + 3), "unsupported_format"),
        "bomb.png": (bomb_png_bytes(), "decompression_bomb"),
        "tiny.png": (image_bytes((4, 4), "PNG", seed + 4), "too_small"),
        "scrambled.png": (corrupt_png_bytes(seed=seed + 5), "corrupt"),
    }
    expected = {}
    for name, (data, reason) in files.items():
        (directory / name).write_bytes(data)
        expected[name] = reason
    os.symlink(directory / "does-not-exist.png", directory / "gone.png")
    expected["gone.png"] = "unreadable"
    if chmod_blocks_reads():
        locked = write_image(directory / "locked.png", seed=seed + 6)
        locked.chmod(0)
        expected["locked.png"] = "unreadable"
    return expected


# --------------------------------------------------------------------------- trees

_SUFFIXES = (".png", ".jpg")


def _fill(folder: Path, root: Path, n: int, seed: int, size: tuple[int, int]) -> list[str]:
    """``n`` images alternating PNG/JPEG in ``folder``; returns their relpaths."""
    rels = []
    for i in range(n):
        path = write_image(folder / f"img_{i:03d}{_SUFFIXES[i % 2]}", size=size, seed=seed + i)
        rels.append(path.relative_to(root).as_posix())
    return rels


def make_tree(
    layout: str,
    root: str | Path,
    *,
    per_class: int = 3,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> list[Expected]:
    """Builds a small tree in a layout's shape and says how each file should be labelled.

    Shapes: ``genimage``: ADM, glide and the release's two-level
    ``stable_diffusion_v_1_4/imagenet_ai_0419_sdv4``, each with train/val x ai/nature;
    ``forensynths``: train/{car,cat}, val/car, test/{progan/car, seeingdark (no class),
    stylegan2/{bedroom,car}}; ``cifake``: {train,test}/{REAL,FAKE}; ``folder``:
    real/, nature/, sdv4/, my-gan/ (with a nested sub-folder).

    Args:
        layout: a registered layout name.
        root: the folder to build in (created).
        per_class: images per class folder.
        size: image size.
        seed: first noise seed; each file gets its own.
    Returns:
        one :class:`Expected` per image written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expected: list[Expected] = []
    counter = [seed]

    def add(folder: str, generator: str, splits: tuple[str, ...], category: str = "", n: int = per_class) -> None:
        rels = _fill(root / folder, root, n, counter[0], size)
        counter[0] += n
        expected.extend(Expected(rel, generator, splits, category) for rel in rels)

    train_val = ("train", "val")
    if layout == "genimage":
        for top, gen in (("ADM", "ADM"), ("glide", "GLIDE"), ("stable_diffusion_v_1_4/imagenet_ai_0419_sdv4", "SD1.4")):
            add(f"{top}/train/ai", gen, train_val)
            add(f"{top}/train/nature", "real", train_val)
            add(f"{top}/val/ai", gen, ("test",))
            add(f"{top}/val/nature", "real", ("test",))
    elif layout == "forensynths":
        for cls in ("car", "cat"):
            add(f"train/{cls}/0_real", "real", train_val, cls)
            add(f"train/{cls}/1_fake", "ProGAN", train_val, cls)
        add("val/car/0_real", "real", ("val",), "car")
        add("val/car/1_fake", "ProGAN", ("val",), "car")
        add("test/progan/car/0_real", "real", ("test",), "car")
        add("test/progan/car/1_fake", "ProGAN", ("test",), "car")
        add("test/seeingdark/0_real", "real", ("test",))
        add("test/seeingdark/1_fake", "SITD", ("test",))
        for cls in ("bedroom", "car"):
            add(f"test/stylegan2/{cls}/0_real", "real", ("test",), cls)
            add(f"test/stylegan2/{cls}/1_fake", "StyleGAN2", ("test",), cls)
    elif layout == "cifake":
        add("train/REAL", "real", train_val)
        add("train/FAKE", "SD1.4", train_val)
        add("test/REAL", "real", ("test",))
        add("test/FAKE", "SD1.4", ("test",))
    elif layout == "folder":
        every = ("train", "val", "test")
        add("real", "real", every)
        add("nature", "real", every)
        add("sdv4", "SD1.4", every)
        add("my-gan", "my-gan", every)
        add("my-gan/batch2", "my-gan", every, n=max(1, per_class // 2))
    else:
        raise ValueError(f"no tree builder for layout {layout!r}")
    return expected


def bad_dir(layout: str, root: str | Path) -> Path:
    """A labelled class folder of a built tree, where bad files are put to be found."""
    sub = {
        "genimage": "ADM/train/ai",
        "forensynths": "train/car/1_fake",
        "cifake": "train/FAKE",
        "folder": "my-gan",
    }[layout]
    return Path(root) / sub


def make_stray_files(layout: str, root: str | Path, seed: int = 20_000) -> dict[str, str]:
    """Valid images where the layout has no label for them: a wrong label folder and a
    loose file.

    Args:
        layout: a registered layout name.
        root: a tree built by :func:`make_tree`.
        seed: noise seed.
    Returns:
        ``{relpath: expected reason}`` (``wrong_label_folder`` or ``misplaced``).
    """
    root = Path(root)
    spots = {
        "genimage": {"ADM/train/fake/x.png": "wrong_label_folder", "ADM/notes.png": "misplaced"},
        "forensynths": {"train/car/2_other/x.png": "wrong_label_folder", "test/loose.png": "misplaced"},
        "cifake": {"train/MAYBE/x.png": "wrong_label_folder", "train/loose.png": "misplaced"},
        "folder": {"loose.png": "misplaced"},
    }[layout]
    for i, rel in enumerate(spots):
        write_image(root / rel, seed=seed + i)
    return dict(spots)


def make_hidden_files(directory: str | Path) -> list[str]:
    """Dotfiles and a dot-folder a reader must skip; returns their names."""
    directory = Path(directory)
    (directory / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_image(directory / ".hidden" / "inside.png", seed=30_000)
    write_image(directory / "._img_000.png", seed=30_001)
    return [".DS_Store", ".hidden/inside.png", "._img_000.png"]
