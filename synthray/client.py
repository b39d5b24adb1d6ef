"""A small Python client of the synthray service, so nobody has to hand-write HTTP.

    from synthray.client import SynthrayClient

    client = SynthrayClient("http://127.0.0.1:8000", api_key="...")   # or $SYNTHRAY_API_KEY
    client.attribute(["a.png", "b.jpg"])["results"][0]["label"]
    client.enroll("my-gan", "samples/my-gan/")                        # a folder of ~50 images
    client.generators(); client.delete("my-gan")

Every call is retried on connection failures and on 502/503/504 (a restarting replica):
attribution and enrollment are idempotent (enrolled points are keyed by content hash), so
a retried request never counts twice. Any other failure raises :class:`ClientError` with
the server's error code and message.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

#: File suffixes ``enroll`` picks up from a folder (the formats the server validates).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Statuses worth retrying: the proxy or a replica is (re)starting, the service is at capacity
#: (503 with Retry-After), or this key's write rate is spent (429 with Retry-After).
RETRY_STATUSES = (429, 502, 503, 504)
#: The longest Retry-After the client waits (a longer one ends the retries sooner, not later).
MAX_RETRY_AFTER_S = 30.0
#: Images per request when explanations are asked for (the service's default ``max_explain``).
EXPLAIN_CHUNK = 4


class ClientError(RuntimeError):
    """A request the service refused or could not be reached for.

    Attributes:
        status: HTTP status (0 when the service could not be reached).
        code: the server's error code (``too_large``, ``invalid_api_key`` ...) or ``unreachable``.
        message: the server's explanation.
        details: the server's extra fields (e.g. ``rejected`` files).
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


ImageLike = str | Path | bytes


class SynthrayClient:
    """Talks to one synthray service.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: key for writes (and reads where the server wants one); None reads
            ``$SYNTHRAY_API_KEY``.
        timeout_s: per request.
        retries: extra attempts after a connection failure or a 502/503/504.
        backoff_s: first wait between attempts (doubles each time).
    """

    def __init__(
        self, url: str, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 0.5
    ) -> None:
        import requests

        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get("SYNTHRAY_API_KEY") or None)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.session = requests.Session()

    # -- endpoints ------------------------------------------------------------------------
    def attribute(
        self, images: Sequence[ImageLike], chunk: int = 32, explain: Sequence[str] = (), lime_samples: int | None = None
    ) -> dict[str, Any]:
        """Attributes images (paths or encoded bytes), ``chunk`` per request.

        Args:
            images: paths or encoded bytes.
            chunk: images per request (at most 4 when explaining: the service's default cap).
            explain: "saliency" and/or "lime": add each image's explanation maps.
            lime_samples: LIME's occluded views per image (None: the service's default).
        Returns:
            ``{"model_version", "results": [one per image, in order]}`` (see the API docs).
        """
        params: dict[str, Any] = {}
        if explain:
            params["explain"] = ",".join(explain)
            chunk = min(chunk, EXPLAIN_CHUNK)
            if lime_samples is not None:
                params["lime_samples"] = lime_samples
        out: dict[str, Any] = {"results": []}
        for part in _chunks(list(images), chunk):
            answer = self._request("POST", "/v1/attribute", files=_files(part), params=params)
            out["model_version"] = answer["model_version"]
            out["results"].extend(answer["results"])
        return out

    def enroll(self, generator: str, images: str | Path | Sequence[ImageLike], chunk: int = 50) -> dict[str, Any]:
        """Enrolls images of ``generator``: a folder (its image files) or a list of paths/bytes.

        Returns:
            the summed answer: ``enrolled``, ``unchanged``, ``rejected`` (with reasons),
            and the generator's ``total``, ``counts`` and ``calibration`` after the last request.
        Raises:
            ClientError: the first request that failed as a whole (earlier chunks stay enrolled).
        """
        items = image_files(images) if isinstance(images, (str, Path)) else list(images)
        if not items:
            raise ClientError(0, "no_images", f"no images to enroll in {images}")
        total: dict[str, Any] = {"generator": generator, "enrolled": 0, "unchanged": 0, "rejected": []}
        for part in _chunks(items, chunk):
            answer = self._request("POST", f"/v1/generators/{_quote(generator)}/samples", files=_files(part))
            total["enrolled"] += answer["enrolled"]
            total["unchanged"] += answer["unchanged"]
            total["rejected"] += answer["rejected"]
            total.update({k: answer[k] for k in ("generator", "total", "counts", "model_version")})
            if answer.get("calibration") is not None:
                total["calibration"] = answer["calibration"]
        return total

    def generators(self) -> dict[str, Any]:
        """``{"model_version", "generators": [{"name", "count", "trained", "enrolled", "counts"}], "total"}``."""
        return self._request("GET", "/v1/generators")

    def delete(self, generator: str) -> dict[str, Any]:
        """Deletes a generator's enrolled samples: ``{"generator", "deleted", "counts"}``."""
        return self._request("DELETE", f"/v1/generators/{_quote(generator)}")

    # -- discovery --------------------------------------------------------------------------
    def discoveries(self, refresh: bool = False) -> dict[str, Any]:
        """Candidate new generators among unknown answers: ``{"discoveries": [...], "enrolled",
        "inbox", "computed_at"}`` (``refresh`` regroups the inbox now)."""
        return self._request("GET", "/v1/discoveries", params={"refresh": str(refresh).lower()})

    def discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]:
        return self._request("GET", f"/v1/discoveries/{_quote(discovery_id)}", params={"members": str(members).lower()})

    def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]:
        """Enrolls a discovery as generator ``name`` (idempotent under the same name)."""
        return self._request("POST", f"/v1/discoveries/{_quote(discovery_id)}/enroll", json={"name": name})

    def feedback(
        self, label: str, hashes: Sequence[str] = (), images: Sequence[ImageLike] = (), note: str = ""
    ) -> dict[str, Any]:
        """Labels images ``label`` ("real" or a generator): seen ones by content hash, or uploaded."""
        if hashes and images:
            raise ValueError("give hashes or images, not both")
        if hashes:
            return self._request("POST", "/v1/feedback", json={"label": label, "hashes": list(hashes), "note": note})
        return self._request("POST", "/v1/feedback/images", params={"label": label, "note": note}, files=_files(images))

    def list_feedback(self) -> dict[str, Any]:
        return self._request("GET", "/v1/feedback")

    def enroll_feedback(self, label: str) -> dict[str, Any]:
        """Enrolls every feedback image labelled ``label``."""
        return self._request("POST", "/v1/feedback/enroll", json={"label": label})

    def ready(self) -> dict[str, Any]:
        return self._request("GET", "/readyz")

    def wait_ready(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Polls /readyz until the service is ready (after a start or restart)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.ready()
            except ClientError as exc:
                if time.monotonic() > deadline:
                    raise ClientError(
                        exc.status, exc.code, f"not ready after {timeout_s:.0f} s: {exc.message}"
                    ) from exc
                time.sleep(1.0)

    # -- transport --------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.request(method, self.url + path, headers=headers, timeout=self.timeout_s, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise ClientError(0, "unreachable", f"{method} {self.url}{path}: {exc}") from exc
                log.warning("%s %s: %s; retrying in %.1f s", method, path, type(exc).__name__, wait)
            else:
                if resp.status_code < 400:
                    return resp.json()
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    raise _error(resp)
                # The server says when to come back (overload, a replica restarting, a rate limit).
                asked = _retry_after(resp)
                if asked is not None:
                    log.warning(
                        "%s %s: HTTP %d; the server asks to retry in %.1f s", method, path, resp.status_code, asked
                    )
                    time.sleep(min(max(asked, self.backoff_s), MAX_RETRY_AFTER_S))
                    continue
                log.warning("%s %s: HTTP %d; retrying in %.1f s", method, path, resp.status_code, wait)
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")  # the loop returns or raises


def explanation_figure(image: bytes, result: dict[str, Any], path: str | Path) -> Path:
    """One attributed image beside its saliency and LIME maps, as a PNG.

    Args:
        image: the encoded image that was sent.
        result: its entry of ``attribute()["results"]`` (with an ``explanation``).
        path: the PNG to write.
    Returns:
        the path written.
    Raises:
        ValueError: the result carries no explanation.
    """
    import base64
    import io

    import numpy as np
    from PIL import Image

    from synthray.plots import pyplot, save_figure

    plt = pyplot()

    exp = result.get("explanation")
    if not exp:
        raise ValueError(f"{result.get('file')}: no explanation in the result (ask with explain=...)")
    res = int(exp["resolution"])
    # The maps are at the model's input resolution: show the image at that size, as the model saw it.
    shown = (
        np.asarray(Image.open(io.BytesIO(image)).convert("RGB").resize((res, res), Image.Resampling.BILINEAR)) / 255.0
    )

    def decoded(b64: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))), dtype=np.float64) / 255.0

    panels = [("image", None, None)]
    if exp.get("saliency"):
        panels.append(("saliency", decoded(exp["saliency"]), "inferno"))
    if exp.get("lime"):
        panels.append((f"LIME (R2 {exp['lime']['r2']:.2f})", decoded(exp["lime"]["map"]) * 2 - 1, "bwr"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), squeeze=False)
    for ax, (title, values, cmap) in zip(axes[0], panels):
        ax.imshow(shown)
        if values is not None:
            ax.imshow(values, cmap=cmap, alpha=0.6, **({"vmin": -1, "vmax": 1} if cmap == "bwr" else {}))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"{result.get('file')}: {result['label']} (toward {exp['target']}, similarity {exp['score']:.2f})", fontsize=9
    )
    return save_figure(fig, path, dpi=100)


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix), sorted.

    Raises:
        ClientError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClientError(0, "not_a_folder", f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _files(images: Iterable[ImageLike]) -> list[tuple[str, tuple[str, bytes, str]]]:
    out = []
    for i, img in enumerate(images):
        if isinstance(img, bytes):
            out.append(("files", (f"image-{i}", img, "application/octet-stream")))
        else:
            path = Path(img)
            try:
                out.append(("files", (path.name, path.read_bytes(), "application/octet-stream")))
            except OSError as exc:
                raise ClientError(0, "unreadable", f"{path}: {exc.strerror or exc}") from exc
    return out


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for s in range(0, len(items), max(1, size)):
        yield items[s : s + size]


def _retry_after(resp: Any) -> float | None:
    """The Retry-After header's delay in seconds (the seconds form; an HTTP date is ignored)."""
    value = resp.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _error(resp: Any) -> ClientError:
    try:
        err = resp.json()["error"]
        return ClientError(resp.status_code, err["code"], err["message"], err.get("details"))
    except (ValueError, KeyError, TypeError):
        return ClientError(resp.status_code, f"http_{resp.status_code}", resp.text[:500])
