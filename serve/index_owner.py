"""The index owner: the process that holds the vector store; one writer for all writes.

An embedded store (Qdrant Edge) lets one process open its folder, so the Serve app routes
every search, enrollment and deletion through one index-owner replica. Against a Qdrant
server the readers scale out (``index_replicas``) and every write goes to one single-replica
writer deployment: a write lock is per process, so two writers could relabel an image or
roll back each other's points. Readers notice a write by the collection's revision counter
(its metadata), re-reading the calibrated rule and their cached references.

Every query and enrollment carries the model version of the encoder replica that embedded
it; an owner refuses vectors of any other version (503 ``model_mismatch``), so a replica
started with other weights can never mix its embeddings into answers or the index.

Safety under concurrency: every store call runs on one dedicated thread (the store is not
shared between threads, and the replica's event loop stays free for health checks), and
each write is a transaction under an ``asyncio.Lock`` (see :mod:`synthray.index.enrollment`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from serve.errors import ApiError
from serve.inbox_owner import InboxMixin
from synthray.attribution.config import AttributionConfig
from synthray.discovery.config import DiscoveryConfig
from synthray.discovery.inbox import Inbox, inbox_collection
from synthray.index.config import StoreConfig
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.enrollment import Enroller, EnrollmentError
from synthray.index.store import BaseStore, StoreError, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a new owner waits for the previous one to release an embedded store.
OPEN_WAIT_S = 60.0


class IndexService(InboxMixin):
    """Attribution, enrollment and deletion over one opened store (no Ray needed), and the
    discovery inbox beside it (:mod:`serve.inbox_owner`).

    Args:
        store: the opened store; this object owns it from now on (see :meth:`close`).
        attribution: the rule; None = the one stored with the index by its build.
        archive: where enrolled images are kept so the next model version re-embeds them.
        inbox: the discovery inbox (owned from now on too); None = discovery off.
        discovery: the inbox's settings.
        groups: this replica groups the inbox and enrolls from it (False: it only records).
    """

    def __init__(
        self,
        store: BaseStore,
        attribution: AttributionConfig | None = None,
        archive: EnrollmentArchive | None = None,
        inbox: Inbox | None = None,
        discovery: DiscoveryConfig | None = None,
        groups: bool = True,
    ) -> None:
        self.store = store
        self.enroller = Enroller(store, attribution, archive)
        if self.enroller.thresholds is None:
            log.warning(
                "index %s has no calibrated thresholds: is-AI threshold 0, no 'unknown' answers", store.collection
            )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-store")
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._init_inbox(inbox, discovery, groups)

    @property
    def cfg(self) -> AttributionConfig:
        return self.enroller.cfg

    @property
    def thresholds(self) -> Any:
        return self.enroller.thresholds

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _same_version(self, model_version: str | None) -> None:
        if model_version is not None and model_version != self.store.model_version:
            raise ApiError(
                503,
                "model_mismatch",
                f"the image was embedded by model version {model_version}, the index holds "
                f"{self.store.model_version}: a replica runs other weights (a rollout in progress?); "
                "nothing was answered or written, retry shortly",
                model_version=self.store.model_version,
            )

    # -- reads --------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        """What this owner serves: model version, collection, where, size, rule."""
        return await self._run(self._info)

    def _info(self) -> dict[str, Any]:
        self.enroller.refresh()
        t = self.thresholds
        return {
            "model_version": self.store.model_version,
            "collection": self.store.collection,
            "store": "embedded" if self.store.embedded else "server",
            "references": self.store.count(),
            "calibrated": t is not None,
            "k": self.cfg.k,
            "calibration_warning": (t.calibration.get("warning") if t else "the index has no calibrated thresholds"),
        }

    async def attribute(
        self,
        vectors: np.ndarray,
        model_version: str | None = None,
        hashes: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
    ) -> list[dict[str, Any]]:
        """Attributions of (N, D) query embeddings (see ``synthray.attribution.rule.attribute``).

        With the images' content ``hashes`` the answers are remembered for feedback and the
        unknown ones recorded in the inbox (with their bytes when ``images`` are given) after
        the answer is returned.

        Raises:
            ApiError: 503 ``model_mismatch`` when ``model_version`` is not the index's.
        """
        self._same_version(model_version)
        vectors = np.asarray(vectors, dtype=np.float32)
        answers = await self._run(self._attribute, vectors)
        if hashes is not None:
            self.observe(vectors, list(hashes), answers, images)
        return answers

    def _attribute(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        from synthray.attribution.rule import attribute

        self.enroller.refresh()  # another writer may have enrolled meanwhile
        hits, neighbours = self.store.query(vectors, self.cfg.k)
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
    async def enroll(
        self,
        generator: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        images: Sequence[bytes] | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """Adds images of ``generator`` as enrolled references, all or nothing (see
        :meth:`synthray.index.enrollment.Enroller.enroll`); the images are archived for the
        next model version when ``images`` is given.

        Raises:
            ApiError: 409 ``looks_real``; 500 ``enrollment_failed`` (nothing written);
                503 ``model_mismatch``.
        """
        self._same_version(model_version)
        async with self._write_lock:
            return await self._run(
                self._write,
                self.enroller.enroll,
                generator,
                np.asarray(vectors, np.float32),
                list(hashes),
                list(names),
                list(images) if images is not None else None,
            )

    async def delete_generator(self, generator: str) -> dict[str, Any]:
        """Deletes a generator's enrolled references (trained ones stay: rebuild the index for those).

        Returns:
            ``{"deleted": n, "counts": what remains {"trained", "enrolled"}}``.
        Raises:
            ApiError: 404 ``unknown_generator``; 409 ``trained_generator``.
        """
        async with self._write_lock:
            return await self._run(self._write, self.enroller.delete, generator)

    @staticmethod
    def _write(fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except EnrollmentError as exc:
            raise ApiError(exc.status, exc.code, exc.message, **exc.details) from exc

    def close(self) -> None:
        """Releases the store (an embedded folder's lock goes with it); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.close_inbox()
        self._thread.shutdown(wait=True)
        self.store.close()


class IndexOwner(IndexService):
    """The Serve deployment around :class:`IndexService`.

    The store is opened for the app's pinned model version; the encoder deployment is asked
    too, and a disagreement stops the replica from starting rather than serving mixed answers.

    Args:
        encoder: handle of the encoder deployment.
        store: ``StoreConfig`` fields.
        create: create the collection when missing (else a missing index is an error).
        attribution: ``AttributionConfig`` fields overriding the stored rule, or None.
        model_version: the pinned checkpoint's version (None: the encoder's).
        role: ``owner`` (reads and writes: the embedded store's one process), ``reader``
            (reads; writes go to the writer), or ``writer`` (the one writer against a server).
    """

    async def __init__(  # type: ignore[misc] # Serve awaits an async constructor
        self,
        encoder: Any,
        store: dict[str, Any],
        create: bool = False,
        attribution: dict[str, Any] | None = None,
        model_version: str | None = None,
        role: str = "owner",
        discovery: dict[str, Any] | None = None,
        standby: Any = None,
    ) -> None:  # type: ignore[misc]
        parts = await open_parts(encoder, store, create, attribution, model_version, role, discovery, standby=standby)
        super().__init__(**parts)
        self.role = role
        self.start_regrouping()
        log.info(
            "index %s: %s at %s (%d references)", role, self.store.collection, self.store.where(), self.store.count()
        )

    async def enroll(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.role == "reader":
            raise ApiError(500, "internal", "a read replica was asked to write: writes go to the writer deployment")
        return await super().enroll(*args, **kwargs)

    async def delete_generator(self, generator: str) -> dict[str, Any]:
        if self.role == "reader":
            raise ApiError(500, "internal", "a read replica was asked to write: writes go to the writer deployment")
        return await super().delete_generator(generator)

    def __del__(self) -> None:
        # Serve calls this on a graceful replica stop; it frees the embedded folder for the next owner.
        if hasattr(self, "store"):
            self.close()


async def open_parts(
    encoder: Any,
    store: dict[str, Any],
    create: bool,
    attribution: dict[str, Any] | None,
    model_version: str | None,
    role: str,
    discovery: dict[str, Any] | None,
    wait_s: float = OPEN_WAIT_S,
    standby: Any = None,
) -> dict[str, Any]:
    """Opens what an :class:`IndexService` serves (its keyword arguments): the store for the
    encoder's model version, the enrollment archive, the discovery inbox.

    Args:
        wait_s: how long to wait for another process to release an embedded store (the
            previous owner during a redeploy, or the standby after a failover); 0 = not at all.
        standby: handle of :class:`serve.standby.IndexStandby`, asked to release the store
            when it holds it.
    Raises:
        StoreError: the store cannot be opened (held by another process beyond ``wait_s``).
    """
    from synthray.config import from_dict

    if role not in ("owner", "reader", "writer"):
        raise ValueError(f"role must be owner, reader or writer, got {role!r}")
    info = await encoder.describe.remote()
    if model_version is not None and info["model_version"] != model_version:
        raise StoreError(
            f"the encoder runs model version {info['model_version']}, the app is pinned to "
            f"{model_version}: refusing to serve mixed versions"
        )
    cfg = from_dict(StoreConfig, store)
    deadline, waited = time.monotonic() + wait_s, False
    while True:
        try:
            opened = open_store(cfg, info["model_version"], int(info["dim"]), create=create and role != "reader")
            break
        except StoreError as exc:
            # During a redeploy or after a crash the previous owner may still be exiting with
            # the embedded folder's lock (released when that process is gone), or the standby
            # holds it since it took over from a lost owner.
            if "another process" not in str(exc) or time.monotonic() >= deadline:
                raise
            if not waited:
                log.info("store held by another process; waiting for it (at most %.0f s)", wait_s)
                if standby is not None and await standby.release.remote():
                    log.info("the standby released the store")
                    continue
            waited = True
            await asyncio.sleep(0.2)  # often: requests wait for this replica meanwhile
    archive = EnrollmentArchive(cfg.enrolled_root()) if role != "reader" else None
    disc = from_dict(DiscoveryConfig, discovery or {})
    inbox = _open_inbox(cfg, opened, disc, role) if disc.enabled else None
    return {
        "store": opened,
        "attribution": from_dict(AttributionConfig, attribution) if attribution else None,
        "archive": archive,
        "inbox": inbox,
        "discovery": disc,
        "groups": role != "reader",
    }


def _open_inbox(cfg: StoreConfig, index: BaseStore, disc: DiscoveryConfig, role: str) -> Inbox | None:
    """The inbox collection beside the index (created by the owner or the writer; a reader
    that finds none yet records nothing, and says so)."""
    inbox_cfg = dataclasses.replace(cfg, collection=inbox_collection(index.collection))
    try:
        store = open_store(inbox_cfg, index.model_version, index.dim, create=role != "reader")
    except StoreError as exc:
        if role != "reader":
            raise
        log.warning("no discovery inbox yet (%s): this reader records no unknown answers", exc)
        return None
    return Inbox(store, disc, disc.images_root(cfg.enrolled_root()))
