"""The reference index: embeddings tagged by generator, in Qdrant (Qdrant Edge embedded, or a server)."""

from synthray.index.config import IndexConfig, StoreConfig
from synthray.index.store import (
    BaseStore,
    Neighbour,
    Reference,
    StoreError,
    VectorStore,
    open_store,
    point_id,
    references_from_rows,
)

__all__ = [
    "BaseStore",
    "IndexConfig",
    "Neighbour",
    "Reference",
    "StoreConfig",
    "StoreError",
    "VectorStore",
    "open_store",
    "point_id",
    "references_from_rows",
]
