"""Reference embeddings behind one small typed interface, on two Qdrant engines.

- :class:`~synthray.index.edge_store.EdgeStore` (the embedded default): Qdrant Edge, Qdrant's
  own engine in this process (``qdrant-edge-py``), one shard directory per collection.
- :class:`~synthray.index.client_store.QdrantStore`: a Qdrant server through qdrant-client
  (``store.url``; Kubernetes), or qdrant-client's local mode (``store.engine: client-local``,
  which the tests use as the server's stand-in).

One collection per model version (cosine distance): embeddings from different weights live in
different spaces and must never be compared, so a collection records the model version that
filled it and refuses queries from any other. Point ids are derived from (model version,
content hash): indexing the same image twice writes the same point, so re-running or resuming
a build never duplicates, and re-enrolling the same files changes nothing.

Searches are exact below ``store.exact_max`` references (numpy over a cached matrix: the
reference index is small by design, 50 per class) and the engine's HNSW above it. The cache
follows the collection's revision, which every write bumps, so a reader sees a write from its
next query on.

An embedded store lets ONE process open its folder. In a Ray program exactly one process owns
it: the driver of ``build_index`` (embedding actors only return vectors), and the index-owner
deployment of the Serve app. Everything else asks that owner.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Iterable, Mapping, Protocol, Self, Sequence

import numpy as np

from synthray.index.collections import collection_name, resolve_alias
from synthray.index.config import StoreConfig
from synthray.index.errors import StoreError

#: Where a reference came from: the training data (``trained``) or few-shot enrollment.
ORIGINS = ("trained", "enrolled")
#: Points that are no references: the real validation photographs the is-AI threshold was
#: calibrated on, kept so that an enrollment can check it does not flag them.
CALIBRATION = "calibration"
#: Payload fields that are filtered on (indexed where the engine supports it).
INDEXED_FIELDS = ("generator", "origin", "split", "content_hash")
_ID_NAMESPACE = uuid.UUID("5f0b7e9c-61d5-4a8e-9a57-7d2f8c0e4b11")
#: Metadata key of the write counter that tells readers their cached references are stale.
REVISION = "revision"


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


@dataclasses.dataclass(frozen=True)
class Where:
    """A payload filter every engine translates: one generator, one origin, or a set of origins."""

    generator: str | None = None
    origin: str | None = None
    origins: tuple[str, ...] | None = None


#: References only (calibration photographs are never neighbours nor counted as references).
REFERENCES = Where(origins=ORIGINS)


def point_id(model_version: str, content_hash: str) -> str:
    """The deterministic point id of an image under a model version (a UUID, as Qdrant wants)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{model_version}:{content_hash}"))


class VectorStore(Protocol):
    """What the attribution service needs from a vector store."""

    model_version: str
    dim: int
    collection: str

    def upsert(self, vectors: np.ndarray, refs: Sequence[Reference]) -> list[str]: ...
    def search(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]: ...
    def class_hits(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]: ...
    def query(self, vectors: np.ndarray, k: int) -> tuple[list[dict[str, list[float]]], list[list[Neighbour]]]: ...
    def counts(self) -> dict[str, dict[str, int]]: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def delete_generator(self, generator: str, origin: str | None = None) -> int: ...
    def metadata(self) -> dict[str, Any]: ...
    def set_metadata(self, values: Mapping[str, Any]) -> None: ...


class BaseStore:
    """What both engines share: validation, ids, exact scoring over a cached matrix, the
    revision counter. An engine implements the primitives (``_upsert`` ... ``_native_search``).

    Args:
        cfg: where the store is and how it searches.
        model_version: the encoder version whose embeddings go in / are queried.
        dim: embedding size D.
    """

    embedded: bool = True
    #: Whether writes bump the revision readers follow. Off for collections that hold no
    #: references (the discovery inbox): a metadata write per recorded answer would buy nothing.
    track_revision: bool = True

    def __init__(self, cfg: StoreConfig, model_version: str, dim: int) -> None:
        self.cfg = cfg
        self.model_version = model_version
        self.dim = dim
        self.collection = collection_name(cfg, model_version)
        self._matrix: tuple[int, np.ndarray, dict[str, np.ndarray], list[Neighbour]] | None = None
        self._size: tuple[int, int] | None = None  # (revision, references)

    # -- engine primitives ------------------------------------------------------------------
    def where(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def metadata(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _write_metadata(self, values: Mapping[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _delete_ids(self, ids: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _delete_where(self, where: Where) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _count(self, where: Where | None) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _generator_counts(self, where: Where) -> dict[str, int]:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _scroll_page(self, where: Where, offset: Any, limit: int) -> tuple[list[tuple[str, Any, dict]], Any]:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _retrieve_page(self, ids: list[str], with_vectors: bool = False) -> list[tuple[str, Any, dict]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def _native_search(
        self, vectors: np.ndarray, k: int, where: Where
    ) -> list[list[tuple[str, float, dict[str, Any]]]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    def close(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement this store primitive")

    # -- paging over the primitives ---------------------------------------------------------
    def _scroll(self, where: Where) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
        """Every point matching ``where``: (vectors (N, D), payloads, ids)."""
        blocks: list[np.ndarray] = []
        payloads: list[dict[str, Any]] = []
        ids: list[str] = []
        offset: Any = None
        while True:
            page, offset = self._scroll_page(where, offset, 1024)
            # One float32 block per page: a million references as Python floats would take GBs.
            blocks.append(np.asarray([v for _, v, _ in page], dtype=np.float32).reshape(-1, self.dim))
            ids.extend(i for i, _, _ in page)
            payloads.extend(p for _, _, p in page)
            if offset is None:
                break
        return np.concatenate(blocks), payloads, ids

    def _retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[tuple[str, Any, dict]]:
        """``(id, vector or None, payload)`` of the ids that are stored."""
        ids = list(ids)
        return [row for s in range(0, len(ids), 1024) for row in self._retrieve_page(ids[s : s + 1024], with_vectors)]

    # -- the interface ----------------------------------------------------------------------
    def _check_open(self, create: bool, exists: bool, create_fn: Any) -> None:
        """Creates the collection, or checks that the existing one is this model version's."""
        if not exists:
            if not create:
                raise StoreError(
                    f"no collection {self.collection!r} at {self.where()}: build the index for "
                    f"model version {self.model_version} first (synthray index)"
                )
            create_fn()
            self._write_metadata(
                {
                    "model_version": self.model_version,
                    "dim": self.dim,
                    "collection": self.collection,
                    "created_at": time.time(),
                    REVISION: 0,
                }
            )
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
            raise StoreError(
                f"collection {self.collection!r} has dimension {meta.get('dim')}, encoder gives {self.dim}"
            )

    def set_metadata(self, values: Mapping[str, Any]) -> None:
        """Merges ``values`` into the collection's metadata (calibrated thresholds live here)."""
        self._write_metadata(dict(values))
        self._bump()

    def _bump(self) -> None:
        self._matrix = None
        if not self.track_revision:
            return
        meta = self.metadata()
        self._write_metadata({REVISION: int(meta.get(REVISION, 0)) + 1})

    def upsert(self, vectors: np.ndarray, refs: Sequence[Reference]) -> list[str]:
        """Writes (or overwrites) one point per reference; returns their ids.

        Args:
            vectors: (N, D) float embeddings.
            refs: N payloads.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(refs):
            raise ValueError(f"expected ({len(refs)}, {self.dim}) vectors, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("non-finite embedding values")
        for r in refs:
            if r.origin not in (*ORIGINS, CALIBRATION):
                raise ValueError(f"origin must be one of {(*ORIGINS, CALIBRATION)}, got {r.origin!r}")
        # A calibration photograph never shares a point with a reference of the same bytes.
        ids = [
            point_id(
                self.model_version, f"{CALIBRATION}:{r.content_hash}" if r.origin == CALIBRATION else r.content_hash
            )
            for r in refs
        ]
        self.put(ids, vectors, [r.payload() for r in refs])
        return ids

    def put(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Writes points with free-form payloads (collections that are not references, such as
        the discovery inbox; references go through :meth:`upsert`)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not (len(vectors) == len(ids) == len(payloads)):
            raise ValueError(
                f"expected ({len(ids)}, {self.dim}) vectors and as many payloads, got {vectors.shape}, "
                f"{len(payloads)} payloads"
            )
        if not np.isfinite(vectors).all():
            raise ValueError("non-finite embedding values")
        step = self.cfg.upsert_batch
        try:
            for s in range(0, len(ids), step):
                self._upsert(list(ids[s : s + step]), vectors[s : s + step], [dict(p) for p in payloads[s : s + step]])
        finally:
            self._bump()

    def points(self, where: Where | None = None) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
        """Every point matching ``where`` (all when None): (vectors (N, D), payloads, ids)."""
        return self._scroll(where if where is not None else Where())

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{id: payload}`` of the ids that are stored."""
        return {i: p for i, _, p in self._retrieve(ids)}

    def points_by_id(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """``{id: (vector, payload)}`` of the ids that are stored (a lookup, not a scan)."""
        return {i: (np.asarray(v, dtype=np.float32), p) for i, v, p in self._retrieve(ids, with_vectors=True)}

    def count_where(self, where: Where | None = None) -> int:
        """Points matching ``where`` (all when None)."""
        return self._count(where)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            try:
                self._delete_ids(list(ids))
            finally:
                self._bump()

    def delete_generator(self, generator: str, origin: str | None = None) -> int:
        """Deletes a generator's references (only one origin's when given); returns how many."""
        where = Where(generator=generator, origin=origin) if origin else Where(generator=generator, origins=ORIGINS)
        n = self._count(where)
        if n:
            try:
                self._delete_where(where)
            finally:
                self._bump()
        return n

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        return {i for i, _, _ in self._retrieve(ids)}

    def stored_labels(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{id: (generator, origin)}`` of the ids already stored."""
        return {i: (str(p.get("generator")), str(p.get("origin", "trained"))) for i, _, p in self._retrieve(ids)}

    def count(self) -> int:
        """References stored (trained and enrolled; calibration photographs are not references)."""
        return self._count(REFERENCES)

    def total_points(self) -> int:
        return self._count(None)

    def counts(self) -> dict[str, dict[str, int]]:
        """References per generator, split by origin: {generator: {"trained": n, "enrolled": m}}."""
        out: dict[str, dict[str, int]] = {}
        for origin in ORIGINS:
            for name, n in self._generator_counts(Where(origin=origin)).items():
                if n:
                    out.setdefault(name, {o: 0 for o in ORIGINS})[origin] = n
        return dict(sorted(out.items()))

    def vectors(
        self, generator: str | None = None, origin: str | None = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every stored reference vector (of one generator) with its payload, for exact checks
        and plots; ``origin="calibration"`` gives the calibration photographs instead."""
        where = Where(generator=generator, origin=origin) if origin else Where(generator=generator, origins=ORIGINS)
        vecs, payloads, _ = self._scroll(where)
        return vecs, payloads

    def calibration_vectors(self) -> np.ndarray:
        """The real calibration photographs' embeddings stored with the index, (R, D)."""
        return self.vectors(origin=CALIBRATION)[0]

    def nearest_vectors(self, vector: np.ndarray, generator: str, k: int) -> np.ndarray:
        """The vectors of ``generator``'s ``k`` references most similar to one query, (<=k, D):
        what an explanation of "why this generator" looks toward."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}-d query vector, got {vector.shape[0]}-d")
        refs, _ = self.vectors(generator)
        if not len(refs):
            return refs
        sims = refs @ vector
        return refs[np.argsort(-sims, kind="stable")[:k]]

    # -- searches ---------------------------------------------------------------------------
    def _revision(self) -> int:
        return int(self.metadata().get(REVISION, 0))

    def _exact(self, revision: int) -> bool:
        # The reference count is read once per revision, not per query (a count is a scan).
        if self._size is None or self._size[0] != revision:
            self._size = (revision, self.count())
        return self._size[1] <= self.cfg.exact_max

    def _check_queries(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) query vectors, got {vectors.shape}")
        return vectors

    def _references(self, revision: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[Neighbour]]:
        """Unit reference vectors transposed (D, R), each class's columns, and the neighbour
        records, cached per revision."""
        if self._matrix is None or self._matrix[0] != revision:
            refs, payloads, ids = self._scroll(REFERENCES)
            norms = np.linalg.norm(refs, axis=1, keepdims=True)
            labels = np.asarray([str(p["generator"]) for p in payloads], dtype=object)
            records = [
                Neighbour(
                    id=i,
                    similarity=0.0,
                    generator=str(p["generator"]),
                    is_real=bool(p["is_real"]),
                    origin=p.get("origin", "trained"),
                    source_path=p.get("source_path", ""),
                )
                for i, p in zip(ids, payloads)
            ]
            unit_t = np.ascontiguousarray((refs / np.maximum(norms, 1e-12)).T, dtype=np.float32)
            # Each class's columns, found once per revision rather than per query.
            groups = {name: np.flatnonzero(labels == name) for name in sorted(set(labels.tolist()))}
            self._matrix = (revision, unit_t, groups, records)
        return self._matrix[1], self._matrix[2], self._matrix[3]

    @staticmethod
    def _similarities(vectors: np.ndarray, refs_t: np.ndarray) -> np.ndarray:
        q = (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        # float32 BLAS over the cached matrix (a per-query float64 copy of 100k references cost 5x the product)
        return (q @ refs_t).astype(np.float64)

    @staticmethod
    def _nearest(sims: np.ndarray, records: list[Neighbour], k: int) -> list[list[Neighbour]]:
        if not records:
            return [[] for _ in range(len(sims))]
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out = []
        for i, row in enumerate(top):
            order = row[np.argsort(-sims[i, row], kind="stable")]
            out.append([dataclasses.replace(records[j], similarity=float(sims[i, j])) for j in order])
        return out

    @staticmethod
    def _nearest_per_class(sims: np.ndarray, groups: dict[str, np.ndarray], k: int) -> list[dict[str, list[float]]]:
        out: list[dict[str, list[float]]] = [{} for _ in range(len(sims))]
        for name, cols in groups.items():
            kk = min(k, len(cols))
            top = -np.sort(-np.partition(sims[:, cols], len(cols) - kk, axis=1)[:, len(cols) - kk :], axis=1)
            for i in range(len(sims)):
                out[i][name] = top[i].tolist()
        return out

    def _native_neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        return [
            [
                Neighbour(
                    id=i,
                    similarity=float(s),
                    generator=p["generator"],
                    is_real=bool(p["is_real"]),
                    origin=p.get("origin", "trained"),
                    source_path=p.get("source_path", ""),
                )
                for i, s, p in hits
            ]
            for hits in self._native_search(vectors, k, REFERENCES)
        ]

    def _native_class_hits(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]:
        out: list[dict[str, list[float]]] = [{} for _ in range(len(vectors))]
        for name in self.counts():
            for i, hits in enumerate(self._native_search(vectors, k, Where(generator=name, origins=ORIGINS))):
                out[i][name] = [s for _, s, _ in hits]
        return out

    def query(self, vectors: np.ndarray, k: int) -> tuple[list[dict[str, list[float]]], list[list[Neighbour]]]:
        """What an attribution needs, from one similarity product: each query's
        :meth:`class_hits` and its :meth:`search` neighbours."""
        vectors = self._check_queries(vectors)
        revision = self._revision()
        if not self._exact(revision):
            return self._native_class_hits(vectors, k), self._native_neighbours(vectors, k)
        refs_t, groups, records = self._references(revision)
        sims = self._similarities(vectors, refs_t)
        return self._nearest_per_class(sims, groups, k), self._nearest(sims, records, k)

    def search(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The k most similar references of each query, most similar first (exact below
        ``exact_max`` references, the engine's HNSW above)."""
        vectors = self._check_queries(vectors)
        revision = self._revision()
        if not self._exact(revision):
            return self._native_neighbours(vectors, k)
        refs_t, _, records = self._references(revision)
        return self._nearest(self._similarities(vectors, refs_t), records, k)

    def class_hits(self, vectors: np.ndarray, k: int) -> list[dict[str, list[float]]]:
        """Each query's similarities to the ``k`` nearest references of every class.

        The per-class scores of :mod:`synthray.attribution.rule` need each class's own
        neighbours, not the k nearest overall (one tight class would crowd out the rest).

        Returns:
            per query ``{generator: similarities, most similar first}``.
        """
        vectors = self._check_queries(vectors)
        revision = self._revision()
        if not self._exact(revision):
            return self._native_class_hits(vectors, k)
        refs_t, groups, _ = self._references(revision)
        return self._nearest_per_class(self._similarities(vectors, refs_t), groups, k)

    def set_alias(self, alias: str) -> str | None:
        """Points ``alias`` at this collection; returns the collection it named before (None: unset)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(cfg: StoreConfig, model_version: str, dim: int, create: bool = True) -> BaseStore:
    """The configured store for a model version: a Qdrant server when ``cfg.url`` is set, else
    the embedded engine ``cfg.engine`` (Qdrant Edge by default) at ``cfg.path``. A
    ``cfg.collection`` that is an alias opens the collection it names."""
    if cfg.collection:
        target = resolve_alias(cfg, cfg.collection)
        if target is not None:
            cfg = dataclasses.replace(cfg, collection=target)
    if cfg.url or cfg.engine == "client-local":
        from synthray.index.client_store import QdrantStore

        return QdrantStore(cfg, model_version, dim, create=create)
    if cfg.engine != "edge":
        raise ValueError(f"unknown store.engine {cfg.engine!r}; use 'edge' or 'client-local'")
    from synthray.index.edge_store import EdgeStore

    return EdgeStore(cfg, model_version, dim, create=create)


def references_from_rows(rows: Mapping[str, Iterable[Any]], origin: str = "trained") -> list[Reference]:
    """Shard label columns (generator, is_real, content_hash, ...) -> references."""
    cols = {k: list(v) for k, v in rows.items()}
    n = len(cols["content_hash"])
    get = lambda name, i, default="": cols[name][i] if name in cols else default  # noqa: E731
    return [
        Reference(
            generator=str(cols["generator"][i]),
            is_real=bool(cols["is_real"][i]),
            content_hash=str(cols["content_hash"][i]),
            split=str(get("split", i)),
            dataset=str(get("dataset", i)),
            source_path=str(get("source_path", i)),
            origin=origin,
        )
        for i in range(n)
    ]
