"""Naming and finding a store's collections: one per model version, an alias for the active one.

Reading aliases and metadata never opens a collection for writing, so an Edge shard that
another process (the service's index owner) holds can still be listed and inspected.
"""

from __future__ import annotations

import os
from typing import Any

from synthray.index.config import StoreConfig
from synthray.index.errors import StoreError


def collection_name(cfg: StoreConfig, model_version: str) -> str:
    return cfg.collection or f"{cfg.collection_prefix}-{model_version}"


def alias_name(cfg: StoreConfig) -> str:
    """The alias that names the active collection (moved by ``synthray index activate``)."""
    return cfg.alias or f"{cfg.collection_prefix}-active"


def server_client(cfg: StoreConfig) -> Any:
    """A qdrant-client for the configured server (or local-mode folder); the caller closes it."""
    from qdrant_client import QdrantClient

    if cfg.url:
        return QdrantClient(url=cfg.url, api_key=os.environ.get(cfg.api_key_env) or None, timeout=cfg.timeout_s)
    return QdrantClient(path=cfg.path)


def resolve_alias(cfg: StoreConfig, alias: str | None = None) -> str | None:
    """The collection an alias names (``alias_name(cfg)`` by default), or None when unset.

    Open no qdrant-client local store of the same folder meanwhile: this opens it briefly.
    """
    alias = alias or alias_name(cfg)
    if cfg.url or cfg.engine == "client-local":
        from synthray.index.client_store import alias_target

        client = server_client(cfg)
        try:
            return alias_target(client, alias)
        finally:
            client.close()
    from synthray.index.edge_store import read_aliases

    return read_aliases(cfg.path).get(alias)


def collection_metadata(cfg: StoreConfig, collection: str) -> dict[str, Any]:
    """A collection's metadata without opening it for writing (an Edge shard another process
    holds can still be read this way).

    Raises:
        StoreError: no such collection.
    """
    if cfg.url or cfg.engine == "client-local":
        client = server_client(cfg)
        try:
            if not client.collection_exists(collection):
                raise StoreError(f"no collection {collection!r} at {cfg.url or cfg.path}")
            return dict(client.get_collection(collection).config.metadata or {})
        finally:
            client.close()
    from synthray.index.edge_store import read_metadata

    return read_metadata(cfg.path, collection)


def active_collection(cfg: StoreConfig) -> tuple[str, dict[str, Any]]:
    """The collection the store serves when no checkpoint is given, and its metadata: the one
    ``cfg.collection`` names (itself an alias or a collection), else the active alias's.

    Raises:
        StoreError: no alias set and no collection named.
    """
    name = cfg.collection or alias_name(cfg)
    target = resolve_alias(cfg, name) or (cfg.collection if cfg.collection else None)
    if target is None:
        raise StoreError(
            f"no active collection at {cfg.url or cfg.path}: alias {name!r} is unset; build an index "
            "with activate (synthray index --set activate=true) or `synthray index activate`"
        )
    return target, collection_metadata(cfg, target)


def list_collections(cfg: StoreConfig) -> list[dict[str, Any]]:
    """Every collection of the store with its model version, size on record and aliases."""
    if cfg.url or cfg.engine == "client-local":
        client = server_client(cfg)
        try:
            aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
            names = [c.name for c in client.get_collections().collections]
            metas = {n: dict(client.get_collection(n).config.metadata or {}) for n in names}
        finally:
            client.close()
    else:
        from synthray.index.edge_store import list_shards, read_aliases, read_metadata

        aliases = read_aliases(cfg.path)
        names = list_shards(cfg.path)
        metas = {n: read_metadata(cfg.path, n) for n in names}
    return [
        {
            "collection": n,
            "model_version": metas[n].get("model_version"),
            "checkpoint": metas[n].get("checkpoint"),
            "built_at": metas[n].get("built_at"),
            "aliases": sorted(a for a, c in aliases.items() if c == n),
        }
        for n in sorted(names)
    ]
