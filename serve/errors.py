"""Errors the API answers with: one JSON shape, one machine-readable code per kind.

Every refusal is an :class:`ApiError` carrying an HTTP status and a code; the ingress
turns it into ``{"error": {"code", "message", "status", "details"}}``. The codes double
as the ``kind`` label of the error counter in ``/metrics``.
"""

from __future__ import annotations

from typing import Any

#: HTTP status for each image validation reason (synthray.data.validate.REASONS): too big
#: is "payload too large", a format we refuse is "unsupported media type", and a file that
#: is damaged or no image at all is "unprocessable".
REASON_STATUS = {
    "unreadable": 422,
    "empty": 422,
    "too_large": 413,
    "not_an_image": 422,
    "unsupported_format": 415,
    "decompression_bomb": 413,
    "too_small": 422,
    "truncated": 422,
    "corrupt": 422,
    # Not the request's fault but the index's state: the image is another generator's already.
    "indexed_elsewhere": 409,
}


class ApiError(Exception):
    """A request the service refuses, as the client will see it.

    Args:
        status: HTTP status (4xx for the caller's mistakes, 5xx for ours).
        code: short machine-readable kind, e.g. ``too_many_files``.
        message: what went wrong and what to do about it.
        headers: HTTP headers of the answer (``Retry-After`` on 429/503, ``Allow`` on 405).
        details: extra JSON-able fields (the rejected files, the limit that was hit).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def __reduce__(self):  # keeps every field when the error crosses a process (Ray handle calls)
        return (_rebuild, (self.status, self.code, self.message, self.details, self.headers))

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status, "details": self.details}}


def _rebuild(
    status: int, code: str, message: str, details: dict[str, Any], headers: dict[str, str] | None = None
) -> ApiError:
    return ApiError(status, code, message, headers, **details)


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header for a delay (whole seconds, at least 1)."""
    import math

    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def rejected_images(rejected: list[dict[str, str]]) -> ApiError:
    """The error for a request whose images all had to be refused.

    Args:
        rejected: ``[{"file", "reason", "message"}]``, one per refused file.
    Returns:
        an :class:`ApiError` whose status is that of the reason when all files share
        one status (413 for oversized ones, 415 for refused formats), else 422; whose code
        is the reason when there is only one.
    """
    # A second copy in the same request follows the first copy's fate: it sets no status itself.
    statuses = {REASON_STATUS.get(r["reason"], 422) for r in rejected if r["reason"] != "duplicate"} or {422}
    reasons = sorted({r["reason"] for r in rejected})
    status = statuses.pop() if len(statuses) == 1 else 422
    code = reasons[0] if len(reasons) == 1 else "invalid_images"
    first = rejected[0]
    more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
    return ApiError(status, code, f"{first['file']}: {first['message']}{more}", rejected=rejected)
