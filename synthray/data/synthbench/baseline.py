"""The trivial colour baseline every benchmark summary reports.

Per-channel mean and standard deviation plus per-channel colour histograms, standardised, into
a logistic regression: if this separates the classes, the benchmark measures colour casts, not
generator fingerprints. It runs on any plain ``<root>/<label>/<image>`` tree, evaluated on a
deterministic stratified held-out part, with chance levels alongside, for

* real vs fake (every non-real label is "fake"): balanced accuracy and ROC AUC;
* attribution (one class per label, real included): accuracy and balanced accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from synthray.data.generators import normalize_generator
from synthray.data.schema import REAL

logger = logging.getLogger(__name__)

#: Suffixes read as images by the probes.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
#: Share of every class held out for evaluation.
TEST_FRACTION = 0.3
#: Histogram bins per channel.
HIST_BINS = 16


def scan_labelled_tree(root: str | Path, max_per_class: int | None = None) -> tuple[list[Path], list[str]]:
    """Image files of a plain ``<root>/<label>/**/<file>`` tree, sorted (hidden names skipped).

    Args:
        root: the folder holding one sub-folder per label (files may sit in sub-folders of it,
            such as synthbench's split folders).
        max_per_class: keep at most this many files of each label, evenly spaced over its
            sorted files (so every split folder is represented); None keeps all.
    Returns:
        ``(paths, labels)`` in label then path order.
    Raises:
        ValueError: if there are fewer than two labels with images.
    """
    root = Path(root)
    paths: list[Path] = []
    labels: list[str] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            path
            for path in label_dir.rglob("*")
            if path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in path.relative_to(label_dir).parts)
        )
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in np.linspace(0, len(files) - 1, max_per_class).round().astype(int)]
        paths += files
        labels += [label_dir.name] * len(files)
    if len(set(labels)) < 2:
        raise ValueError(f"{root}: need images under at least two <label>/ folders, found {sorted(set(labels))}")
    return paths, labels


def colour_features(img: np.ndarray) -> np.ndarray:
    """Size-independent colour statistics of one image.

    Args:
        img: ``(H, W, 3)`` uint8 RGB.
    Returns:
        ``(6 + 3 * HIST_BINS,)`` float64: per-channel mean and std (in [0, 1]) and normalised
        per-channel histograms over equal ranges of the 0..255 codes.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {img.dtype} {img.shape}")
    pixels = img.reshape(-1, 3)
    values = pixels.astype(np.float64) / 255.0
    bins = pixels.astype(np.int64) * HIST_BINS // 256  # bincount: far cheaper than np.histogram
    hists = [np.bincount(bins[:, c], minlength=HIST_BINS) / len(pixels) for c in range(3)]
    return np.concatenate([values.mean(axis=0), values.std(axis=0), *hists])


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def linear_probe(features: np.ndarray, labels: list[str], seed: int = 0, c: float = 1.0) -> dict[str, object]:
    """Logistic regression on a deterministic stratified split, both tasks.

    Args:
        features: ``(N, D)`` one row per image.
        labels: ``N`` label names; names that normalise to ``"real"`` are the real class.
        seed: split seed.
        c: inverse L2 regularisation strength.
    Returns:
        ``{"split", "real_vs_fake", "attribution"}``; ``real_vs_fake`` is ``None`` when there is
        no real class or no fake class.
    """
    y = np.asarray(labels)
    if len(features) != len(y):
        raise ValueError(f"{len(features)} feature rows for {len(y)} labels")
    # One BLAS thread: these problems are small, and on a busy machine multi-threaded BLAS
    # inside the solver's many tiny products is 10-30x slower, not faster.
    with threadpool_limits(limits=1):
        return _fit_and_score(features, y, labels, seed, c)


def _fit_and_score(features: np.ndarray, y: np.ndarray, labels: list[str], seed: int, c: float) -> dict[str, object]:
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=seed, stratify=y)
    x_train, x_test = features[idx_train], features[idx_test]

    def fit(targets: np.ndarray, **kwargs: object) -> object:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, **kwargs))
        return model.fit(x_train, targets[idx_train])

    is_real = np.array([normalize_generator(label) == REAL for label in labels])
    binary: dict[str, float] | None = None
    if is_real.any() and not is_real.all():
        fake = ~is_real
        model = fit(fake, class_weight="balanced")  # real is outnumbered by the fakes
        pred = model.predict(x_test)
        score = model.predict_proba(x_test)[:, 1]
        binary = {
            "balanced_accuracy": round(float(balanced_accuracy_score(fake[idx_test], pred)), 4),
            "roc_auc": round(float(roc_auc_score(fake[idx_test], score)), 4),
            "chance": 0.5,
        }
    model = fit(y)
    pred = model.predict(x_test)
    classes = sorted(set(labels))
    counts = np.array([np.sum(y[idx_test] == k) for k in classes])
    recall = recall_score(y[idx_test], pred, labels=classes, average=None, zero_division=0)
    attribution = {
        "accuracy": round(float(np.mean(pred == y[idx_test])), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(y[idx_test], pred)), 4),
        "chance_accuracy": round(float(counts.max() / counts.sum()), 4),  # always the majority class
        "chance_balanced_accuracy": round(1.0 / len(classes), 4),
        "n_classes": len(classes),
        "recall_per_class": {k: round(float(r), 4) for k, r in zip(classes, recall)},
    }
    return {
        "split": {
            "test_fraction": TEST_FRACTION,
            "seed": seed,
            "n_train": len(idx_train),
            "n_test": len(idx_test),
        },
        "real_vs_fake": binary,
        "attribution": attribution,
    }


@dataclasses.dataclass(frozen=True)
class Probe:
    """A feature extractor and the linear probe's settings, with their description."""

    featurize: Callable[[np.ndarray], np.ndarray | None]  # uint8 (H, W, 3) -> vector, None = leave out
    c: float  # inverse L2 strength of the logistic regression
    features: str  # what the features are (goes into the result)

    def describe(self, result: dict[str, object]) -> dict[str, object]:
        """``result`` of :func:`linear_probe` with the feature and classifier description first."""
        return {
            "features": self.features,
            "classifier": f"StandardScaler + LogisticRegression(C={self.c})",
            **result,
        }


COLOUR_PROBE = Probe(
    colour_features,
    c=1.0,
    features=f"per-channel mean/std + {HIST_BINS}-bin per-channel colour histograms ({6 + 3 * HIST_BINS}-d)",
)


def probe_tree(
    root: str | Path, probes: Sequence[Probe], seed: int = 0, max_per_class: int | None = None
) -> list[dict[str, object]]:
    """Runs several probes on a labelled tree, reading every image once.

    Args:
        root: ``<root>/<label>/<image>`` tree.
        probes: feature extractors with their probe settings.
        seed: split seed, shared by all probes.
        max_per_class: images read per label at most (see :func:`scan_labelled_tree`).
    Returns:
        one :func:`linear_probe` result per probe, described, with ``n_images`` (used) and
        ``n_skipped`` (left out by the extractor).
    """
    paths, labels = scan_labelled_tree(root, max_per_class)
    rows: list[list[np.ndarray]] = [[] for _ in probes]
    kept: list[list[str]] = [[] for _ in probes]
    for path, label in zip(paths, labels):
        img = _load_rgb(path)
        for probe, probe_rows, probe_kept in zip(probes, rows, kept):
            feats = probe.featurize(img)
            if feats is not None:
                probe_rows.append(feats)
                probe_kept.append(label)
    results = []
    for probe, probe_rows, probe_kept in zip(probes, rows, kept):
        if len(set(probe_kept)) < 2:
            raise ValueError(f"{root}: fewer than two labels left after feature extraction")
        result = linear_probe(np.stack(probe_rows), probe_kept, seed=seed, c=probe.c)
        result["n_images"] = len(probe_kept)
        result["n_skipped"] = len(paths) - len(probe_kept)
        results.append(probe.describe(result))
    return results


def log_result(name: str, root: str | Path, result: dict[str, object]) -> None:
    """One INFO line with the headline numbers of a probe result."""
    attribution = result["attribution"]
    logger.info(
        "%s on %s: real-vs-fake balanced acc %s (chance 0.5), attribution acc %s (chance %s)",
        name,
        root,
        (result["real_vs_fake"] or {}).get("balanced_accuracy"),
        attribution["accuracy"],
        attribution["chance_balanced_accuracy"],
    )


def trivial_baseline(root: str | Path, seed: int = 0) -> dict[str, object]:
    """The colour-statistics baseline on a plain labelled folder tree.

    Args:
        root: ``<root>/<label>/<image>``; a label normalising to ``"real"`` is the real class.
        seed: seed of the stratified 70/30 split.
    Returns:
        ``{"features", "classifier", "split", "real_vs_fake", "attribution", "n_images",
        "n_skipped"}`` with chance levels inside each task (see :func:`linear_probe`).
    """
    (result,) = probe_tree(root, [COLOUR_PROBE], seed=seed)
    log_result("colour baseline", root, result)
    return result
