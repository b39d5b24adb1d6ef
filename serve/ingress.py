"""The ingress deployment: the HTTP API of :mod:`serve.api` over the other two deployments.

The FastAPI app is built per replica, after the constructor
(``__serve_build_asgi_app__``), so its routes, auth and metrics close over this replica's
handles and registry rather than a module-level app frozen at import.

A replica that dies mid-request (killed, out of memory, its node gone) fails the calls it
held. Calls that are safe to repeat (embedding, attribution, listings, enrollment, which is
keyed by content hash) are sent again, to another replica or the restarted one, until
``retry_deadline_s``; only then does the client see a 503 with ``Retry-After``. A deletion
is repeated too; when the repeat finds nothing left to delete after a lost attempt, the
answer is a success marked ``unconfirmed`` (the lost attempt did it). A full queue
at a deployment (``max_queued_requests``) is a 503 with ``Retry-After`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Sequence

import numpy as np
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve.admission import Gate
from serve.api import ApiSettings, ExplainSettings, call, create_api
from serve.auth import KeyCheck, resolve_api_key
from serve.errors import ApiError, retry_after
from serve.metrics import ServiceMetrics
from serve.rate import RateLimit
from serve.uploads import Limits

log = logging.getLogger(__name__)

#: Owner calls without side effects, which may be sent to the standby too (see Ingress._owner).
READS = frozenset({"info", "attribute", "generators", "class_references"})
#: How long a read waits for the owner before the standby is asked as well.
HEDGE_AFTER_S = 0.3


@serve.ingress()
class Ingress:
    """HTTP in, deployment calls out.

    Args:
        encoder: handle of the encoder deployment.
        index: handle of the index-owner deployment.
        limits: ``Limits`` fields (max_bytes, max_pixels, max_files).
        api_key_env: environment variable holding the API key.
        api_key_file: file holding the API key (wins over the variable), or None.
        read_requires_key: reads need the key too.
        explain: ``ExplainSettings`` fields (None: the defaults).
        writer: handle of the deployment that takes every write (None: ``index`` itself); it
            also holds the discoveries.
        discovery: ``DiscoveryConfig`` fields (the ingress reads ``keep_images`` and ``window_s``).
        resilience: ``retry_deadline_s``, ``retry_after_s``, ``write_rate_per_min``, ``write_burst``,
            ``max_in_flight`` (API requests admitted at once; 0: no bound).
        standby: handle of the embedded store's warm standby (:mod:`serve.standby`), or None.
    """

    async def __init__(  # type: ignore[misc] # Serve awaits an async constructor
        self,
        encoder: Any,
        index: Any,
        limits: dict[str, int],
        api_key_env: str,
        api_key_file: str | None = None,
        read_requires_key: bool = False,
        explain: dict[str, int] | None = None,
        writer: Any = None,
        discovery: dict[str, Any] | None = None,
        resilience: dict[str, float] | None = None,
        standby: Any = None,
    ) -> None:
        from synthray.config import from_dict
        from synthray.discovery.config import DiscoveryConfig

        self.encoder = encoder
        self.index = index
        self.writer = writer if writer is not None else index
        self.standby = standby
        self.owner_lost = False  # calls for the owner go to the standby until it says the owner is back
        self.limits = Limits(**limits)
        self.explain_settings = ExplainSettings(**(explain or {}))
        self.auth = KeyCheck(resolve_api_key(api_key_env, api_key_file), read_requires_key, api_key_env)
        if not self.auth.writes_enabled:
            log.warning("no API key configured ($%s): enrollment and deletion are disabled", api_key_env)
        self.discovery_cfg = from_dict(DiscoveryConfig, discovery or {})
        self.metrics = ServiceMetrics(window_s=self.discovery_cfg.window_s)
        res = {
            "retry_deadline_s": 10.0,
            "retry_after_s": 1.0,
            "write_rate_per_min": 0.0,
            "write_burst": 20,
            "max_in_flight": 0,
            **(resilience or {}),
        }
        self.gate = Gate(limit=int(res["max_in_flight"]), retry_after_s=float(res["retry_after_s"]))
        self.retry_deadline_s, self.retry_after_s = float(res["retry_deadline_s"]), float(res["retry_after_s"])
        self.write_rate = RateLimit(float(res["write_rate_per_min"]), int(res["write_burst"]))
        self.retried = 0
        self.model_version = (await self.encoder_info())["model_version"]

    def __serve_build_asgi_app__(self) -> Any:
        keep = self.discovery_cfg.enabled and self.discovery_cfg.keep_images
        return create_api(
            self,
            ApiSettings(self.limits, self.auth, self.model_version, self.explain_settings, keep, self.write_rate),
            self.metrics,
            self.gate,
        )

    async def drain(self) -> dict[str, Any]:
        """Stops admitting API requests (503 ``shutting_down``; /readyz 503) and says how many
        are still in progress here. Called by a stopping ``synthray serve`` until every replica
        says 0 (see :func:`serve.local.drain`)."""
        self.gate.draining = True
        return {"replica": serve.get_replica_context().replica_id.unique_id, "in_flight": self.gate.in_flight}

    async def _call(
        self,
        make: Callable[[], Awaitable[Any]],
        what: str,
        repeat: bool = True,
        lost: list[str] | None = None,
        failover: bool = False,
    ) -> Any:
        """One deployment call; sent again while a replica failure is the cause (``repeat``).

        With ``failover`` (calls for the index owner, when a standby exists) a lost owner
        sends this and later calls to the standby at once, and the standby's ``standby_idle``
        (the owner is back) sends them to the owner again; ``make`` reads :attr:`owner_lost`.

        Raises:
            ApiError: 503 ``overloaded`` (a full queue) or ``replica_unavailable`` (still
                failing at the deadline), both with ``Retry-After``.
        """
        deadline = time.monotonic() + self.retry_deadline_s
        wait = 0.05
        failover = failover and self.standby is not None
        switched = False
        while True:
            try:
                return await call(make())
            except BackPressureError:
                raise ApiError(
                    503,
                    "overloaded",
                    f"the service is at capacity ({what}); retry after the Retry-After delay",
                    headers=retry_after(self.retry_after_s),
                ) from None
            except ApiError as exc:
                if not (failover and exc.code == "standby_idle") or time.monotonic() > deadline:
                    raise
                if self.owner_lost:
                    log.warning("%s: the index owner is back; sending calls to it again", what)
                self.owner_lost = False
                if switched:  # not back yet after all: the usual wait before the next try
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, 0.5)
                switched = True
            except (RayActorError, ActorUnavailableError, DeploymentUnavailableError) as exc:
                if failover and not switched:
                    # The other of owner and standby, at once: the standby is a started
                    # process that opens the store the lost owner's exit released.
                    gone, other = ("standby", "index owner") if self.owner_lost else ("index owner", "standby")
                    self.owner_lost = not self.owner_lost
                    switched = True
                    self.retried += 1
                    if lost is not None:
                        lost.append(type(exc).__name__)
                    log.warning("%s: the %s was lost (%s); sending it to the %s", what, gone, type(exc).__name__, other)
                    continue
                if not repeat or time.monotonic() + wait > deadline:
                    raise ApiError(
                        503,
                        "replica_unavailable",
                        f"{what} failed: a replica was lost ({type(exc).__name__}); retry after the Retry-After delay",
                        headers=retry_after(self.retry_after_s),
                    ) from None
                self.retried += 1
                if lost is not None:
                    lost.append(type(exc).__name__)
                log.warning("%s: a replica was lost (%s); sending it again", what, type(exc).__name__)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 0.5)

    async def _owner(
        self, name: str, *args: Any, what: str, writer: bool = False, lost: list[str] | None = None
    ) -> Any:
        """``name(*args)`` on the index owner (``writer``: the deployment that writes), or on
        the standby while the owner is lost.

        A read the owner has not answered within :data:`HEDGE_AFTER_S` is also sent to the
        standby: a killed owner often fails no call (its requests wait in Serve's queue for
        the replacement), so a slow answer is how its loss shows. The standby is asked to
        take the store first; it can only when the store is free, i.e. the owner's process is
        gone. When it cannot, the owner's answer is awaited. A slow write is moved to the
        standby only once the standby holds the store (see below), never sent twice.
        """
        handle = self.writer if writer else self.index

        def make() -> Any:  # owner_lost is only ever set when there is a standby
            return getattr(self.standby if self.owner_lost else handle, name).remote(*args)

        def to_standby(how: str) -> None:
            if not self.owner_lost:
                log.warning(
                    "%s: the index owner did not answer within %.1f s and the standby %s: sending calls "
                    "to the standby until the owner is back",
                    what,
                    HEDGE_AFTER_S,
                    how,
                )
            self.owner_lost = True
            first.cancel()

        if self.standby is None or self.owner_lost:
            return await self._call(make, what, lost=lost, failover=True)
        first = asyncio.ensure_future(self._call(make, what, lost=lost, failover=True))
        done, _ = await asyncio.wait({first}, timeout=HEDGE_AFTER_S)
        if done:
            return first.result()
        # Asked first, for reads too: a standby that cannot take the store says so in an
        # answer, where a read sent to it would fail with a logged error each time.
        try:
            held = await call(self.standby.acquire.remote())
        except Exception:  # noqa: BLE001 - the standby lost: the owner's answer still counts
            return await first
        if not held:  # the owner is alive, only slow
            return await first
        if name not in READS:
            # A write is sent once: only when the standby holds the store (so no owner process
            # is running, and the queued call cannot have started) is it withdrawn from the
            # owner's queue and sent to the standby.
            to_standby("took the store")
            return await self._call(make, what, lost=lost, failover=True)
        try:
            answer = await call(getattr(self.standby, name).remote(*args))
        except ApiError as exc:  # standby_idle: released to the owner's replacement meanwhile
            if exc.code != "standby_idle":
                first.cancel()
                raise
            return await first  # the owner is alive, only slow
        except Exception:  # noqa: BLE001 - the standby failing is no answer: the owner's still counts
            return await first
        to_standby("could open the store")
        return answer

    # -- serve.api.Backend over the deployment handles -------------------------------------
    async def embed(self, data: bytes) -> Any:
        return await self._call(lambda: self.encoder.embed.remote(data), "embedding")

    async def encoder_info(self) -> dict[str, Any]:
        return await self._call(lambda: self.encoder.describe.remote(), "encoder info")

    async def deployments(self) -> dict[str, str]:
        """``{deployment: status}`` of this application, from the Serve controller."""
        import asyncio

        app = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)
        return {
            name: str(getattr(d.status, "value", d.status)) for name, d in status.applications[app].deployments.items()
        }

    async def index_info(self) -> dict[str, Any]:
        return await self._owner("info", what="index info")

    async def attribute(
        self,
        vectors: np.ndarray,
        model_version: str | None = None,
        hashes: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
    ) -> list[dict[str, Any]]:
        return await self._owner("attribute", vectors, model_version, hashes, images, what="attribution")

    async def enroll(
        self,
        generator: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        images: Sequence[bytes] | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        # Enrollment is keyed by content hash: sent twice, it stores each image once.
        return await self._owner(
            "enroll",
            generator,
            vectors,
            list(hashes),
            list(names),
            list(images) if images is not None else None,
            model_version,
            what="enrollment",
            writer=True,
        )

    async def generators(self) -> dict[str, dict[str, int]]:
        return await self._owner("generators", what="listing")

    async def delete_generator(self, generator: str) -> dict[str, Any]:
        lost: list[str] = []
        try:
            return await self._owner("delete_generator", generator, what="deletion", writer=True, lost=lost)
        except ApiError as exc:
            if not lost or exc.code not in ("unknown_generator", "trained_generator"):
                raise
            # The lost attempt may have deleted them before its replica died: what was asked is
            # done either way (no enrolled samples remain), but this call cannot say how many.
            counts = exc.details.get("counts", {"trained": 0, "enrolled": 0})
            return {"deleted": 0, "counts": {**counts, "enrolled": 0}, "unconfirmed": True}

    async def class_references(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray:
        return await self._owner("class_references", vector, generator, k, what="explanation")

    async def explain(self, data: bytes, references: np.ndarray, kinds: list[str], lime_samples: int) -> dict[str, Any]:
        return await self._call(
            lambda: self.encoder.explain.remote(data, references, kinds, lime_samples), "explanation"
        )

    # discovery: grouping, enrollment and feedback live with the one writer
    async def discoveries(self, refresh: bool) -> dict[str, Any]:
        return await self._owner("list_discoveries", refresh, what="discoveries", writer=True)

    async def discovery(self, discovery_id: str, members: bool = False) -> dict[str, Any]:
        return await self._owner("get_discovery", discovery_id, members, what="discovery", writer=True)

    async def enroll_discovery(self, discovery_id: str, name: str) -> dict[str, Any]:
        return await self._owner("enroll_discovery", discovery_id, name, what="enrollment", writer=True)

    async def add_feedback(
        self,
        label: str,
        hashes: Sequence[str],
        vectors: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        images: Sequence[bytes] | None = None,
        note: str = "",
    ) -> dict[str, Any]:
        return await self._owner(
            "add_feedback", label, list(hashes), vectors, names, images, note, what="feedback", writer=True
        )

    async def list_feedback(self) -> dict[str, Any]:
        return await self._owner("list_feedback", what="feedback", writer=True)

    async def enroll_feedback(self, label: str) -> dict[str, Any]:
        return await self._owner("enroll_feedback", label, what="enrollment", writer=True)

    async def inbox_stats(self) -> dict[str, Any]:
        return await self._owner("inbox_stats", what="inbox stats", writer=True)
