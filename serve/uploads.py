"""Images out of an HTTP request: bounded body, three encodings, one validation.

A request may carry its images as ``multipart/form-data`` (one file part per image), as
JSON (``{"images": ["<base64>", {"name": "a.png", "data": "<base64>"}, ...]}``) or as a
single raw image body (``Content-Type: image/png``). Whatever the encoding, the body is
read with a byte cap (413 before anything is parsed), the file count is capped, and each
image goes through :func:`synthray.data.validate.inspect_image` (pixel cap from the
header, so a decompression bomb is refused before it is decoded).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from typing import Any, AsyncIterator

from serve.errors import ApiError

#: Content types a request may carry images in (shown in 415 answers).
ACCEPTED_TYPES = ("multipart/form-data", "application/json", "image/*")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_bytes: int  # request body bytes (413 beyond); also caps each image
    max_pixels: int  # width*height claimed by an image header (decompression bombs)
    max_files: int  # images per request


@dataclasses.dataclass(frozen=True)
class Upload:
    """One image as it arrived, before validation."""

    name: str  # the file name the client gave, or image-<i>
    data: bytes


@dataclasses.dataclass(frozen=True)
class ValidImage:
    """An image that passed validation."""

    name: str
    data: bytes
    content_hash: str  # sha256 of the bytes, as ingest computes it (point ids derive from it)
    width: int
    height: int
    format: str


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, refusing it as soon as it exceeds ``max_bytes``.

    Args:
        request: a Starlette request.
        max_bytes: the cap.
    Raises:
        ApiError: 413 ``too_large`` (from Content-Length before reading, else while reading).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(
            413,
            "too_large",
            f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes",
            limit=max_bytes,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {max_bytes} bytes", limit=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _multipart(headers: Any, body: bytes, limits: Limits) -> list[Upload]:
    from starlette.formparsers import MultiPartException, MultiPartParser

    parser = MultiPartParser(headers, _replay(body), max_files=limits.max_files, max_fields=limits.max_files)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise ApiError(
                422,
                "too_many_files",
                f"more than {limits.max_files} files in one request; send them in several requests",
                limit=limits.max_files,
            ) from None
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc.message}") from None
    uploads = []
    try:
        for i, (field, value) in enumerate(form.multi_items()):
            if isinstance(value, str):
                raise ApiError(
                    400,
                    "bad_multipart",
                    f"form field {field!r} is text, not a file: send images as file parts (curl -F 'files=@image.png')",
                )
            uploads.append(Upload(value.filename or f"image-{i}", await value.read()))
    finally:
        await form.close()
    return uploads


def _decode_b64(text: str, where: str) -> bytes:
    if text.startswith("data:"):  # a data URL: data:image/png;base64,<payload>
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad_base64", f"{where}: not valid base64 ({exc})") from None


def _json_images(body: bytes, limits: Limits) -> list[Upload]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    items = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ApiError(400, "bad_json", 'expected {"images": ["<base64>" or {"name": ..., "data": "<base64>"}, ...]}')
    if len(items) > limits.max_files:
        raise ApiError(
            422,
            "too_many_files",
            f"{len(items)} images in one request > limit {limits.max_files}",
            limit=limits.max_files,
        )
    uploads = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            uploads.append(Upload(f"image-{i}", _decode_b64(item, f"images[{i}]")))
        elif isinstance(item, dict) and isinstance(item.get("data"), str):
            if "name" in item and not isinstance(item["name"], str):
                raise ApiError(400, "bad_json", f"images[{i}].name must be a string (the file name)")
            name = item.get("name") or f"image-{i}"
            uploads.append(Upload(name, _decode_b64(item["data"], f"images[{i}] ({name})")))
        else:
            raise ApiError(400, "bad_json", f'images[{i}] must be a base64 string or {{"name", "data"}}')
    return uploads


async def parse_uploads(request: Any, limits: Limits) -> list[Upload]:
    """The images a request carries, in the order sent.

    Args:
        request: a Starlette request (multipart, JSON or a raw ``image/*`` body).
        limits: body size and file count caps.
    Returns:
        one :class:`Upload` per image (not yet validated).
    Raises:
        ApiError: 413 ``too_large``; 422 ``too_many_files``; 415 ``unsupported_media_type``;
            400 ``empty_body``, ``no_images``, ``bad_json``, ``bad_base64``, ``bad_multipart``.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/json") and not ctype.startswith("image/"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {ctype or '(none)'!r} is not accepted; send one of {', '.join(ACCEPTED_TYPES)}",
            accepted=list(ACCEPTED_TYPES),
        )
    body = await read_body(request, limits.max_bytes)
    if not body:
        raise ApiError(400, "empty_body", "the request has no body: attach at least one image")
    if ctype == "multipart/form-data":
        uploads = await _multipart(request.headers, body, limits)
    elif ctype == "application/json":
        uploads = _json_images(body, limits)
    else:
        uploads = [Upload(request.headers.get("x-filename") or "image-0", body)]
    if not uploads:
        raise ApiError(400, "no_images", "the request carries no images")
    return uploads


def validate_uploads(uploads: list[Upload], limits: Limits) -> tuple[list[ValidImage], list[dict[str, str]]]:
    """Splits uploads into valid images and refusals (CPU-bound: run it off the event loop).

    Args:
        uploads: the parsed images.
        limits: pixel and byte caps.
    Returns:
        (valid images in order, ``[{"file", "reason", "message"}]`` for the refused ones,
        with reasons from :data:`synthray.data.validate.REASONS`).
    """
    from synthray.config import ValidationConfig
    from synthray.data.validate import BadImage, inspect_image

    cfg = ValidationConfig(max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)
    good, bad = [], []
    for up in uploads:
        try:
            info = inspect_image(up.data, cfg)
        except BadImage as exc:
            bad.append({"file": up.name, "reason": exc.reason, "message": exc.message})
            continue
        good.append(
            ValidImage(up.name, up.data, hashlib.sha256(up.data).hexdigest(), info.width, info.height, info.format)
        )
    return good, bad
