"""The embedded store on Qdrant Edge: Qdrant's own engine in this process (``qdrant-edge-py``).

Qdrant Edge is "SQLite for vector search": the server's storage format and HNSW, no service to
run. Each collection is a shard directory ``<store.path>/<collection>/``, with the collection's
metadata (model version, calibrated thresholds, the write revision) in ``synthray-meta.json``
inside it, so a snapshot of the directory carries everything. Aliases (the active collection)
are ``<store.path>/aliases.json``, replaced atomically. A shard directory is locked by the
process that opened it (its write-ahead log); a second opener gets :class:`StoreError`.

The package is in beta: the version is pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.data.files import write_json_atomic
from synthray.index.config import StoreConfig
from synthray.index.store import BaseStore, StoreError, Where

log = logging.getLogger(__name__)

VECTOR = "emb"  # the shard's one named dense vector
META_FILE = "synthray-meta.json"
ALIASES_FILE = "aliases.json"


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    write_json_atomic(path, dict(data), default=str)


class EdgeStore(BaseStore):
    """:class:`~synthray.index.store.BaseStore` on a Qdrant Edge shard.

    Args:
        cfg: ``path`` (the store folder), HNSW settings, ``exact_max``.
        model_version: the encoder version whose embeddings go in / are queried.
        dim: embedding size D.
        create: create the collection when it does not exist; False raises StoreError.
    Raises:
        StoreError: another model version's collection, another size, a missing collection
            (``create`` False), or a shard another process holds open.
    """

    embedded = True

    def __init__(self, cfg: StoreConfig, model_version: str, dim: int, create: bool = True) -> None:
        super().__init__(cfg, model_version, dim)
        self.root = Path(cfg.path)
        self.dir = self.root / self.collection
        self.shard: Any = None
        self._meta: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        exists = (self.dir / "edge_config.json").is_file()
        if exists:
            self.shard = self._load(self.dir)
        try:
            self._check_open(create, exists, self._create)
        except Exception:
            self.close()
            raise

    @staticmethod
    def _load(path: Path) -> Any:
        from qdrant_edge import EdgeShard

        try:
            return EdgeShard.load(str(path))
        except Exception as exc:  # qdrant-edge raises plain Exception; WAL lock = another process
            if "WouldBlock" in str(exc) or "WAL" in str(exc):
                raise StoreError(
                    f"Qdrant Edge shard {path} is open in another process: only one process may own "
                    "an embedded store; stop it, or use a Qdrant server (store.url)"
                ) from exc
            raise StoreError(f"cannot open the Qdrant Edge shard at {path}: {exc}") from exc

    def _config(self) -> Any:
        from qdrant_edge import Distance, EdgeConfig, EdgeVectorParams, HnswIndexConfig

        return EdgeConfig(
            vectors={VECTOR: EdgeVectorParams(size=self.dim, distance=Distance.Cosine)},
            hnsw_config=HnswIndexConfig(
                m=self.cfg.hnsw_m,
                ef_construct=self.cfg.hnsw_ef_construct,
                full_scan_threshold=10,
                max_indexing_threads=0,
            ),
        )

    def _create(self) -> None:
        from qdrant_edge import EdgeShard, PayloadSchemaType, UpdateOperation

        self.root.mkdir(parents=True, exist_ok=True)
        self.shard = EdgeShard.create(str(self.dir), self._config())
        for field in ("generator", "origin", "content_hash"):
            self.shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
        log.info("created Qdrant Edge collection %s at %s", self.collection, self.dir)

    def where(self) -> str:
        return str(self.dir.resolve())

    # -- metadata ---------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        path = self.dir / META_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        # Read per query (the revision tells readers of a write): parse only when the file changed.
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._meta is None or self._meta[0] != key:
            self._meta = (key, json.loads(path.read_text(encoding="utf-8")))
        return dict(self._meta[1])

    def _write_metadata(self, values: Mapping[str, Any]) -> None:
        merged = {**self.metadata(), **values}
        # None removes a key, as a Qdrant server treats collection metadata.
        _write_json(self.dir / META_FILE, {k: v for k, v in merged.items() if v is not None})

    # -- primitives -------------------------------------------------------------------------
    @staticmethod
    def _filter(where: Where | None) -> Any:
        from qdrant_edge import FieldCondition, Filter, MatchAny, MatchValue

        if where is None:
            return None
        must: list[Any] = []
        if where.generator is not None:
            must.append(FieldCondition(key="generator", match=MatchValue(value=where.generator)))
        if where.origin is not None:
            must.append(FieldCondition(key="origin", match=MatchValue(value=where.origin)))
        if where.origins is not None:
            must.append(FieldCondition(key="origin", match=MatchAny(any=list(where.origins))))
        return Filter(must=must) if must else None

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        from qdrant_edge import Point, UpdateOperation

        self.shard.update(
            UpdateOperation.upsert_points(
                [Point(i, {VECTOR: v.tolist()}, p) for i, v, p in zip(ids, vectors, payloads)]
            )
        )

    def _delete_ids(self, ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        self.shard.update(UpdateOperation.delete_points(list(ids)))

    def _delete_where(self, where: Where) -> None:
        from qdrant_edge import UpdateOperation

        self.shard.update(UpdateOperation.delete_points_by_filter(self._filter(where)))

    def _count(self, where: Where | None) -> int:
        from qdrant_edge import CountRequest

        return int(self.shard.count(CountRequest(exact=True, filter=self._filter(where))))

    def _generator_counts(self, where: Where) -> dict[str, int]:
        from qdrant_edge import FacetRequest

        hits = self.shard.facet(FacetRequest(key="generator", limit=100_000, exact=True, filter=self._filter(where)))
        return {str(h.value): int(h.count) for h in hits.hits}

    def _scroll_page(self, where: Where, offset: Any, limit: int) -> tuple[list[tuple[str, Any, dict]], Any]:
        from qdrant_edge import ScrollRequest

        records, offset = self.shard.scroll(
            ScrollRequest(offset=offset, limit=limit, filter=self._filter(where), with_payload=True, with_vector=True)
        )
        return [(str(r.id), r.vector[VECTOR], dict(r.payload or {})) for r in records], offset

    def _retrieve_page(self, ids: list[str], with_vectors: bool = False) -> list[tuple[str, Any, dict]]:
        return [
            (str(r.id), r.vector[VECTOR] if with_vectors else None, dict(r.payload or {}))
            for r in self.shard.retrieve(ids, with_payload=True, with_vector=with_vectors)
        ]

    def _native_search(
        self, vectors: np.ndarray, k: int, where: Where
    ) -> list[list[tuple[str, float, dict[str, Any]]]]:
        from qdrant_edge import Query, QueryBatchRequest, QueryRequest, SearchParams

        params = SearchParams(hnsw_ef=self.cfg.hnsw_ef)
        flt = self._filter(where)
        out = []
        for s in range(0, len(vectors), 256):
            batch = QueryBatchRequest(
                [
                    QueryRequest(
                        query=Query.Nearest(v.tolist(), using=VECTOR),
                        limit=k,
                        filter=flt,
                        with_payload=True,
                        params=params,
                    )
                    for v in vectors[s : s + 256]
                ]
            )
            for hits in self.shard.query_batch(batch):
                out.append([(str(p.id), float(p.score), dict(p.payload or {})) for p in hits])
        return out

    def optimize(self) -> None:
        """Builds the HNSW graph now (blocking) rather than at the first search above ``exact_max``."""
        self.shard.optimize()

    # -- versions and backups ---------------------------------------------------------------
    def set_alias(self, alias: str) -> str | None:
        """Points ``alias`` at this collection in one atomic file replace; returns its former target."""
        return write_alias(self.root, alias, self.collection)

    def snapshot(self, out: str | Path) -> str:
        """Writes a snapshot archive of the collection (points, index and metadata) to ``out``.

        The shard is flushed and closed while the directory is archived, then reopened: writes
        wait for it, reads never see a half-written shard.
        """
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.shard.flush()
        self.shard.close()
        try:
            tmp = out.with_name(f".{out.name}.tmp")
            with tarfile.open(tmp, "w") as tar:
                for child in sorted(self.dir.iterdir()):
                    tar.add(child, arcname=child.name)
            os.replace(tmp, out)
        finally:
            self.shard = self._load(self.dir)
        return str(out)

    def close(self) -> None:
        if self.shard is not None:
            try:
                self.shard.flush()
                self.shard.close()
            finally:
                self.shard = None


def read_metadata(root: str | Path, collection: str) -> dict[str, Any]:
    """A collection's metadata file, read without opening the shard.

    Raises:
        StoreError: no such collection.
    """
    path = Path(root) / collection / META_FILE
    if not path.is_file():
        raise StoreError(f"no collection {collection!r} at {Path(root).resolve()}")
    return json.loads(path.read_text(encoding="utf-8"))


def list_shards(root: str | Path) -> list[str]:
    """The collections (shard directories) of an Edge store folder."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / "edge_config.json").is_file()) if root.is_dir() else []


def write_alias(root: str | Path, alias: str, collection: str) -> str | None:
    """Points ``alias`` at ``collection`` (one atomic replace of the aliases file); returns its
    former target. One writer at a time (the index build or the operator's CLI)."""
    path = Path(root) / ALIASES_FILE
    aliases = read_aliases(root)
    before = aliases.get(alias)
    aliases[alias] = collection
    Path(root).mkdir(parents=True, exist_ok=True)
    _write_json(path, aliases)
    return before


def read_aliases(root: str | Path) -> dict[str, str]:
    """``{alias: collection}`` of an Edge store folder."""
    path = Path(root) / ALIASES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def restore_snapshot(
    archive: str | Path, root: str | Path, collection: str | None = None, overwrite: bool = False
) -> str:
    """Unpacks a snapshot archive into ``<root>/<collection>`` (the archive's own collection
    name from its metadata by default).

    Raises:
        StoreError: the collection exists and ``overwrite`` is false, or the archive holds no shard.
    """
    from qdrant_edge import EdgeShard

    root = Path(root)
    with tempfile.TemporaryDirectory(dir=root if root.is_dir() else None) as tmp:
        staging = Path(tmp) / "restore"
        EdgeShard.unpack_snapshot(str(archive), str(staging))
        meta_path = staging / META_FILE
        if not (staging / "edge_config.json").is_file() or not meta_path.is_file():
            raise StoreError(f"{archive} is not a synthray Qdrant Edge snapshot (no shard or no {META_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        name = collection or meta.get("collection") or f"synthray-{meta['model_version']}"
        target = root / name
        if target.exists():
            if not overwrite:
                raise StoreError(f"{target} exists: restore into another store folder, or pass overwrite")
            shutil.rmtree(target)
        root.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    return name
