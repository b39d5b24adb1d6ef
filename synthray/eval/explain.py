"""Explanations of a few test attributions for the evaluation report.

Each chosen test image is explained toward the class the service named (its vote winner,
``nearest_class``, when it answered "unknown"): the score is the cosine similarity of the
image's embedding to the unit mean of that class's references, the same references the
index holds (:func:`synthray.methods.explain.similarity_score`). Saliency says which
pixels the score is most sensitive to, LIME-style occlusion which superpixels it rests on.

The report keeps facts (classes, score, LIME fit and top superpixels, how concentrated
the saliency is); the maps themselves go only into ``explanations.png``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthray.data.schema import REAL
from synthray.eval.config import ExplainReportConfig
from synthray.eval.data import RowSet, iter_images
from synthray.eval.protocols import Protocol

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


@dataclasses.dataclass
class Explained:
    """One explained test image."""

    row: int  # index into the evaluated test rows
    role: str  # why it was picked (see pick_images)
    explained_class: str  # the class the attribution was explained toward
    image: np.ndarray  # (R, R, 3) float in [0, 1]: the encoder's input pixels, as the maps are aligned to it
    explanation: Any  # synthray.methods.explain.Explanation


def explained_class(attribution: Any) -> str:
    """The class an attribution is explained toward: its label, or its vote winner when "unknown"."""
    return attribution.nearest_class if attribution.label == UNKNOWN else attribution.label


def pick_images(
    truth: Sequence[str], predicted: Sequence[str], protocol: Protocol, n: int, usable: Sequence[bool] | None = None
) -> list[tuple[int, str]]:
    """Which test images to explain, deterministically.

    Roles, in this order, each taking the first image (test-row order: class, then content
    hash, so effectively a random draw that is the same every run) not already taken:

    1. ``seen, correct``: a seen generator's image the service named correctly;
    2. ``wrong``: an image the service got wrong (open-set truth: "unknown" for a class
       the index lacks), a seen class's if there is one;
    3. ``zero-shot``: an image of a class the encoder never trained on (a generator's first);
    4. ``real``: a real image;
    5. ``more``: then one image of each class in turn until ``n`` are picked.

    A role with no such image is skipped.

    Args:
        truth: (N,) true classes of the test rows.
        predicted: (N,) the service's answers.
        protocol: the resolved protocol.
        n: how many images at most.
        usable: (N,) False for rows that cannot be explained (no references of their class).
    Returns:
        [(row, role)] in figure order.
    """
    truth = np.asarray(list(truth), dtype=object)
    predicted = np.asarray(list(predicted), dtype=object)
    ok = np.ones(len(truth), dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    indexed = np.isin(truth, list(protocol.indexed))
    right = predicted == np.where(indexed, truth, UNKNOWN)
    seen = np.isin(truth, list(protocol.seen))
    zero_shot = np.isin(truth, list(protocol.zero_shot))
    real = truth == REAL
    roles = [
        ("seen, correct", [seen & ~real & right]),
        ("wrong", [~right & seen, ~right]),
        ("zero-shot", [zero_shot & ~real, zero_shot]),
        ("real", [real]),
    ]
    picked: list[tuple[int, str]] = []
    taken = np.zeros(len(truth), dtype=bool)

    def take(mask: np.ndarray, role: str) -> bool:
        hits = np.flatnonzero(mask & ok & ~taken)
        if len(picked) >= n or not len(hits):
            return False
        picked.append((int(hits[0]), role))
        taken[hits[0]] = True
        return True

    for role, preferences in roles:
        for mask in preferences:
            if take(mask, role):
                break
    classes = list(dict.fromkeys(truth))
    progress = True
    while len(picked) < n and progress:  # one more image of each class per round
        progress = False
        for c in classes:
            progress = take(truth == c, "more") or progress
    return picked


def explain_images(
    embedder: Any, images: Sequence[bytes], references: Sequence[np.ndarray], cfg: ExplainReportConfig
) -> list[tuple[np.ndarray, Any]]:
    """Explanations of encoded images, each toward its own class's references.

    Args:
        embedder: a loaded :class:`~synthray.attribution.embedder.Embedder`.
        images: encoded images.
        references: per image, (K, D) reference embeddings of the class it is explained toward.
        cfg: kinds and LIME settings.
    Returns:
        per image, ((R, R, 3) float input pixels in [0, 1], the
        :class:`~synthray.methods.explain.Explanation`).
    """
    from synthray.methods.explain import explain_attribution

    if len(images) != len(references):
        raise ValueError(f"{len(images)} images but {len(references)} reference sets")
    out = []
    for data, refs in zip(images, references):
        shown = embedder.pixels([data])[0].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
        out.append((shown, explain_attribution(embedder, data, refs, cfg.kinds, cfg.lime)))
    return out


def explain_test_images(
    embedder: Any,
    shards: Sequence[str | Path],
    test: RowSet,
    attributions: Sequence[Any],
    protocol: Protocol,
    ref_vectors: np.ndarray,
    ref_classes: np.ndarray,
    cfg: ExplainReportConfig,
) -> list[Explained]:
    """Picks ``cfg.images`` test images (:func:`pick_images`) and explains their attributions.

    Args:
        embedder: the evaluation's embedder.
        shards: the shard files the test rows are read from.
        test: the evaluated test rows.
        attributions: (N,) the service's answers for ``test``.
        protocol: the resolved protocol.
        ref_vectors: (K, D) the index's reference embeddings.
        ref_classes: (K,) their classes.
        cfg: the report's explanation settings.
    Returns:
        the explained images in figure order (none when ``cfg.images`` is 0).
    """
    if cfg.images == 0 or not len(test):
        return []
    targets = [explained_class(a) for a in attributions]
    with_refs = set(np.asarray(ref_classes).tolist())
    picked = pick_images(
        test.generator, [a.label for a in attributions], protocol, cfg.images, usable=[t in with_refs for t in targets]
    )
    if not picked:
        return []
    rows = [r for r, _ in picked]
    wanted = set(test.content_hash[rows].tolist())
    encoded: dict[str, bytes] = {}
    for hashes, images in iter_images(shards, test.split, list(wanted), batch_size=len(wanted)):
        encoded.update(zip(hashes, images))
    results = explain_images(
        embedder,
        [encoded[test.content_hash[r]] for r in rows],
        [ref_vectors[ref_classes == targets[r]] for r in rows],
        cfg,
    )
    return [Explained(r, role, targets[r], shown, exp) for (r, role), (shown, exp) in zip(picked, results)]


def explanation_facts(
    items: Sequence[Explained], test: RowSet, attributions: Sequence[Any], top: int = 3
) -> list[dict[str, Any]]:
    """report.json's entries: what was explained and a summary of each map (not the maps).

    ``saliency_top10_share``: the share of the saliency mass in the 10% most salient pixels
    (0.1 = spread evenly, toward 1 = concentrated). ``lime.top``: the ``top`` superpixels
    with the largest weights (score lost when occluded), with their share of the image.
    """
    facts = []
    for it in items:
        a, e = attributions[it.row], it.explanation
        entry: dict[str, Any] = {
            "role": it.role,
            "content_hash": str(test.content_hash[it.row]),
            "source_path": str(test.source_path[it.row]),
            "true": str(test.generator[it.row]),
            "predicted": a.label,
            "explained_class": it.explained_class,
            "score": round(e.score, 4),
        }
        if e.saliency is not None:
            s = np.sort(e.saliency.ravel())[::-1]
            entry["saliency_top10_share"] = round(float(s[: max(1, len(s) // 10)].sum() / max(s.sum(), 1e-12)), 4)
        if e.lime is not None:
            order = np.argsort(-e.lime.weights)[:top]
            area = np.bincount(e.lime.segments.ravel(), minlength=len(e.lime.weights)) / e.lime.segments.size
            entry["lime"] = {
                "r2": round(e.lime.r2, 4),
                "intercept": round(e.lime.intercept, 4),
                "superpixels": int(len(e.lime.weights)),
                "top": [
                    {
                        "superpixel": int(i),
                        "weight": round(float(e.lime.weights[i]), 5),
                        "area": round(float(area[i]), 4),
                    }
                    for i in order
                ],
            }
        facts.append(entry)
    return facts
