"""Is this file an image we can train on? One answer per file, never an exception that escapes.

:func:`inspect_image` checks encoded bytes in order of cost: size, header (format, pixel
count, side length) and only then a full decode, so a decompression bomb is refused from its
header before a single pixel is allocated. Every refusal is a :class:`BadImage` with a
reason code from :data:`REASONS`; ingest lists these in the manifest.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from synthray.config import ValidationConfig

#: Every reason a file can be refused for, cheapest check first.
REASONS = (
    "unreadable",  # the path could not be read (permissions, vanished, not a regular file)
    "empty",  # zero bytes
    "too_large",  # more encoded bytes than ValidationConfig.max_bytes
    "not_an_image",  # no image format recognises the bytes
    "unsupported_format",  # an image, but not in ValidationConfig.formats
    "decompression_bomb",  # header claims more than ValidationConfig.max_pixels pixels
    "too_small",  # a side shorter than ValidationConfig.min_side
    "truncated",  # data ends before the image does
    "corrupt",  # any other decode failure
)

# Magic numbers of the formats we may accept, to tell a damaged image (PIL cannot even
# identify it) from a file that never was one.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the header and a full decode told us about a valid image."""

    width: int
    height: int
    format: str  # PIL format name: JPEG, PNG, ...


class BadImage(Exception):
    """A file refused by validation, with a machine-readable reason.

    Attributes:
        reason: one of :data:`REASONS`.
        message: a human-readable explanation.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):  # keeps the two fields when the error crosses a process (Ray)
        return (BadImage, (self.reason, self.message))


# PIL keeps its bomb limit and truncation tolerance in module globals. We switch its bomb
# check off (our own cap decides, with our own reason code) and make sure truncated files
# fail, for as long as any inspection runs; a counter lets threads overlap without one
# restoring the globals under another.
_pil_lock = threading.Lock()
_pil_users = 0
_pil_saved: tuple[int | None, bool] = (None, False)


@contextmanager
def _strict_pil() -> Iterator[None]:
    global _pil_users, _pil_saved
    with _pil_lock:
        if _pil_users == 0:
            _pil_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _pil_users += 1
    try:
        with warnings.catch_warnings():
            # PIL warns about odd-but-decodable files (EXIF, palette transparency); they
            # are valid images and the warnings would flood an ingest log.
            warnings.simplefilter("ignore")
            yield
    finally:
        with _pil_lock:
            _pil_users -= 1
            if _pil_users == 0:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _pil_saved


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _is_truncation(exc: BaseException) -> bool:
    """Whether a decode error means the data stopped early (as opposed to bad data)."""
    if isinstance(exc, (EOFError, struct.error)):
        return True
    text = str(exc).lower()
    return "truncated" in text or "end of file" in text or "unexpected end" in text


def _decode_error(exc: BaseException, fmt: str) -> BadImage:
    if isinstance(exc, Image.DecompressionBombError) or "decompressed data too large" in str(exc).lower():
        return BadImage("decompression_bomb", f"{fmt}: {exc}")
    if _is_truncation(exc):
        return BadImage("truncated", f"{fmt}: {exc}")
    return BadImage("corrupt", f"{fmt}: {type(exc).__name__}: {exc}")


def _diagnose_unidentified(data: bytes) -> BadImage:
    """PIL could not identify the bytes: a damaged image of a known format, or no image."""
    fmt = _sniff(data)
    if fmt is None:
        return BadImage("not_an_image", f"no image format recognises these {len(data)} bytes")
    # Open with that one format's plugin to learn why it failed; Image.open hides the cause.
    Image.init()  # registers every plugin; a no-op once done
    factory = Image.OPEN.get(fmt, (None,))[0]
    if factory is None:
        return BadImage("corrupt", f"{fmt} signature but PIL cannot read it")
    try:
        factory(io.BytesIO(data), None)
    except Exception as exc:  # noqa: BLE001 - any plugin error is a verdict on the file
        return _decode_error(exc, fmt)
    return BadImage("corrupt", f"{fmt} signature but the header is unreadable")


def inspect_image(data: bytes, cfg: ValidationConfig | None = None) -> ImageInfo:
    """Validates encoded image bytes: size, format, pixel count, side, full decode.

    Args:
        data: the file's bytes, untouched.
        cfg: limits and accepted formats; ``None`` takes :class:`ValidationConfig` defaults.
    Returns:
        width, height and PIL format name of a valid image.
    Raises:
        BadImage: with reason ``empty``, ``too_large``, ``not_an_image``,
            ``unsupported_format``, ``decompression_bomb``, ``too_small``, ``truncated`` or
            ``corrupt``. No other exception escapes.
    """
    cfg = cfg or ValidationConfig()
    if len(data) == 0:
        raise BadImage("empty", "file has no bytes")
    if len(data) > cfg.max_bytes:
        raise BadImage("too_large", f"{len(data)} bytes > max_bytes {cfg.max_bytes}")
    with _strict_pil():
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise _diagnose_unidentified(data) from None
        except Exception as exc:  # noqa: BLE001 - header parse errors are verdicts too
            raise _decode_error(exc, _sniff(data) or "unknown format") from None
        with image:
            fmt = image.format or "unknown"
            if fmt not in cfg.formats:
                raise BadImage("unsupported_format", f"{fmt} is not one of {list(cfg.formats)}")
            width, height = image.size
            # Checked on the header's claim, before load() allocates width*height pixels.
            if width * height > cfg.max_pixels:
                raise BadImage(
                    "decompression_bomb",
                    f"{fmt} header claims {width}x{height} = {width * height} pixels > max_pixels {cfg.max_pixels}",
                )
            if min(width, height) < cfg.min_side:
                raise BadImage("too_small", f"{width}x{height} has a side below min_side {cfg.min_side}")
            try:
                image.load()
            except MemoryError as exc:
                raise BadImage("decompression_bomb", f"{fmt}: out of memory decoding: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, zlib.error ...
                raise _decode_error(exc, fmt) from None
    return ImageInfo(width=int(width), height=int(height), format=fmt)


def read_image_file(path: str | Path, cfg: ValidationConfig | None = None) -> bytes:
    """Reads a file for validation, refusing what cannot or should not be read.

    Args:
        path: the file.
        cfg: supplies ``max_bytes`` (checked from ``stat`` so a huge file is never read).
    Returns:
        the file's bytes.
    Raises:
        BadImage: ``unreadable`` (missing, dangling link, permission denied, not a regular
            file such as a FIFO that would block) or ``too_large``.
    """
    cfg = cfg or ValidationConfig()
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BadImage("unreadable", f"not a regular file (mode {stat.filemode(st.st_mode)})")
        if st.st_size > cfg.max_bytes:
            raise BadImage("too_large", f"{st.st_size} bytes > max_bytes {cfg.max_bytes}")
        with open(path, "rb") as fh:
            return fh.read(cfg.max_bytes + 1)
    except BadImage:
        raise
    except OSError as exc:  # PermissionError, FileNotFoundError (dangling link), EIO ...
        raise BadImage("unreadable", f"{type(exc).__name__}: {exc.strerror or exc}") from None


def validate_file(path: str | Path, cfg: ValidationConfig | None = None) -> tuple[bytes, ImageInfo]:
    """Reads and inspects one file.

    Args:
        path: the file.
        cfg: validation limits.
    Returns:
        (the file's bytes, its :class:`ImageInfo`).
    Raises:
        BadImage: for any reason in :data:`REASONS`.
    """
    data = read_image_file(path, cfg)
    return data, inspect_image(data, cfg)
