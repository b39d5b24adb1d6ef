"""The store's collections as an operator handles them: list, activate (and roll back), back up.

``synthray index list|activate|snapshot|restore`` (see :mod:`synthray.cli`). A collection per
model version lives beside the others; the active alias names the one served by default.

Backups: Qdrant Edge's snapshot is a tar archive of the shard directory, written while the
shard is flushed and closed, so it needs the store not held by a running service (stop it,
or snapshot a Qdrant server, which takes snapshots while serving). A Qdrant server keeps its
snapshots on its own snapshots volume; ``restore`` recovers one from a path the server can
read (``file:///qdrant/snapshots/...``) or a URL.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from synthray.index.config import StoreConfig
from synthray.index.collections import (
    active_collection,
    alias_name,
    collection_metadata,
    list_collections,
    server_client,
)
from synthray.index.errors import StoreError

log = logging.getLogger(__name__)


def _server(cfg: StoreConfig) -> bool:
    return bool(cfg.url) or cfg.engine == "client-local"


def set_alias(cfg: StoreConfig, collection: str, alias: str | None = None) -> str | None:
    """Points ``alias`` (the active alias by default) at an existing collection in one step;
    returns the collection it named before.

    Raises:
        StoreError: no such collection.
    """
    alias = alias or alias_name(cfg)
    collection_metadata(cfg, collection)  # exists?
    if _server(cfg):
        from synthray.index.client_store import move_alias

        client = server_client(cfg)
        try:
            return move_alias(client, alias, collection)
        finally:
            client.close()
    from synthray.index.edge_store import write_alias

    return write_alias(cfg.path, alias, collection)


def snapshot(cfg: StoreConfig, out: str | None = None, keep: int | None = None) -> dict[str, Any]:
    """A snapshot of the active collection (``cfg.collection`` when set).

    Args:
        cfg: the store.
        out: the archive file (Edge); None = ``<store>/../snapshots/<collection>-<time>.tar``.
        keep: keep only this many newest snapshots of the collection (the server's, or the
            default folder's), deleting older ones; None keeps all.
    Returns:
        ``{"collection", "snapshot", "where", "deleted"}``.
    Raises:
        StoreError: no active collection; an embedded store held by another process;
            qdrant-client's local mode (it has no snapshots).
    """
    collection, meta = active_collection(cfg)
    if cfg.engine == "client-local" and not cfg.url:
        raise StoreError("qdrant-client's local mode has no snapshots: back up with Qdrant Edge or a server")
    if cfg.url:
        client = server_client(cfg)
        deleted: list[str] = []
        try:
            desc = client.create_snapshot(collection, wait=True)
            if keep is not None:
                old = sorted(client.list_snapshots(collection), key=lambda d: d.creation_time or "", reverse=True)[
                    keep:
                ]
                for d in old:
                    client.delete_snapshot(collection, d.name, wait=True)
                    deleted.append(d.name)
        finally:
            client.close()
        name = desc.name if desc is not None else ""
        log.info("server snapshot %s of %s (%d older deleted)", name, collection, len(deleted))
        return {
            "collection": collection,
            "snapshot": name,
            "where": f"{cfg.url} (the server's snapshots volume)",
            "deleted": deleted,
        }
    from synthray.index.edge_store import EdgeStore

    folder = Path(cfg.path).resolve().parent / "snapshots"
    target = Path(out) if out else folder / f"{collection}-{time.strftime('%Y%m%dT%H%M%S')}.tar"
    import dataclasses

    with EdgeStore(
        dataclasses.replace(cfg, collection=collection), meta["model_version"], int(meta["dim"]), create=False
    ) as store:
        written = store.snapshot(target)
    deleted = []
    if keep is not None and not out:
        # Names carry the time, so name order is age order.
        for stale in sorted(folder.glob(f"{collection}-*.tar"), reverse=True)[keep:]:
            stale.unlink()
            deleted.append(str(stale))
    log.info("snapshot of %s written to %s (%d older deleted)", collection, written, len(deleted))
    return {"collection": collection, "snapshot": written, "where": "file", "deleted": deleted}


def restore(cfg: StoreConfig, archive: str, overwrite: bool = False) -> dict[str, Any]:
    """Restores a snapshot into the store as the collection it was taken of (``cfg.collection``
    when set); the active alias is not moved (``activate`` does that).

    Raises:
        StoreError: the collection exists (without ``overwrite``), the archive is no snapshot.
        FileNotFoundError: no such archive file (Edge).
    """
    if cfg.url:
        if not cfg.collection:
            raise StoreError("restoring on a server needs the collection name: --set store.collection=NAME")
        client = server_client(cfg)
        try:
            client.recover_snapshot(cfg.collection, location=archive, wait=True)
        finally:
            client.close()
        return {"collection": cfg.collection, "restored_from": archive}
    if cfg.engine == "client-local":
        raise StoreError("qdrant-client's local mode has no snapshots: restore into Qdrant Edge or a server")
    from synthray.index.edge_store import restore_snapshot

    if not Path(archive).is_file():
        raise FileNotFoundError(f"no snapshot archive at {archive}")
    name = restore_snapshot(archive, cfg.path, collection=cfg.collection, overwrite=overwrite)
    return {"collection": name, "restored_from": str(archive), "store": str(Path(cfg.path).resolve())}


def index_admin(
    action: str, cfg: StoreConfig, target: str | None = None, overwrite: bool = False, keep: int | None = None
) -> dict[str, Any]:
    """One ``synthray index`` action other than build; returns a JSON-able answer."""
    if action == "list":
        alias = alias_name(cfg)
        try:
            active = active_collection(cfg)[0]
        except StoreError:
            active = None
        return {"alias": alias, "active": active, "collections": list_collections(cfg)}
    if action == "activate":
        if not target:
            raise StoreError("activate needs the collection to make active (see `synthray index list`)")
        before = set_alias(cfg, target)
        log.info("alias %s: %s -> %s", alias_name(cfg), before, target)
        return {"alias": alias_name(cfg), "active": target, "previous": before}
    if action == "snapshot":
        return snapshot(cfg, target, keep)
    if action == "restore":
        if not target:
            raise StoreError("restore needs the snapshot archive")
        return restore(cfg, target, overwrite=overwrite)
    raise ValueError(f"unknown index action {action!r}")
