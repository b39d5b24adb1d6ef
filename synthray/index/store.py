"""Reference embeddings in Qdrant, behind a small typed interface.

One collection per model version (cosine distance): embeddings from different weights
live in different spaces and must never be compared, so a collection records the model
version that filled it and refuses queries from any other.

Point ids are derived from (model version, content hash): indexing the same image twice
writes the same point, so re-running or resuming a build never duplicates, and
re-enrolling the same files changes nothing.

Embedded mode (``QdrantClient(path=...)``) lets ONE process open a storage folder. In a
Ray program exactly one process owns a :class:`QdrantStore` on that folder: the driver
of ``build_index`` (embedding actors only return vectors), and the index-owner
deployment of the Serve app (one replica when embedded). Everything else asks that owner.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from synthray.index.config import StoreConfig

log = logging.getLogger(__name__)

#: Where a reference came from: the training data (``trained``) or few-shot enrollment.
ORIGINS = ("trained", "enrolled")
#: Points that are no references: the real validation photographs the is-AI threshold was
#: calibrated on, kept so that an enrollment can check it does not flag them.
CALIBRATION = "calibration"
#: Payload fields that are filtered on (indexed in server mode).
INDEXED_FIELDS = {"generator": "keyword", "is_real": "bool", "origin": "keyword", "split": "keyword",
                  "content_hash": "keyword"}
_ID_NAMESPACE = uuid.UUID("5f0b7e9c-61d5-4a8e-9a57-7d2f8c0e4b11")


class StoreError(RuntimeError):
    """The store cannot do what was asked (wrong model version, missing collection, ...)."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference image's labels, stored as the point's payload."""

    generator: str
    is_real: bool
    content_hash: str  # sha256 of the encoded image bytes
    split: str = ""
    dataset: str = ""
    source_path: str = ""
    origin: str = "trained"  # trained | enrolled | calibration
    added_at: float = 0.0  # unix time; 0 = now

    def payload(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["added_at"] = d["added_at"] or time.time()
        return d


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """A reference returned by a search."""

    id: str
    similarity: float  # cosine similarity in [-1, 1]
    generator: str
    is_real: bool
    origin: str
    source_path: str = ""


def point_id(model_version: str, content_hash: str) -> str:
    """The deterministic point id of an image under a model version (a UUID, as Qdrant wants)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{model_version}:{content_hash}"))


def collection_name(cfg: StoreConfig, model_version: str) -> str:
    return cfg.collection or f"{cfg.collection_prefix}-{model_version}"


class VectorStore(Protocol):
    """What the attribution service needs from a vector store."""

    model_version: str
    dim: int

    def upsert(self, vectors: np.ndarray, refs: Sequence[Reference]) -> list[str]: ...
    def search(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]: ...
    def class_hits(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]: ...
    def counts(self) -> dict[str, dict[str, int]]: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def delete_generator(self, generator: str, origin: str | None = None) -> int: ...
    def metadata(self) -> dict[str, Any]: ...
    def set_metadata(self, values: Mapping[str, Any]) -> None: ...


class QdrantStore:
    """:class:`VectorStore` on qdrant-client: a server when ``cfg.url`` is set, else embedded.

    Args:
        cfg: where the store is.
        model_version: the version of the encoder whose embeddings go in / are queried.
        dim: embedding size D.
        create: create the collection when it does not exist (index builds, enrollment);
            False raises :class:`StoreError` instead (query-only users).
    Raises:
        StoreError: the collection was built by another model version or with another
            embedding size, or does not exist and ``create`` is False.
    """

    def __init__(self, cfg: StoreConfig, model_version: str, dim: int, create: bool = True) -> None:
        from qdrant_client import QdrantClient

        self.cfg = cfg
        self.model_version = model_version
        self.dim = dim
        self.collection = collection_name(cfg, model_version)
        if cfg.url:
            self.client = QdrantClient(url=cfg.url, api_key=os.environ.get(cfg.api_key_env) or None,
                                       timeout=cfg.timeout_s)
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
        self._matrix: tuple[np.ndarray, np.ndarray, list[Neighbour]] | None = None  # embedded: exact scoring
        try:
            self._open(create)
        except Exception:
            self.client.close()  # release the embedded folder's lock for whoever comes next
            raise

    def where(self) -> str:
        return self.cfg.url or str(Path(self.cfg.path).resolve())

    def _open(self, create: bool) -> None:
        from qdrant_client import models as qm

        if not self.client.collection_exists(self.collection):
            if not create:
                raise StoreError(f"no collection {self.collection!r} at {self.where()}: build the index for "
                                 f"model version {self.model_version} first (synthray index)")
            self.client.create_collection(
                self.collection,
                vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
                metadata={"model_version": self.model_version, "dim": self.dim, "created_at": time.time()},
            )
            if not self.embedded:  # payload indexes only exist on a server
                kinds = {"keyword": qm.PayloadSchemaType.KEYWORD, "bool": qm.PayloadSchemaType.BOOL}
                for field, kind in INDEXED_FIELDS.items():
                    self.client.create_payload_index(self.collection, field, kinds[kind])
            log.info("created collection %s at %s", self.collection, self.where())
            return
        meta = self.metadata()
        stored = meta.get("model_version")
        if stored != self.model_version:
            raise StoreError(
                f"collection {self.collection!r} at {self.where()} holds embeddings of model version "
                f"{stored!r}, not {self.model_version!r}: embeddings of different weights cannot be "
                "compared; rebuild the index with this checkpoint or query with the matching one"
            )
        if int(meta.get("dim", self.dim)) != self.dim:
            raise StoreError(f"collection {self.collection!r} has dimension {meta.get('dim')}, encoder gives {self.dim}")

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, vectors: np.ndarray, refs: Sequence[Reference]) -> list[str]:
        """Writes (or overwrites) one point per reference; returns their ids.

        Args:
            vectors: (N, D) float embeddings.
            refs: N payloads.
        """
        from qdrant_client import models as qm

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(refs):
            raise ValueError(f"expected ({len(refs)}, {self.dim}) vectors, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("non-finite embedding values")
        for r in refs:
            if r.origin not in (*ORIGINS, CALIBRATION):
                raise ValueError(f"origin must be one of {(*ORIGINS, CALIBRATION)}, got {r.origin!r}")
        # A calibration photograph never shares a point with a reference of the same bytes.
        self._matrix = None
        ids = [point_id(self.model_version, f"{CALIBRATION}:{r.content_hash}" if r.origin == CALIBRATION
                        else r.content_hash) for r in refs]
        step = self.cfg.upsert_batch
        for s in range(0, len(ids), step):
            points = [qm.PointStruct(id=i, vector=v.tolist(), payload=r.payload())
                      for i, v, r in zip(ids[s:s + step], vectors[s:s + step], refs[s:s + step])]
            self.client.upsert(self.collection, points=points, wait=True)
        return ids

    def delete(self, ids: Sequence[str]) -> None:
        from qdrant_client import models as qm

        self._matrix = None
        if ids:
            self.client.delete(self.collection, points_selector=qm.PointIdsList(points=list(ids)), wait=True)

    def delete_generator(self, generator: str, origin: str | None = None) -> int:
        """Deletes a generator's references (only one origin's when given); returns how many."""
        self._matrix = None
        flt = self._filter(generator=generator, origin=origin) if origin else self._filter(generator=generator,
                                                                                          origin_in=ORIGINS)
        n = self.client.count(self.collection, count_filter=flt, exact=True).count
        if n:
            from qdrant_client import models as qm

            self.client.delete(self.collection, points_selector=qm.FilterSelector(filter=flt), wait=True)
        return n

    def set_metadata(self, values: Mapping[str, Any]) -> None:
        """Merges ``values`` into the collection's metadata (calibrated thresholds live here)."""
        self.client.update_collection(self.collection, metadata=dict(values))

    # -- reads ----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return dict(self.client.get_collection(self.collection).config.metadata or {})

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        found: set[str] = set()
        for s in range(0, len(ids), 1024):
            found.update(str(p.id) for p in self.client.retrieve(self.collection, ids=list(ids[s:s + 1024]),
                                                                 with_payload=False, with_vectors=False))
        return found

    def count(self) -> int:
        """References stored (trained and enrolled; calibration photographs are not references)."""
        return self.client.count(self.collection, count_filter=self._references_only(), exact=True).count

    def counts(self) -> dict[str, dict[str, int]]:
        """References per generator, split by origin: {generator: {"trained": n, "enrolled": m}}."""
        out: dict[str, dict[str, int]] = {}
        for origin in ORIGINS:
            hits = self.client.facet(self.collection, key="generator", facet_filter=self._filter(origin=origin),
                                     limit=100_000, exact=True).hits
            for h in hits:
                out.setdefault(str(h.value), {o: 0 for o in ORIGINS})[origin] = h.count
        return dict(sorted(out.items()))

    def search(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The k most similar references of each query, most similar first.

        Args:
            vectors: (N, D) query embeddings.
            k: neighbours per query.
        """
        from qdrant_client import models as qm

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) query vectors, got {vectors.shape}")
        if self.embedded:
            return self._search_exact(vectors, k)
        fields = ["generator", "is_real", "origin", "source_path"]
        requests = [qm.QueryRequest(query=v.tolist(), limit=k, with_payload=fields, filter=self._references_only())
                    for v in vectors]
        out = []
        for s in range(0, len(requests), 256):
            for resp in self.client.query_batch_points(self.collection, requests=requests[s:s + 256]):
                out.append([Neighbour(id=str(p.id), similarity=float(p.score), generator=p.payload["generator"],
                                      is_real=bool(p.payload["is_real"]), origin=p.payload.get("origin", "trained"),
                                      source_path=p.payload.get("source_path", "")) for p in resp.points])
        return out

    def class_hits(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]:
        """Each query's similarities to the ``k`` nearest references of every class.

        The per-class scores of :mod:`synthray.attribution.rule` need each class's own
        neighbours, not the k nearest overall (one tight class would crowd out the rest):
        one grouped query per image (Qdrant's group_by on ``generator``).

        Args:
            vectors: (N, D) query embeddings.
            k: references per class.
        Returns:
            per query ``{generator: similarities, most similar first}``.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) query vectors, got {vectors.shape}")
        if self.embedded:
            return self._class_hits_exact(vectors, k)
        groups = max(1, len(self.counts()))
        out = []
        for v in vectors:
            resp = self.client.query_points_groups(self.collection, query=v.tolist(), group_by="generator",
                                                   group_size=k, limit=groups, with_payload=False,
                                                   query_filter=self._references_only())
            out.append({str(g.id): [float(p.score) for p in g.hits] for g in resp.groups})
        return out

    def _references(self) -> tuple[np.ndarray, np.ndarray, list[Neighbour]]:
        """Unit reference vectors, their generators, and each as a neighbour record (cached)."""
        # Embedded qdrant-client searches by brute force in Python (about 0.1 s per grouped query
        # at a few thousand points): exact numpy over the cached reference matrix gives the same
        # neighbours in microseconds. The cache is dropped by every write.
        if self._matrix is None:
            refs, payloads, ids = self._scroll(self._references_only())
            norms = np.linalg.norm(refs, axis=1, keepdims=True)
            labels = np.asarray([str(p["generator"]) for p in payloads], dtype=object)
            records = [Neighbour(id=i, similarity=0.0, generator=str(p["generator"]), is_real=bool(p["is_real"]),
                                 origin=p.get("origin", "trained"), source_path=p.get("source_path", ""))
                       for i, p in zip(ids, payloads)]
            self._matrix = (refs / np.maximum(norms, 1e-12), labels, records)
        return self._matrix

    def _similarities(self, vectors: np.ndarray) -> np.ndarray:
        refs = self._references()[0]
        q = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return q.astype(np.float64) @ refs.T.astype(np.float64)

    def _search_exact(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        records = self._references()[2]
        if not records:
            return [[] for _ in range(len(vectors))]
        sims = self._similarities(vectors)
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out = []
        for i, row in enumerate(top):
            order = row[np.argsort(-sims[i, row], kind="stable")]
            out.append([dataclasses.replace(records[j], similarity=float(sims[i, j])) for j in order])
        return out

    def _class_hits_exact(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]:
        refs, labels, _ = self._references()
        if not len(refs):
            return [{} for _ in range(len(vectors))]
        sims = self._similarities(vectors)
        out: list[dict[str, list[float]]] = [{} for _ in range(len(sims))]
        for name in sorted(set(labels)):
            cols = np.flatnonzero(labels == name)
            kk = min(k, len(cols))
            part = sims[:, cols]
            top = -np.sort(-np.partition(part, len(cols) - kk, axis=1)[:, len(cols) - kk:], axis=1)
            for i in range(len(sims)):
                out[i][name] = top[i].tolist()
        return out

    def calibration_vectors(self) -> np.ndarray:
        """The real calibration photographs' embeddings stored with the index, (R, D)."""
        return self.vectors(origin=CALIBRATION)[0]

    def nearest_vectors(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray:
        """The vectors of ``generator``'s ``k`` references most similar to one query, (<=k, D).

        An explanation of "why this generator" looks toward these: the class's references
        nearest the image, whether or not they were among its overall neighbours.
        """
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}-d query vector, got {vector.shape[0]}-d")
        points = self.client.query_points(self.collection, query=vector.tolist(), limit=k, with_vectors=True,
                                          with_payload=False,
                                          query_filter=self._filter(generator=generator, origin_in=ORIGINS)).points
        return np.asarray([p.vector for p in points], dtype=np.float32).reshape(-1, self.dim)

    def vectors(self, generator: str | None = None, origin: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every stored reference vector (of one generator) with its payload: for exact checks
        and plots; ``origin="calibration"`` gives the calibration photographs instead."""
        flt = self._filter(generator=generator, origin=origin) if origin else self._filter(generator=generator,
                                                                                          origin_in=ORIGINS)
        vecs, payloads, _ = self._scroll(flt)
        return vecs, payloads

    def _scroll(self, flt: Any) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
        vecs, payloads, ids, offset = [], [], [], None
        while True:
            points, offset = self.client.scroll(self.collection, scroll_filter=flt,
                                                limit=1024, offset=offset, with_vectors=True, with_payload=True)
            for p in points:
                vecs.append(p.vector)
                payloads.append(p.payload)
                ids.append(str(p.id))
            if offset is None:
                break
        return np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim), payloads, ids

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "QdrantStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def _filter(origin_in: Sequence[str] | None = None, **fields: Any):
        from qdrant_client import models as qm

        must = [qm.FieldCondition(key=k, match=qm.MatchValue(value=v)) for k, v in fields.items() if v is not None]
        if origin_in is not None:
            must.append(qm.FieldCondition(key="origin", match=qm.MatchAny(any=list(origin_in))))
        return qm.Filter(must=must) if must else None

    def _references_only(self):
        return self._filter(origin_in=ORIGINS)


def open_store(cfg: StoreConfig, model_version: str, dim: int, create: bool = True) -> QdrantStore:
    """The configured store for a model version (see :class:`QdrantStore`)."""
    return QdrantStore(cfg, model_version, dim, create=create)


def references_from_rows(rows: Mapping[str, Iterable[Any]], origin: str = "trained") -> list[Reference]:
    """Shard label columns (generator, is_real, content_hash, ...) -> references."""
    cols = {k: list(v) for k, v in rows.items()}
    n = len(cols["content_hash"])
    get = lambda name, i, default="": cols[name][i] if name in cols else default  # noqa: E731
    return [Reference(generator=str(cols["generator"][i]), is_real=bool(cols["is_real"][i]),
                      content_hash=str(cols["content_hash"][i]), split=str(get("split", i)),
                      dataset=str(get("dataset", i)), source_path=str(get("source_path", i)), origin=origin)
            for i in range(n)]
