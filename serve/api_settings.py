"""What the HTTP layer is configured with and checks everywhere: the backend protocol, the
settings, generator names, the upload body the schema declares."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from fastapi import Path

from serve.auth import KeyCheck
from serve.errors import ApiError
from serve.rate import RateLimit
from serve.schemas import ErrorBody, NAME_REGEX
from serve.uploads import Limits

#: Enrollment names: letters, digits and ``_ . + -`` or spaces inside (``SD1.4``, ``DALL-E 3``, ``my-gan_v2``).
NAME_PATTERN = re.compile(NAME_REGEX)
#: The generator name path parameter, as the schema declares it.
GENERATOR_NAME = Path(
    description="generator name (1-64 characters: letters, digits, '_', '.', '+', '-', spaces "
    "inside); 'real' and 'unknown' are the service's own labels (409)",
    pattern=NAME_REGEX,
)
#: Labels the service itself answers with; no generator may take them.
RESERVED_NAMES = ("real", "unknown")
#: How long /readyz and /metrics wait for the other deployments.
PROBE_TIMEOUT_S = 10.0
#: /metrics reads the index size at most this often.
INDEX_SIZE_TTL_S = 5.0


class Backend(Protocol):
    """What the routes need done (implemented by the Serve ingress over deployment handles)."""

    async def embed(self, data: bytes) -> Any: ...  # serve.encoder.Embedded
    async def encoder_info(self) -> dict[str, Any]: ...
    async def index_info(self) -> dict[str, Any]: ...
    async def attribute(
        self,
        vectors: np.ndarray,
        model_version: str | None = None,
        hashes: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
    ) -> list[dict[str, Any]]: ...
    async def enroll(
        self,
        generator: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        images: Sequence[bytes] | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]: ...
    async def generators(self) -> dict[str, dict[str, int]]: ...
    async def delete_generator(self, generator: str) -> dict[str, Any]: ...
    async def class_references(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray: ...
    async def explain(
        self, data: bytes, references: np.ndarray, kinds: list[str], lime_samples: int
    ) -> dict[str, Any]: ...
    # discovery (serve.inbox_owner)
    async def discoveries(self, refresh: bool) -> dict[str, Any]: ...
    async def discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]: ...
    async def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]: ...
    async def add_feedback(
        self,
        label: str,
        hashes: Sequence[str],
        vectors: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
        note: str = "",
    ) -> dict[str, Any]: ...
    async def list_feedback(self) -> dict[str, Any]: ...
    async def enroll_feedback(self, label: str) -> dict[str, Any]: ...
    async def inbox_stats(self) -> dict[str, Any]: ...


#: Serve deployment states in which every replica serves the pinned version (scaling is fine).
READY_STATES = ("HEALTHY", "UPSCALING", "DOWNSCALING")


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
    """Limits of ``?explain=`` on /v1/attribute (an explanation costs ~1 + lime_samples forward passes)."""

    max_images: int = 4  # images a request may ask explanations for (more: 422 too_many_to_explain)
    lime_samples: int = 150  # occluded views per LIME explanation unless the request sets lime_samples
    max_lime_samples: int = 1000  # the most a request may ask for
    references: int = 16  # the target class's references nearest the image that the explained score looks at


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """Per-app settings of the HTTP layer."""

    limits: Limits
    auth: KeyCheck
    model_version: str  # of the encoder (answers carry it)
    explain: ExplainSettings = ExplainSettings()
    keep_images: bool = False  # send the bytes of answered images to the inbox (discovery.keep_images)
    write_rate: RateLimit = dataclasses.field(default_factory=lambda: RateLimit(0, 1))  # per key; 0 = none


def explain_request(query: Mapping[str, str], settings: ExplainSettings) -> tuple[list[str], int]:
    """The explanation kinds and LIME views a request asks for (``([], n)``: none).

    ``explain`` is a comma-separated list of ``saliency`` and ``lime``; ``true``/``all``
    mean both, ``false``/``none``/empty mean none.

    Raises:
        ApiError: 422 ``invalid_explain`` or ``invalid_lime_samples``.
    """
    from synthray.methods.explain_config import EXPLAIN_KINDS  # (not .explain: that imports torch)

    raw = query.get("explain", "").strip().lower()
    if raw in ("", "false", "none", "0"):
        kinds: list[str] = []
    elif raw in ("true", "all", "1"):
        kinds = list(EXPLAIN_KINDS)
    else:
        kinds = list(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
        bad = [k for k in kinds if k not in EXPLAIN_KINDS]
        if bad or not kinds:
            raise ApiError(
                422,
                "invalid_explain",
                f"explain={query.get('explain')!r}: give a comma-separated list of "
                f"{', '.join(EXPLAIN_KINDS)}, or 'all'",
                allowed=list(EXPLAIN_KINDS),
            )
    samples = settings.lime_samples
    if "lime_samples" in query:
        try:
            samples = int(query["lime_samples"])
        except ValueError:
            samples = -1
        if not 10 <= samples <= settings.max_lime_samples:
            raise ApiError(
                422,
                "invalid_lime_samples",
                f"lime_samples={query['lime_samples']!r} must be an integer from 10 to {settings.max_lime_samples}",
                max=settings.max_lime_samples,
            )
    return kinds, samples


def canonical_generator(name: str) -> str:
    """The enrollment name checked and spelled as the rest of synthray spells it.

    Raises:
        ApiError: 422 ``invalid_generator_name``; 409 ``reserved_generator_name``.
    """
    from synthray.data.generators import normalize_generator

    if not NAME_PATTERN.match(name):
        raise ApiError(
            422,
            "invalid_generator_name",
            f"generator name {name!r} must match {NAME_PATTERN.pattern} (1-64 characters: letters, digits, "
            "'_', '.', '+', '-', spaces inside)",
            pattern=NAME_PATTERN.pattern,
        )
    canonical = normalize_generator(name)
    if canonical.lower() in RESERVED_NAMES:
        # 409: a well-formed name that conflicts with the service's own labels (not a malformed one).
        raise ApiError(
            409,
            "reserved_generator_name",
            f"{name!r} means {canonical!r}, a label the service answers with; real images are not "
            "enrolled, only generators",
            reserved=list(RESERVED_NAMES),
        )
    return canonical


def upload_body(max_files: int) -> dict[str, Any]:
    """The OpenAPI request body of the image routes, with the limits the server enforces."""
    images = {"type": "array", "minItems": 1, "maxItems": max_files}
    return {
        "requestBody": {
            "required": True,
            "description": f"1 to {max_files} images as multipart file parts, as JSON with base64 data, or one raw "
            "image body; each a decodable image (JPEG, PNG, WebP, BMP, TIFF, GIF) of at least 8 px a "
            "side, within the request's byte limit and the per-image pixel limit",
            "content": {
                # Only file parts: a text field is refused (400 bad_multipart), so none is declared.
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "additionalProperties": False,
                        "properties": {"files": {**images, "items": {"type": "string", "format": "binary"}}},
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {
                                **images,
                                "items": {
                                    "oneOf": [
                                        {
                                            "type": "string",
                                            "format": "byte",
                                            "description": "base64 (a data: URL is accepted)",
                                        },
                                        {
                                            "type": "object",
                                            "required": ["data"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "data": {"type": "string", "format": "byte"},
                                            },
                                        },
                                    ]
                                },
                            }
                        },
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


#: The error answers every route may give, as the schema declares them.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 409, 413, 415, 422, 429, 503)
}
