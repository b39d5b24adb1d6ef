"""A warm standby for the embedded store's one owner.

An embedded store can be opened by one process, so a lost index owner stalls every read and
write until Serve has started a new process for it (seconds: the process start dominates,
not opening the store). The standby is that process, started in advance: it holds nothing
while the owner lives. When the ingress loses the owner it sends its calls here; the first
one opens the store (free: its lock went with the owner's process) and the standby answers
as the owner would, same code (:class:`serve.index_owner.IndexService`). When the owner's
replacement starts, it asks the standby to :meth:`IndexStandby.release` the store: the
standby refuses new calls (503 ``standby_idle``, which sends the ingress back to the owner),
waits for the calls it holds, closes the store, and the owner opens it. While it holds the
store it also regroups the discovery inbox on the owner's schedule.

One process holds the store at any time (the folder's lock decides), so writes stay
serialized and nothing is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from serve.errors import ApiError
from serve.index_owner import IndexService, open_parts
from synthray.index.store import StoreError

log = logging.getLogger(__name__)

#: The owner's methods the ingress calls; the standby answers each the same way.
FORWARDED = (
    "info",
    "attribute",
    "generators",
    "class_references",
    "enroll",
    "delete_generator",
    "list_discoveries",
    "get_discovery",
    "enroll_discovery",
    "add_feedback",
    "list_feedback",
    "enroll_feedback",
    "inbox_stats",
)


def idle() -> ApiError:
    return ApiError(503, "standby_idle", "the index owner holds the store; send the call to it")


class IndexStandby:
    """The standby deployment (one replica, embedded stores only).

    Args: as :class:`serve.index_owner.IndexOwner` (role ``owner``; it never creates the
    collection: the owner did).
    """

    async def __init__(  # type: ignore[misc] # Serve awaits an async constructor
        self,
        encoder: Any,
        store: dict[str, Any],
        attribution: dict[str, Any] | None = None,
        model_version: str | None = None,
        discovery: dict[str, Any] | None = None,
    ) -> None:
        self._encoder, self._store, self._attribution = encoder, store, attribution
        self._model_version, self._discovery = model_version, discovery
        self._service: IndexService | None = None
        self._open_lock = asyncio.Lock()
        self._releasing = False
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    async def _active(self) -> IndexService:
        if self._releasing:
            raise idle()
        async with self._open_lock:
            if self._service is None:
                try:
                    parts = await open_parts(
                        self._encoder,
                        self._store,
                        False,
                        self._attribution,
                        self._model_version,
                        "owner",
                        self._discovery,
                        wait_s=0.0,
                    )
                    self._service = IndexService(**parts)
                except StoreError as exc:
                    if "another process" in str(exc):
                        raise idle() from None
                    raise
                # Holding the store, it keeps the owner's schedule too: discoveries stay fresh
                # however long the replacement takes (release() stops it with the store).
                self._service.start_regrouping()
                log.warning("standby: the index owner was lost; this process holds the store now")
        return self._service

    @contextlib.asynccontextmanager
    async def _counted(self) -> AsyncIterator[IndexService]:
        """The service, for one call that :meth:`release` waits for."""
        if self._releasing:
            raise idle()
        # Counted before the store is opened: a release waits for calls still opening it too.
        self._in_flight += 1
        self._drained.clear()
        try:
            yield await self._active()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async with self._counted() as service:
            return await getattr(service, name)(*args, **kwargs)

    async def acquire(self) -> bool:
        """Takes the store when it is free (the owner's process is gone) and says True; False
        when the owner holds it (or a release is under way). Holding it, the standby knows no
        owner is writing. A refusal is an answer, not an error: the ingress asks on every slow
        call, and the owner being alive is the usual case (an error would log a traceback each time)."""
        try:
            async with self._counted():
                return True
        except ApiError as exc:
            if exc.code != "standby_idle":
                raise
            return False

    async def release(self) -> bool:
        """Gives the store back (the owner's replacement asks): refuses new calls, waits for
        the ones in progress, closes the store. Returns whether it held the store."""
        self._releasing = True
        try:
            await self._drained.wait()
            async with self._open_lock:
                service, self._service = self._service, None
            if service is not None:
                await asyncio.to_thread(service.close)
                log.warning("standby: store released to the index owner")
            return service is not None
        finally:
            self._releasing = False

    def holds_store(self) -> bool:
        return self._service is not None

    def __del__(self) -> None:
        if self._service is not None:
            self._service.close()


def _forwarder(name: str) -> Any:
    async def method(self: IndexStandby, *args: Any, **kwargs: Any) -> Any:
        return await self.forward(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The owner's ``{name}``, answered from the store this standby took over."
    return method


for _name in FORWARDED:
    setattr(IndexStandby, _name, _forwarder(_name))
