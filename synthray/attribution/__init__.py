"""Attribution from nearest neighbours in the embedding space (runs without Ray)."""

from synthray.attribution.knn import KnnResult, knn_classify, knn_search

__all__ = ["KnnResult", "knn_classify", "knn_search"]
