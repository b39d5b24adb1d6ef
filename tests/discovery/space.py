"""A synthetic embedding space shaped like a trained encoder's: every generator shares an
"AI" direction that real photographs point away from, and each class has its own direction.

A family the index does not hold then looks generated (flagged) but near no known generator,
which is what an encoder that separates it gives (the issue on detection quality): the
answers are ``unknown``. The vectors stand in for the encoder so that the discovery logic is
judged on its own; tests/serve/test_app.py runs the same flow on the real tiny encoder.
"""

from __future__ import annotations

import hashlib

import numpy as np

from synthray.index import Reference, StoreConfig
from synthray.index.edge_store import EdgeStore
from synthray.index.store import CALIBRATION

DIM, VERSION = 32, "space-v1"
TRAINED = ("real", "gan-a", "gan-b", "gan-c")
K = 5


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def centre(name: str) -> np.ndarray:
    """The class direction: 0.6 along (or, for real, against) the shared AI axis."""
    ai = _unit(np.random.default_rng(999).normal(size=DIM))
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    own = _unit(np.random.default_rng(seed).normal(size=DIM))
    return _unit((-0.6 if name == "real" else 0.6) * ai + 0.8 * own)


def images(name: str, n: int, start: int = 0, spread: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """``n`` embeddings of class ``name`` (the ``start``-th on) and their content hashes."""
    rows = [
        centre(name) + spread * np.random.default_rng([start + i, len(name), ord(name[-1])]).normal(size=DIM)
        for i in range(n)
    ]
    hashes = [hashlib.sha256(f"{name}-{start + i}".encode()).hexdigest() for i in range(n)]
    return _unit(np.asarray(rows)).astype(np.float32), hashes


def stray(n: int, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """One-off images: each on the AI side of the space in a direction of its own."""
    ai = _unit(np.random.default_rng(999).normal(size=DIM))
    own = _unit(np.random.default_rng(seed).normal(size=(n, DIM)))
    hashes = [hashlib.sha256(f"stray-{seed}-{i}".encode()).hexdigest() for i in range(n)]
    return _unit(0.6 * ai + 0.8 * own).astype(np.float32), hashes


def calibrated_store(path) -> EdgeStore:
    """40 references per trained class, thresholds calibrated on 30 validation images each,
    the real validation images kept as calibration points (as ``synthray index`` does)."""
    from synthray.attribution.rule import calibrate, class_scores

    store = EdgeStore(StoreConfig(path=str(path)), VERSION, DIM)
    for g in TRAINED:
        v, h = images(g, 40)
        store.upsert(v, [Reference(g, g == "real", x) for x in h])
    val = {g: images(g, 30, start=1000) for g in TRAINED}
    q = np.concatenate([v for v, _ in val.values()])
    truth = [g for g, (v, _) in val.items() for _ in v]
    t = calibrate(class_scores(store.class_hits(q, K)), truth, 0.05, 0.05, K)
    store.set_metadata({"thresholds": t.to_dict(), "attribution": {"k": K}})
    v, h = val["real"]
    store.upsert(v, [Reference("real", True, x, origin=CALIBRATION) for x in h])
    return store
