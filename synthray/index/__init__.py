"""The reference index: embeddings tagged by generator, in Qdrant (embedded or server)."""

from synthray.index.config import IndexConfig, StoreConfig
from synthray.index.store import (
    Neighbour,
    QdrantStore,
    Reference,
    StoreError,
    VectorStore,
    open_store,
    point_id,
    references_from_rows,
)

__all__ = ["IndexConfig", "Neighbour", "QdrantStore", "Reference", "StoreConfig", "StoreError", "VectorStore",
           "open_store", "point_id", "references_from_rows"]
