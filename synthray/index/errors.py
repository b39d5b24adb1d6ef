"""The vector store's error, shared by the store, its engines and the collection helpers."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot do what was asked (wrong model version, missing collection, ...)."""
