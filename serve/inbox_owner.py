"""The index owner's discovery side: recording what it could not name, grouping it, and
enrolling a group or labelled feedback by one call.

Mixed into :class:`serve.index_owner.IndexService`. The inbox collection has a thread of its
own, so recording an answer never waits behind a search and a search never waits behind a
recording; answers are recorded after they are returned, at most ``max_pending`` at a time
(beyond that they are dropped and counted), and a failed recording is logged and counted,
never answered. Grouping (HDBSCAN) runs on a worker thread over a snapshot. Writes to the
index (enrolling a discovery or feedback) take the owner's write lock like any enrollment.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from serve.errors import ApiError
from synthray.data.schema import REAL
from synthray.discovery.clusters import group
from synthray.discovery.config import DiscoveryConfig
from synthray.discovery.discoveries import Discoveries, Plan
from synthray.discovery.inbox import FEEDBACK, Inbox, wanted
from synthray.index.enrollment import EnrollmentError

log = logging.getLogger(__name__)
T = TypeVar("T")


class InboxMixin:
    """Discovery endpoints' work over an :class:`Inbox` (None: discovery is off on this replica)."""

    # Provided by IndexService.
    store: Any
    enroller: Any
    _write_lock: asyncio.Lock
    _run: Callable[..., Any]
    _write: Callable[..., Any]

    def _init_inbox(self, inbox: Inbox | None, cfg: DiscoveryConfig | None, groups: bool = True) -> None:
        """``groups``: this replica groups and enrolls (the owner or the writer; a reader only records)."""
        self.discovery_cfg = cfg or DiscoveryConfig(enabled=inbox is not None)
        self.inbox = inbox
        self.discoveries = Discoveries(inbox, self.discovery_cfg) if inbox is not None and groups else None
        self._inbox_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-inbox") if inbox else None
        self._recent: OrderedDict[str, tuple[np.ndarray, str]] = OrderedDict()
        self._pending = 0
        self._tasks: set[asyncio.Task] = set()
        self._regrouping: asyncio.Task | None = None
        self.recorded = self.dropped = self.record_failures = 0

    async def _on_inbox(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            try:
                return fn(*args)
            except EnrollmentError as exc:
                raise ApiError(exc.status, exc.code, exc.message, **exc.details) from exc

        return await asyncio.get_running_loop().run_in_executor(self._inbox_thread, call)

    def _need_discoveries(self) -> Discoveries:
        if self.discoveries is None:
            raise ApiError(404, "discovery_disabled", "discovery is off for this service (discovery.enabled: false)")
        return self.discoveries

    # -- recording ----------------------------------------------------------------------
    def observe(
        self,
        vectors: np.ndarray,
        hashes: Sequence[str],
        answers: Sequence[dict[str, Any]],
        images: Sequence[bytes] | None = None,
    ) -> None:
        """Remembers answered images (for feedback by hash) and queues the ones the inbox keeps.
        Returns at once: the answer never waits for, nor fails with, the recording."""
        for v, h, a in zip(vectors, hashes, answers):
            self._recent[h] = (np.asarray(v, np.float32), a["label"])
            self._recent.move_to_end(h)
        while len(self._recent) > self.discovery_cfg.recent:
            self._recent.popitem(last=False)
        if self.inbox is None:
            return
        keep = [i for i, a in enumerate(answers) if wanted(a, self.discovery_cfg.low_confidence)]
        if not keep:
            return
        if self._pending >= self.discovery_cfg.max_pending:
            self.dropped += len(keep)
            return
        self._pending += 1
        task = asyncio.get_running_loop().create_task(
            self._record(
                np.asarray(vectors, np.float32)[keep],
                [hashes[i] for i in keep],
                [answers[i] for i in keep],
                [images[i] for i in keep] if images is not None else None,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(
        self, vectors: np.ndarray, hashes: list[str], answers: list[dict[str, Any]], images: list[bytes] | None
    ) -> None:
        try:
            self.recorded += await self._on_inbox(self.inbox.record, vectors, hashes, answers, images)
        except Exception:  # noqa: BLE001 - a failed recording is counted and logged, never answered
            self.record_failures += 1
            log.exception("could not record %d answers in the inbox", len(hashes))
        finally:
            self._pending -= 1

    async def flush_inbox(self) -> None:
        """Waits for every queued recording (tests; a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- discoveries --------------------------------------------------------------------
    async def regroup(self) -> list[dict[str, Any]]:
        """Groups the inbox now (under the write lock: an enrollment never meets a stale grouping)."""
        d = self._need_discoveries()
        cfg = self.discovery_cfg
        async with self._write_lock:
            vectors, payloads = await self._on_inbox(d.snapshot)
            labels = await asyncio.to_thread(group, vectors, cfg.min_cluster_size, cfg.min_samples, cfg.reduce_dims)
            found = await self._on_inbox(d.apply, vectors, payloads, labels)
        return [x.to_dict() for x in found]

    async def list_discoveries(self, refresh: bool = False) -> dict[str, Any]:
        """The current discoveries (grouped now when asked, or when never grouped yet)."""
        d = self._need_discoveries()
        if refresh or d.computed_at is None:
            await self.regroup()
        listing = await self._on_inbox(d.listing)
        return {
            "computed_at": d.computed_at,
            "discoveries": listing,
            "enrolled": dict(d.enrolled),
            "inbox": await self._on_inbox(d.counts),
        }

    async def get_discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]:
        return await self._on_inbox(self._need_discoveries().get, discovery_id, members)

    async def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]:
        """Enrolls a discovery's members as generator ``name`` and takes them out of the inbox.

        Raises:
            ApiError: 404 ``unknown_discovery``; 409 ``trained_generator`` (a trained
                generator's name), ``already_enrolled`` (under another name), ``looks_real``.
        """
        d = self._need_discoveries()
        async with self._write_lock:
            plan = await self._on_inbox(d.plan, discovery_id, name)
            if isinstance(plan, dict):  # enrolled before under this name: nothing more to do
                return {"id": discovery_id, "generator": name, **plan}
            counts = (await self._run(self.store.counts)).get(name, {})
            if counts.get("trained"):
                raise ApiError(
                    409,
                    "trained_generator",
                    f"{name!r} is a trained generator; a discovery is enrolled "
                    "under a new name (add images of a trained generator through feedback)",
                    counts=counts,
                )
            result = await self._enroll_plan(name, plan)
            record = await self._on_inbox(d.enrolled_as, discovery_id, name, plan, result)
        log.info(
            "discovery %s enrolled as %s: %d new references from %s",
            discovery_id,
            name,
            result["enrolled"],
            plan.source,
        )
        return {
            "id": discovery_id,
            "generator": name,
            **record,
            "already_enrolled": False,
            "counts": result["counts"],
            "calibration": result.get("calibration"),
        }

    async def _enroll_plan(self, name: str, plan: Plan) -> dict[str, Any]:
        return await self._run(
            self._write, self.enroller.enroll, name, plan.vectors, plan.hashes, plan.names, plan.images
        )

    # -- feedback -----------------------------------------------------------------------
    async def add_feedback(
        self,
        label: str,
        hashes: Sequence[str],
        vectors: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
        note: str = "",
    ) -> dict[str, Any]:
        """Stores images labelled ``label`` (``real`` or a generator): uploaded ones (``vectors``
        given) or ones seen before, named by hash (the inbox, or recent answers).

        Raises:
            ApiError: 404 ``unseen_image`` for a hash neither the inbox nor recent answers hold.
        """
        self._need_discoveries()
        hashes = list(hashes)
        if vectors is None:
            held = await self._on_inbox(self.inbox.get, hashes)
            found: dict[str, tuple[np.ndarray, str]] = {h: (v, p["label"]) for h, (v, p) in held.items()}
            found.update({h: self._recent[h] for h in hashes if h not in found and h in self._recent})
            missing = [h for h in hashes if h not in found]
            if missing:
                raise ApiError(
                    404,
                    "unseen_image",
                    f"{len(missing)} of the hashes were not answered recently nor "
                    "kept in the inbox; upload those images with the label instead",
                    missing=missing,
                )
            vectors = np.stack([found[h][0] for h in hashes])
            answered: list[str | None] = [found[h][1] for h in hashes]
            kept = [self.inbox.image(h) for h in hashes]
            images = kept if all(b is not None for b in kept) else None
        else:
            answers = await self._run(self._attribute, np.asarray(vectors, np.float32))
            answered = [a["label"] for a in answers]
        names = list(names) if names is not None else [f"feedback-{h[:12]}" for h in hashes]
        async with self._write_lock:
            await self._on_inbox(self.inbox.add_feedback, label, vectors, hashes, names, answered, images, note)
        log.info("feedback: %d images labelled %s", len(hashes), label)
        return {
            "label": label,
            "stored": len(hashes),
            "images": [{"hash": h, "answered": a} for h, a in zip(hashes, answered)],
        }

    async def list_feedback(self) -> dict[str, Any]:
        rows = await self._on_inbox(self._need_discoveries().feedback)
        return {"feedback": rows, "counts": dict(Counter(r["label"] for r in rows))}

    async def enroll_feedback(self, label: str) -> dict[str, Any]:
        """Enrolls every feedback sample labelled ``label`` (``real`` adds real references);
        enrolled ones leave the feedback list, refused ones stay.

        Raises:
            ApiError: 404 ``no_feedback``; 409 ``looks_real`` (a generator's set answered real).
        """
        d = self._need_discoveries()
        async with self._write_lock:
            plan = await self._on_inbox(d.feedback_plan, label)
            result = await self._enroll_plan(label, plan)
            refused = {r["file"] for r in result["rejected"]}
            done = [h for h, n in zip(plan.hashes, plan.names) if n not in refused]
            await self._on_inbox(self.inbox.remove, done, FEEDBACK)
        kind = "real references" if label == REAL else f"references of {label}"
        log.info("feedback enrolled as %s: %d new, %d unchanged", kind, result["enrolled"], result["unchanged"])
        return {
            "label": label,
            "source": plan.source,
            **{k: result[k] for k in ("enrolled", "unchanged", "rejected", "counts")},
        }

    # -- observing ----------------------------------------------------------------------
    async def inbox_stats(self) -> dict[str, Any]:
        """Sizes and counters for /metrics."""
        out: dict[str, Any] = {
            "recorded": self.recorded,
            "dropped": self.dropped,
            "record_failures": self.record_failures,
            "pending": self._pending,
        }
        if self.discoveries is not None:
            out.update(await self._on_inbox(self.discoveries.counts))
        return out

    def start_regrouping(self) -> None:
        """Regroups the inbox every ``recompute_s`` seconds from now on (0: on demand only)."""
        if self.discoveries is None or not self.discovery_cfg.recompute_s:
            return

        async def every() -> None:
            while True:
                await asyncio.sleep(self.discovery_cfg.recompute_s)
                try:
                    await self.regroup()
                except Exception:  # noqa: BLE001 - the schedule keeps going; the listing says when it last ran
                    log.exception("scheduled regrouping of the inbox failed")

        self._regrouping = asyncio.get_running_loop().create_task(every())

    def close_inbox(self) -> None:
        if self._regrouping is not None:
            self._regrouping.cancel()
        if self._inbox_thread is not None:
            self._inbox_thread.shutdown(wait=True)
            self._inbox_thread = None
            self.inbox.close()
