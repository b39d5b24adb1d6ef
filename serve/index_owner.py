"""The index owner: the one process that holds the vector store, reads and writes.

Embedded Qdrant lets one process open a storage folder, so the Serve app routes every
search, enrollment and deletion through this deployment (one replica when embedded;
with a Qdrant server it scales out, each replica a client of the server).

Safety under concurrency: every store call runs on one dedicated thread (the embedded
client is not shared between threads, and the replica's event loop stays free for
health checks), and each write is a transaction under an ``asyncio.Lock``: look up what
is stored, upsert, and on failure delete exactly the points this write added. A query
arriving mid-enrollment sees the index before or after an upsert batch, never a broken one.
With a server and several replicas, each replica serialises its own writes; Qdrant makes
each upsert atomic, and point ids are content hashes, so racing writers of the same image
write the same point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from serve.errors import ApiError
from synthray.attribution.attributor import THRESHOLDS_KEY, stored_rule
from synthray.attribution.config import AttributionConfig
from synthray.attribution.rule import EnrollmentRefused, Thresholds, check_enrollment, class_scores, decide
from synthray.data.schema import REAL
from synthray.index.config import StoreConfig
from synthray.index.store import QdrantStore, Reference, StoreError, open_store, point_id

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Payload ``split``/``dataset`` of enrolled references (they come from no data set split).
ENROLLED = "enrolled"
#: How long a new owner waits for the previous one to release an embedded store.
OPEN_WAIT_S = 60.0


class IndexService:
    """Attribution, enrollment and deletion over one opened store (no Ray needed).

    Args:
        store: the opened store; this object owns it from now on (see :meth:`close`).
        attribution: the rule; None = the one stored with the index by its build.
    """

    def __init__(self, store: QdrantStore, attribution: AttributionConfig | None = None) -> None:
        self.store = store
        self.cfg, self.thresholds = stored_rule(store.metadata(), attribution)
        if self.thresholds is None:
            log.warning("index %s has no calibrated thresholds: is-AI threshold 0, no 'unknown' answers",
                        store.collection)
        self._calibration: np.ndarray | None = None  # the real calibration photographs, read on first need
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-store")
        self._write_lock = asyncio.Lock()
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- reads --------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        """What this owner serves: model version, collection, where, size, rule."""
        count = await self._run(self.store.count)
        return {"model_version": self.store.model_version, "collection": self.store.collection,
                "store": "embedded" if self.store.embedded else "server", "references": count,
                "calibrated": self.thresholds is not None, "k": self.cfg.k,
                "calibration_warning": (self.thresholds.calibration.get("warning") if self.thresholds else
                                        "the index has no calibrated thresholds")}

    async def attribute(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        """Attributions of (N, D) query embeddings (see ``synthray.attribution.rule.attribute``)."""
        return await self._run(self._attribute, np.asarray(vectors, dtype=np.float32))

    def _attribute(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        from synthray.attribution.rule import attribute

        hits = self.store.class_hits(vectors, self.cfg.k)
        neighbours = self.store.search(vectors, self.cfg.k)
        return [a.to_dict() for a in attribute(hits, neighbours, self.thresholds, self.cfg.k, self.cfg.open_set)]

    async def generators(self) -> dict[str, dict[str, int]]:
        """References per generator and origin: ``{name: {"trained": n, "enrolled": m}}``."""
        return await self._run(self.store.counts)

    async def class_references(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray:
        """The ``k`` references of ``generator`` nearest one query embedding, (<=k, D): what an
        explanation of the attribution to ``generator`` measures closeness to.

        Raises:
            ApiError: 404 ``unknown_generator`` when the index holds no reference of it.
        """
        refs = await self._run(self.store.nearest_vectors, vector, generator, k)
        if not len(refs):
            raise ApiError(404, "unknown_generator", f"no generator {generator!r} in the index to explain against")
        return refs

    # -- writes -------------------------------------------------------------------------
    async def enroll(self, generator: str, vectors: np.ndarray, hashes: Sequence[str],
                     names: Sequence[str]) -> dict[str, Any]:
        """Adds images of ``generator`` as enrolled references, all or nothing.

        An image already stored under this generator is left as it is (re-uploads change
        nothing); one stored under another generator is refused rather than relabelled.

        Args:
            generator: canonical generator name (validated by the caller).
            vectors: (N, D) embeddings of the images.
            hashes: their sha256 content hashes (the point ids derive from them).
            names: their file names (reported back, kept as ``source_path``).
        Before anything is written the set is checked against the index: one that mostly
        answers "real" is refused, and a new generator's acceptance (leave-one-out over its
        samples) and is-AI threshold (raised until the stored real calibration photographs
        are flagged no more often than before) are calibrated and stored with the points.

        Returns:
            ``{"enrolled": new points, "unchanged": already there, "rejected": [...],
            "counts": {"trained", "enrolled"}, "calibration": the check (or None)}``.
        Raises:
            ApiError: 409 ``looks_real`` when the samples sit inside the real photographs;
                500 ``enrollment_failed`` when the store refused the write (the points this
                call added are deleted again first).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if not (len(vectors) == len(hashes) == len(names)):
            raise ValueError(f"{len(vectors)} vectors, {len(hashes)} hashes, {len(names)} names")
        async with self._write_lock:
            return await self._run(self._enroll, generator, vectors, list(hashes), list(names))

    def _enroll(self, generator: str, vectors: np.ndarray, hashes: list[str], names: list[str]) -> dict[str, Any]:
        ids = [point_id(self.store.model_version, h) for h in hashes]
        stored = self._stored_labels(ids)
        new, unchanged, rejected, first_seen = [], 0, [], {}
        for i, (pid, name) in enumerate(zip(ids, names)):
            if pid in first_seen:
                rejected.append({"file": name, "reason": "duplicate",
                                 "message": f"same content as {names[first_seen[pid]]} in this request"})
                continue
            first_seen[pid] = i
            if pid not in stored:
                new.append(i)
            elif stored[pid][0] == generator:
                unchanged += 1
            else:
                rejected.append({"file": name, "reason": "indexed_elsewhere",
                                 "message": f"this image is already in the index as {stored[pid][0]!r} "
                                            f"({stored[pid][1]}); an image can belong to one generator only"})
        check = None
        if new:
            check, thresholds = self._check(generator, vectors[new])
            now = time.time()
            refs = [Reference(generator=generator, is_real=False, content_hash=hashes[i], split=ENROLLED,
                              dataset=ENROLLED, source_path=names[i], origin="enrolled", added_at=now) for i in new]
            try:
                self.store.upsert(vectors[new], refs)
                if thresholds is not None:
                    self.store.set_metadata({THRESHOLDS_KEY: thresholds.to_dict()})
            except Exception as exc:
                self._roll_back([ids[i] for i in new], exc)
                raise ApiError(500, "enrollment_failed", f"the index refused the write ({type(exc).__name__}: "
                               f"{exc}); nothing was enrolled, try again") from exc
            self.thresholds = thresholds if thresholds is not None else self.thresholds
        counts = self.store.counts().get(generator, {"trained": 0, "enrolled": 0})
        log.info("enrolled %d new images of %s (%d unchanged, %d rejected)", len(new), generator, unchanged,
                 len(rejected))
        return {"enrolled": len(new), "unchanged": unchanged, "rejected": rejected, "counts": counts,
                "calibration": check.to_dict() if check is not None else None}

    def _check(self, generator: str, new_vectors: np.ndarray) -> tuple[Any, Thresholds | None]:
        """The enrollment check of ``generator`` with ``new_vectors`` added, and the thresholds
        to store with it (None when the index is uncalibrated or the generator is a trained one,
        whose thresholds come from its validation images)."""
        if self.thresholds is None:
            # Nothing calibrated to judge "looks real" or a threshold against (readyz says so).
            log.warning("enrolling %s into an uncalibrated index: no check against real photographs", generator)
            return None, None
        k = self.cfg.k
        t = self.thresholds
        existing, payloads = self.store.vectors(generator)
        if any(p.get("origin") == "trained" for p in payloads):
            # More images of a trained generator: no new calibration, but still never "real" ones.
            sample_scores = class_scores(self.store.class_hits(new_vectors, k))
            if np.mean([lab == REAL for lab in decide(sample_scores, t).labels]) > self.cfg.max_looks_real:
                raise ApiError(409, "looks_real", f"most samples of {generator!r} are answered 'real' by the index; "
                                                  "nothing was enrolled")
            return None, None
        # Every sample of the generator (earlier enrollments too), scored against the index without it.
        samples = np.concatenate([existing, new_vectors]) if len(existing) else new_vectors
        hits = self.store.class_hits(samples, k)
        for h in hits:
            h.pop(generator, None)
        sample_scores = class_scores(hits)
        if self._calibration is None:
            self._calibration = self.store.calibration_vectors()
        real = self._calibration
        real_scores = class_scores(self.store.class_hits(real, k)) if len(real) else None
        try:
            check = check_enrollment(
                generator, samples, sample_scores, real_scores,
                (real.astype(np.float64) @ samples.astype(np.float64).T) if len(real) else None,
                t, k, self.cfg.unknown_rate, self.cfg.max_fpr_increase, self.cfg.max_looks_real)
        except EnrollmentRefused as exc:
            raise ApiError(409, "looks_real", str(exc)) from exc
        updated = Thresholds.from_dict(self.thresholds.to_dict())
        updated.acceptance[generator] = check.acceptance
        if check.threshold > updated.ai_threshold:
            updated.class_thresholds[generator] = check.threshold
        else:
            updated.class_thresholds.pop(generator, None)
        for warning in check.warnings:
            log.warning("enrolling %s: %s", generator, warning)
        return check, updated

    def _roll_back(self, new_ids: list[str], cause: BaseException) -> None:
        """Deletes the points a failed write may have added (they did not exist before it)."""
        try:
            self.store.delete(new_ids)
            log.warning("enrollment failed (%s); removed the %d points it had started to add", cause, len(new_ids))
        except Exception:  # noqa: BLE001 - report the original failure; this one is logged
            log.exception("enrollment failed (%s) and its roll-back failed too: %d points may remain",
                          cause, len(new_ids))

    def _stored_labels(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """{id: (generator, origin)} of the ids already stored."""
        out: dict[str, tuple[str, str]] = {}
        for s in range(0, len(ids), 1024):
            for p in self.store.client.retrieve(self.store.collection, ids=ids[s:s + 1024],
                                                with_payload=["generator", "origin"], with_vectors=False):
                out[str(p.id)] = (str(p.payload["generator"]), str(p.payload.get("origin", "trained")))
        return out

    async def delete_generator(self, generator: str) -> dict[str, Any]:
        """Deletes a generator's enrolled references (trained ones stay: rebuild the index for those).

        Returns:
            ``{"deleted": n, "counts": what remains {"trained", "enrolled"}}``.
        Raises:
            ApiError: 404 ``unknown_generator``; 409 ``trained_generator`` when it has only
                trained references.
        """
        async with self._write_lock:
            return await self._run(self._delete, generator)

    def _delete(self, generator: str) -> dict[str, Any]:
        counts = self.store.counts().get(generator)
        if counts is None:
            raise ApiError(404, "unknown_generator", f"no generator {generator!r} in the index")
        if counts["enrolled"] == 0:
            raise ApiError(409, "trained_generator",
                           f"{generator!r} has only trained references ({counts['trained']}), which come from the "
                           "index build: rebuild the index without it to remove them; only enrolled samples "
                           "can be deleted through the API", counts=counts)
        deleted = self.store.delete_generator(generator, origin="enrolled")
        if self.thresholds is not None and counts["trained"] == 0:
            updated = Thresholds.from_dict(self.thresholds.to_dict())
            updated.acceptance.pop(generator, None)
            updated.class_thresholds.pop(generator, None)
            self.store.set_metadata({THRESHOLDS_KEY: updated.to_dict()})
            self.thresholds = updated
        log.info("deleted %d enrolled references of %s", deleted, generator)
        return {"deleted": deleted, "counts": {"trained": counts["trained"], "enrolled": 0}}

    def close(self) -> None:
        """Releases the store (an embedded folder's lock goes with it); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._thread.shutdown(wait=True)
        self.store.close()


class IndexOwner(IndexService):
    """The Serve deployment around :class:`IndexService`.

    The store is opened for the encoder's model version, asked of the encoder deployment
    itself, so the two can never disagree.

    Args:
        encoder: handle of the encoder deployment.
        store: ``StoreConfig`` fields.
        create: create the collection when missing (else a missing index is an error).
        attribution: ``AttributionConfig`` fields overriding the stored rule, or None.
    """

    async def __init__(self, encoder: Any, store: dict[str, Any], create: bool = False,
                       attribution: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
        from synthray.config import from_dict

        info = await encoder.describe.remote()
        cfg = from_dict(StoreConfig, store)
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            try:
                opened = open_store(cfg, info["model_version"], int(info["dim"]), create=create)
                break
            except StoreError as exc:
                # During a redeploy or after a crash the previous owner may still be exiting with
                # the embedded folder's lock; it is released when that process is gone.
                if "another process" not in str(exc) or time.monotonic() > deadline:
                    raise
                log.info("store still held by the previous owner; retrying")
                await asyncio.sleep(1.0)
        super().__init__(opened, from_dict(AttributionConfig, attribution) if attribution else None)
        log.info("index owner: %s at %s (%d references)", opened.collection, opened.where(), opened.count())

    def __del__(self) -> None:
        # Serve calls this on a graceful replica stop; it frees the embedded folder for the next owner.
        if hasattr(self, "store"):
            self.close()
