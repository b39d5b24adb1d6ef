"""The inbox: what the service could not name, kept in a collection beside the index.

Points of the inbox collection (``<index collection>-inbox``, the same store and model
version as the index) are of two kinds, told apart by their ``origin`` payload field:

- ``inbox``: an answer of ``unknown`` (or a low-confidence one): its embedding, content hash,
  when it was first and last seen, the answer and its nearest known class;
- ``feedback``: an image an operator labelled ("this is real", "this is generator X"), kept as
  a labelled sample until it is enrolled; it never changes the references by itself.

The image bytes are kept only when the operator turns that on (``keep_images``), in a
content-addressed folder, and deleted after ``retention_s``. Point ids derive from the kind
and the content hash, so an image seen twice is one entry.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.discovery.config import DiscoveryConfig
from synthray.index.store import BaseStore, Where, point_id

log = logging.getLogger(__name__)

INBOX, FEEDBACK = "inbox", "feedback"
#: The inbox collection's name beside index collection ``c``.
SUFFIX = "-inbox"


def inbox_collection(collection: str) -> str:
    return collection + SUFFIX


def wanted(answer: Mapping[str, Any], low_confidence: float | None) -> bool:
    """Whether an attribution answer goes to the inbox: ``unknown`` (not for an empty index),
    or a named generator below ``low_confidence``."""
    if answer.get("unknown_reason") == "empty_index":
        return False
    if answer["label"] == "unknown":
        return True
    return low_confidence is not None and answer["label"] != "real" and float(answer["confidence"]) < low_confidence


class Inbox:
    """The inbox over an opened store collection (the caller serialises calls).

    Args:
        store: the inbox collection (opened for the index's model version).
        cfg: capacity, image keeping and retention.
        images_root: folder of kept images; None = images are never kept.
    """

    def __init__(self, store: BaseStore, cfg: DiscoveryConfig, images_root: str | Path | None = None) -> None:
        self.store = store
        store.track_revision = False  # the inbox holds no references: nobody follows its revision
        self.cfg = cfg
        self.images_root = Path(images_root) if images_root is not None and cfg.keep_images else None

    def _id(self, kind: str, content_hash: str) -> str:
        return point_id(self.store.model_version, f"{kind}:{content_hash}")

    # -- images ---------------------------------------------------------------------------
    def _image_path(self, content_hash: str) -> Path | None:
        if self.images_root is None:
            return None
        return self.images_root / content_hash[:2] / content_hash

    def _keep_image(self, content_hash: str, data: bytes) -> bool:
        path = self._image_path(content_hash)
        if path is None:
            return False
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            os.utime(path)  # seen again: its retention starts over
        return True

    def image(self, content_hash: str) -> bytes | None:
        """The kept bytes of an image, or None (not kept, or past retention)."""
        path = self._image_path(content_hash)
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None

    def purge_images(self, now: float | None = None) -> int:
        """Deletes kept images older than the retention period; returns how many."""
        if self.images_root is None or not self.images_root.is_dir():
            return 0
        cutoff = (now or time.time()) - self.cfg.retention_s
        removed = 0
        for path in self.images_root.glob("*/*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("deleted %d kept inbox images past their retention", removed)
        return removed

    # -- unknown answers ------------------------------------------------------------------
    def record(
        self,
        vectors: np.ndarray,
        hashes: Sequence[str],
        answers: Sequence[Mapping[str, Any]],
        images: Sequence[bytes] | None = None,
        now: float | None = None,
    ) -> int:
        """Keeps the answers :func:`wanted` says belong here; returns how many were kept.

        An image seen before keeps its first-seen time and counts one more sighting.
        """
        now = now or time.time()
        chosen = [i for i, a in enumerate(answers) if wanted(a, self.cfg.low_confidence)]
        chosen = list({hashes[i]: i for i in chosen}.values())  # one entry per image
        if not chosen:
            return 0
        ids = [self._id(INBOX, hashes[i]) for i in chosen]
        before = self.store.payloads(ids)
        payloads = []
        for pid, i in zip(ids, chosen):
            a, old = answers[i], before.get(pid, {})
            kept = images is not None and self._keep_image(hashes[i], images[i])
            payloads.append(
                {
                    "origin": INBOX,
                    "content_hash": hashes[i],
                    "generator": str(a.get("nearest_class") or ""),
                    "label": a["label"],
                    "similarity": float(a.get("mean_similarity") or 0.0),
                    "is_ai_score": float(a.get("is_ai_score") or 0.0),
                    "first_seen": float(old.get("first_seen", now)),
                    "last_seen": now,
                    "times": int(old.get("times", 0)) + 1,
                    "image": bool(kept or old.get("image")),
                }
            )
        self.store.put(ids, np.asarray(vectors, np.float32)[chosen], payloads)
        self.trim()
        return len(chosen)

    def trim(self) -> int:
        """Drops the oldest unknown entries beyond the capacity (to 95% of it, so a full inbox
        is not scanned on every answer); returns how many went."""
        n = self.count()
        if n <= self.cfg.capacity:
            return 0
        _, payloads, ids = self.store.points(Where(origin=INBOX))
        order = np.argsort([float(p.get("last_seen", 0.0)) for p in payloads], kind="stable")
        drop = order[: n - int(self.cfg.capacity * 0.95)]
        self.store.delete([ids[i] for i in drop])
        log.info("inbox full (%d entries): dropped the %d oldest", n, len(drop))
        return len(drop)

    def count(self, kind: str = INBOX) -> int:
        return self.store.count_where(Where(origin=kind))

    def entries(self, kind: str = INBOX) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every entry of a kind: (vectors (N, D), payloads)."""
        vectors, payloads, _ = self.store.points(Where(origin=kind))
        return vectors, payloads

    def get(self, hashes: Sequence[str], kind: str = INBOX) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """``{hash: (vector, payload)}`` of the hashes held as ``kind``."""
        return {
            p["content_hash"]: (v, p) for v, p in self.store.points_by_id([self._id(kind, h) for h in hashes]).values()
        }

    def remove(self, hashes: Sequence[str], kind: str = INBOX) -> None:
        self.store.delete([self._id(kind, h) for h in hashes])

    # -- feedback -------------------------------------------------------------------------
    def add_feedback(
        self,
        label: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        answered: Sequence[str | None],
        images: Sequence[bytes | None] | None = None,
        note: str = "",
        now: float | None = None,
    ) -> list[str]:
        """Keeps images an operator labelled ``label`` (the latest label of an image wins).
        They leave the unknown inbox: they are labelled now. Returns their hashes."""
        now = now or time.time()
        payloads = []
        for i, h in enumerate(hashes):
            data = images[i] if images is not None else None
            kept = data is not None and self._keep_image(h, data)
            payloads.append(
                {
                    "origin": FEEDBACK,
                    "content_hash": h,
                    "generator": label,
                    "name": names[i],
                    "answered": answered[i],
                    "at": now,
                    "note": note,
                    "image": kept,
                }
            )
        self.store.put([self._id(FEEDBACK, h) for h in hashes], np.asarray(vectors, np.float32), payloads)
        self.remove(hashes, INBOX)
        return list(hashes)

    def metadata(self) -> dict[str, Any]:
        return self.store.metadata()

    def set_metadata(self, values: Mapping[str, Any]) -> None:
        self.store.set_metadata(values)

    def close(self) -> None:
        self.store.close()
