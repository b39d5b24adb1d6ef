"""The store on qdrant-client: a Qdrant server (``store.url``), or qdrant-client's local mode.

The server is the store for Kubernetes and large indexes (payload indexes, snapshots, collection
aliases). qdrant-client's local mode (``store.engine: client-local``) is numpy brute force in
Python with SQLite writes: the tests use it as the server's stand-in, since both speak through
the same client API.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.index.config import StoreConfig
from synthray.index.store import INDEXED_FIELDS, BaseStore, StoreError, Where

log = logging.getLogger(__name__)


class QdrantStore(BaseStore):
    """:class:`~synthray.index.store.BaseStore` on qdrant-client.

    Args:
        cfg: where the store is.
        model_version: the encoder version whose embeddings go in / are queried.
        dim: embedding size D.
        create: create the collection when it does not exist; False raises StoreError.
    Raises:
        StoreError: another model version's collection, another size, a missing collection
            (``create`` False), or an embedded folder another process holds.
    """

    def __init__(self, cfg: StoreConfig, model_version: str, dim: int, create: bool = True) -> None:
        from qdrant_client import QdrantClient

        super().__init__(cfg, model_version, dim)
        if cfg.url:
            self.client = QdrantClient(
                url=cfg.url, api_key=os.environ.get(cfg.api_key_env) or None, timeout=cfg.timeout_s
            )
            self.embedded = False
        else:
            Path(cfg.path).mkdir(parents=True, exist_ok=True)
            try:
                self.client = QdrantClient(path=cfg.path)
            except RuntimeError as exc:  # portalocker: another process holds the folder
                raise StoreError(
                    f"embedded Qdrant at {cfg.path} is open in another process ({exc}); only one "
                    "process may own an embedded store: stop it, or use a Qdrant server (store.url)"
                ) from exc
            self.embedded = True
        try:
            self._check_open(create, self.client.collection_exists(self.collection), self._create)
        except Exception:
            self.client.close()  # release the embedded folder's lock for whoever comes next
            raise

    def where(self) -> str:
        return self.cfg.url or str(Path(self.cfg.path).resolve())

    def _create(self) -> None:
        from qdrant_client import models as qm

        self.client.create_collection(
            self.collection,
            vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
            hnsw_config=qm.HnswConfigDiff(m=self.cfg.hnsw_m, ef_construct=self.cfg.hnsw_ef_construct),
        )
        if not self.embedded:  # payload indexes only exist on a server
            for field in INDEXED_FIELDS:
                self.client.create_payload_index(self.collection, field, qm.PayloadSchemaType.KEYWORD)
        log.info("created collection %s at %s", self.collection, self.where())

    def metadata(self) -> dict[str, Any]:
        return dict(self.client.get_collection(self.collection).config.metadata or {})

    def _write_metadata(self, values: Mapping[str, Any]) -> None:
        self.client.update_collection(self.collection, metadata=dict(values))

    @staticmethod
    def _filter(where: Where | None):
        from qdrant_client import models as qm

        if where is None:
            return None
        must: list[Any] = []
        if where.generator is not None:
            must.append(qm.FieldCondition(key="generator", match=qm.MatchValue(value=where.generator)))
        if where.origin is not None:
            must.append(qm.FieldCondition(key="origin", match=qm.MatchValue(value=where.origin)))
        if where.origins is not None:
            must.append(qm.FieldCondition(key="origin", match=qm.MatchAny(any=list(where.origins))))
        return qm.Filter(must=must) if must else None

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        from qdrant_client import models as qm

        points = [qm.PointStruct(id=i, vector=v.tolist(), payload=p) for i, v, p in zip(ids, vectors, payloads)]
        self.client.upsert(self.collection, points=points, wait=True)

    def _delete_ids(self, ids: Sequence[str]) -> None:
        from qdrant_client import models as qm

        self.client.delete(self.collection, points_selector=qm.PointIdsList(points=list(ids)), wait=True)

    def _delete_where(self, where: Where) -> None:
        from qdrant_client import models as qm

        self.client.delete(self.collection, points_selector=qm.FilterSelector(filter=self._filter(where)), wait=True)

    def _count(self, where: Where | None) -> int:
        return self.client.count(self.collection, count_filter=self._filter(where), exact=True).count

    def _generator_counts(self, where: Where) -> dict[str, int]:
        hits = self.client.facet(
            self.collection, key="generator", facet_filter=self._filter(where), limit=100_000, exact=True
        ).hits
        return {str(h.value): int(h.count) for h in hits}

    def _scroll_page(self, where: Where, offset: Any, limit: int) -> tuple[list[tuple[str, Any, dict]], Any]:
        points, offset = self.client.scroll(
            self.collection,
            scroll_filter=self._filter(where),
            limit=limit,
            offset=offset,
            with_vectors=True,
            with_payload=True,
        )
        return [(str(p.id), p.vector, dict(p.payload or {})) for p in points], offset

    def _retrieve_page(self, ids: list[str], with_vectors: bool = False) -> list[tuple[str, Any, dict]]:
        return [
            (str(p.id), p.vector if with_vectors else None, dict(p.payload or {}))
            for p in self.client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=with_vectors)
        ]

    def _native_search(
        self, vectors: np.ndarray, k: int, where: Where
    ) -> list[list[tuple[str, float, dict[str, Any]]]]:
        from qdrant_client import models as qm

        params = qm.SearchParams(hnsw_ef=self.cfg.hnsw_ef)
        requests = [
            qm.QueryRequest(query=v.tolist(), limit=k, with_payload=True, filter=self._filter(where), params=params)
            for v in vectors
        ]
        out = []
        for s in range(0, len(requests), 256):
            for resp in self.client.query_batch_points(self.collection, requests=requests[s : s + 256]):
                out.append([(str(p.id), float(p.score), dict(p.payload or {})) for p in resp.points])
        return out

    # -- versions (aliases: atomic on a server) ---------------------------------------------
    def set_alias(self, alias: str) -> str | None:
        """Points ``alias`` at this collection in one request; returns the collection it named before."""
        return move_alias(self.client, alias, self.collection)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"QdrantStore({self.collection!r} at {self.where()}, {time.strftime('%H:%M:%S')})"


def alias_target(client: Any, alias: str) -> str | None:
    """The collection ``alias`` names on a server (or qdrant-client's local mode), or None."""
    return next((a.collection_name for a in client.get_aliases().aliases if a.alias_name == alias), None)


def move_alias(client: Any, alias: str, collection: str) -> str | None:
    """Points ``alias`` at ``collection`` in one request (atomic on the server); returns the
    collection it named before, or None."""
    from qdrant_client import models as qm

    before = alias_target(client, alias)
    ops: list[Any] = []
    if before is not None:
        ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
    ops.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=ops)
    return before
