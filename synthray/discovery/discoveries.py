"""Discoveries: groups of the inbox that look like one new generator, and their enrollment.

No Ray, no HTTP, no threads: the index owner (:mod:`serve.index_owner`) runs
:meth:`Discoveries.snapshot`, :meth:`Discoveries.apply` and the enrollment steps on the
inbox's thread and :func:`synthray.discovery.clusters.group` off it. The state (ids, their
remembered members, enrolled discoveries, the id counter) is the inbox collection's
metadata, so it survives a restart with the inbox.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

from synthray.discovery.clusters import match, summarize
from synthray.discovery.config import DiscoveryConfig
from synthray.discovery.inbox import FEEDBACK, INBOX, Inbox
from synthray.index.enrollment import EnrollmentError

log = logging.getLogger(__name__)

STATE_KEY = "discoveries"
#: Members remembered per discovery to keep its id across re-groupings and restarts.
REMEMBERED = 500
THUMBNAIL_SIDE = 64


@dataclasses.dataclass
class Discovery:
    """One candidate new generator."""

    id: str
    members: list[str]  # content hashes (at most REMEMBERED are persisted)
    size: int
    first_seen: float
    last_seen: float
    cohesion: float  # mean cosine similarity of members to their centroid
    nearest_class: str  # the known class its members came closest to
    nearest_similarity: float  # their mean similarity to that class's nearest references
    examples: list[str]  # hashes nearest the centroid
    kept_images: int  # members whose image bytes are kept

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("members")
        return d

    def state(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "members": self.members[:REMEMBERED]}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an enrollment from the inbox writes: the entries' vectors, hashes, names and bytes
    (``images`` None when not every entry's bytes are kept: then embeddings only)."""

    vectors: np.ndarray
    hashes: list[str]
    names: list[str]
    images: list[bytes] | None

    @property
    def source(self) -> str:
        return "images" if self.images is not None else "embeddings"


def plan_from(inbox: Inbox, entries: Sequence[tuple[np.ndarray, dict[str, Any]]], prefix: str) -> Plan:
    """The enrollment plan of inbox entries (vector, payload); images when all are kept."""
    hashes = [p["content_hash"] for _, p in entries]
    images = [inbox.image(h) if p.get("image") else None for h, (_, p) in zip(hashes, entries)]
    names = [str(p.get("name") or f"{prefix}-{h[:12]}") for h, (_, p) in zip(hashes, entries)]
    all_kept = all(b is not None for b in images)
    return Plan(
        np.stack([v for v, _ in entries]).astype(np.float32),
        hashes,
        names,
        [b for b in images if b is not None] if all_kept else None,
    )


class Discoveries:
    """The current discoveries over an :class:`Inbox` (the caller serialises calls)."""

    def __init__(self, inbox: Inbox, cfg: DiscoveryConfig) -> None:
        self.inbox = inbox
        self.cfg = cfg
        state = inbox.metadata().get(STATE_KEY) or {}
        self.next_id = int(state.get("next_id", 1))
        self.current = {d["id"]: Discovery(**d) for d in state.get("current", [])}
        self.enrolled: dict[str, dict[str, Any]] = dict(state.get("enrolled", {}))
        self.computed_at: float | None = state.get("computed_at")

    def _persist(self) -> None:
        self.inbox.set_metadata(
            {
                STATE_KEY: {
                    "next_id": self.next_id,
                    "computed_at": self.computed_at,
                    "enrolled": self.enrolled,
                    "current": [d.state() for d in self.current.values()],
                }
            }
        )

    # -- grouping ---------------------------------------------------------------------------
    def snapshot(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The unknown entries to group (the inbox thread's part before grouping)."""
        return self.inbox.entries(INBOX)

    def apply(self, vectors: np.ndarray, payloads: list[dict[str, Any]], labels: np.ndarray) -> list[Discovery]:
        """Turns a grouping of the snapshot into discoveries with stable ids, and stores them."""
        hashes = [p["content_hash"] for p in payloads]
        summaries = summarize(vectors, labels, self.cfg.examples)
        groups = [{hashes[i] for i in s.members} for s in summaries]
        ids = match(groups, {d.id: set(d.members) for d in self.current.values()}, self.cfg.match_overlap)
        current = {}
        for s, did in zip(summaries, ids):
            if did is None:
                did = f"d{self.next_id:04d}"
                self.next_id += 1
            members = [payloads[i] for i in s.members]
            nearest, _ = Counter(p.get("generator", "") for p in members).most_common(1)[0]
            sims = [float(p.get("similarity", 0.0)) for p in members if p.get("generator", "") == nearest]
            current[did] = Discovery(
                id=did,
                members=[hashes[i] for i in s.members],
                size=len(s.members),
                first_seen=min(float(p.get("first_seen", 0.0)) for p in members),
                last_seen=max(float(p.get("last_seen", 0.0)) for p in members),
                cohesion=round(s.cohesion, 4),
                nearest_class=nearest,
                nearest_similarity=round(float(np.mean(sims)), 4),
                examples=[hashes[i] for i in s.examples],
                kept_images=sum(bool(p.get("image")) for p in members),
            )
        self.current = current
        self.computed_at = time.time()
        self._persist()
        self.inbox.purge_images()
        log.info(
            "inbox of %d: %d discoveries (%s)",
            len(hashes),
            len(current),
            ", ".join(f"{d.id}: {d.size}" for d in current.values()) or "none",
        )
        return list(current.values())

    # -- reading ----------------------------------------------------------------------------
    def listing(self, thumbnails: bool = True) -> list[dict[str, Any]]:
        """Every current discovery, largest first (thumbnails of examples when images are kept)."""
        return [self.describe(d, thumbnails) for d in sorted(self.current.values(), key=lambda d: -d.size)]

    def describe(self, d: Discovery, thumbnails: bool = True) -> dict[str, Any]:
        out = {**d.to_dict(), "status": "open"}
        if thumbnails and d.kept_images:
            out["thumbnails"] = {h: t for h in d.examples if (t := self.thumbnail(h)) is not None}
        return out

    def get(self, discovery_id: str, members: bool = False) -> dict[str, Any]:
        """One discovery (with every member's hash when asked), or an enrolled one's record.

        Raises:
            EnrollmentError: 404 ``unknown_discovery``.
        """
        if discovery_id in self.current:
            d = self.current[discovery_id]
            return {**self.describe(d), **({"members": list(d.members)} if members else {})}
        if discovery_id in self.enrolled:
            return {"id": discovery_id, "status": "enrolled", **self.enrolled[discovery_id]}
        raise self._not_found(discovery_id)

    def _not_found(self, discovery_id: str) -> EnrollmentError:
        return EnrollmentError(
            404,
            "unknown_discovery",
            f"no discovery {discovery_id!r}: list them with GET "
            "/v1/discoveries (ids of groups that dissolved are not reused)",
            known=sorted(self.current),
        )

    def thumbnail(self, content_hash: str) -> str | None:
        """A small JPEG data URL of a kept image (None when not kept or not decodable)."""
        data = self.inbox.image(content_hash)
        if data is None:
            return None
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                small = im.convert("RGB")
                small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                buf = io.BytesIO()
                small.save(buf, "JPEG", quality=80)
        except Exception:  # noqa: BLE001 - a thumbnail is a courtesy; the listing stands without it
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    def counts(self) -> dict[str, int]:
        return {
            "inbox": self.inbox.count(INBOX),
            "feedback": self.inbox.count(FEEDBACK),
            "discoveries": len(self.current),
            "enrolled_discoveries": len(self.enrolled),
        }

    # -- enrollment -------------------------------------------------------------------------
    def plan(self, discovery_id: str, name: str) -> Plan | dict[str, Any]:
        """What enrolling a discovery as ``name`` writes, or the earlier record when it was
        already enrolled under that name (enrolling twice is idempotent).

        Raises:
            EnrollmentError: 404 ``unknown_discovery``; 409 ``already_enrolled`` (under another
                name) or ``empty_discovery`` (its members left the inbox meanwhile).
        """
        if discovery_id in self.enrolled:
            record = self.enrolled[discovery_id]
            if record["name"] == name:
                return {**record, "already_enrolled": True}
            raise EnrollmentError(
                409,
                "already_enrolled",
                f"discovery {discovery_id} was enrolled as "
                f"{record['name']!r}; add more images to that generator, or delete it first",
                name=record["name"],
            )
        d = self.current.get(discovery_id)
        if d is None:
            raise self._not_found(discovery_id)
        held = self.inbox.get(d.members)
        if not held:
            raise EnrollmentError(
                409,
                "empty_discovery",
                f"the members of discovery {discovery_id} have left the "
                "inbox (enrolled through feedback, or dropped as the oldest); refresh the list",
            )
        return plan_from(self.inbox, [held[h] for h in d.members if h in held], discovery_id)

    def enrolled_as(self, discovery_id: str, name: str, plan: Plan, result: dict[str, Any]) -> dict[str, Any]:
        """Records an enrollment done and takes its members out of the inbox."""
        self.inbox.remove(plan.hashes)
        record = {
            "name": name,
            "at": time.time(),
            "members": len(plan.hashes),
            "enrolled": result["enrolled"],
            "unchanged": result["unchanged"],
            "rejected": len(result["rejected"]),
            "source": plan.source,
        }
        self.enrolled[discovery_id] = record
        self.current.pop(discovery_id, None)
        self._persist()
        return record

    # -- feedback ---------------------------------------------------------------------------
    def feedback(self) -> list[dict[str, Any]]:
        """Every labelled sample waiting to be enrolled, newest first."""
        _, payloads = self.inbox.entries(FEEDBACK)
        rows = [
            {
                "hash": p["content_hash"],
                "label": p["generator"],
                "name": p.get("name", ""),
                "answered": p.get("answered"),
                "at": p.get("at"),
                "note": p.get("note", ""),
                "image": bool(p.get("image")),
            }
            for p in payloads
        ]
        return sorted(rows, key=lambda r: -float(r["at"] or 0))

    def feedback_plan(self, label: str) -> Plan:
        """The feedback samples labelled ``label``, as an enrollment.

        Raises:
            EnrollmentError: 404 ``no_feedback`` when none carries that label.
        """
        vectors, payloads = self.inbox.entries(FEEDBACK)
        entries = [(v, p) for v, p in zip(vectors, payloads) if p["generator"] == label]
        if not entries:
            raise EnrollmentError(
                404,
                "no_feedback",
                f"no feedback labels an image {label!r}",
                labels=sorted({p["generator"] for p in payloads}),
            )
        return plan_from(self.inbox, entries, "feedback")
