"""Resuming a comparison: an earlier ``compare.json`` row is reused when the method, its
resolved config, the data and the test set are unchanged, and the explanation maps behind the
figure are kept beside it so that a reused row can still be drawn."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from synthray.config import to_dict
from synthray.methods.compare.settings import CompareConfig
from synthray.methods.explain import Explanation

log = logging.getLogger(__name__)


def earlier_rows(out: Path, cfg: CompareConfig, seen: list[str], held: list[str], n_test: int) -> dict[str, dict]:
    """Rows of the last compare.json in ``out`` made on the same data and test set, by row name."""
    path = out / "compare.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); every method runs again", path, exc)
        return {}
    same = (
        old.get("config", {}).get("shards") == cfg.shards
        and old.get("n_test") == n_test
        and old.get("classes") == {"seen": seen, "zero_shot": held}
        and {
            k: old.get("config", {}).get(k)
            for k in ("preprocess", "pipeline", "seed", "test_per_class", "references_per_class", "experiment")
        }
        == {
            k: to_dict(cfg).get(k)
            for k in ("preprocess", "pipeline", "seed", "test_per_class", "references_per_class", "experiment")
        }
    )
    if not same:
        log.info("%s was made on other data or settings; every method runs again", path)
        return {}
    return {r["method"]: r for r in old.get("rows", []) if "error" not in r}


def explanations_path(out: Path, row: str) -> Path:
    return out / "work" / "explanations" / f"{row}.npz"


def save_explanations(out: Path, row: str, exps: list[Explanation | None]) -> None:
    """The maps behind the figure, so a resumed comparison can draw it without re-running the method."""
    arrays: dict[str, np.ndarray] = {"n": np.array(len(exps))}
    for i, e in enumerate(exps):
        if e is None:
            continue
        arrays[f"{i}_score"] = np.array(e.score)
        if e.saliency is not None:
            arrays[f"{i}_saliency"] = e.saliency
        if e.lime is not None:
            arrays[f"{i}_segments"], arrays[f"{i}_weights"] = e.lime.segments, e.lime.weights
            arrays[f"{i}_fit"] = np.array([e.lime.intercept, e.lime.r2])
    path = explanations_path(out, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    # numpy's stub lets a ``**`` mapping fill ``allow_pickle`` too: every key here is an array name.
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_explanations(path: Path) -> list[Explanation | None]:
    from synthray.methods.explain import LimeResult

    with np.load(path, allow_pickle=False) as z:
        out: list[Explanation | None] = []
        for i in range(int(z["n"])):
            if f"{i}_score" not in z:
                out.append(None)
                continue
            lime = (
                LimeResult(z[f"{i}_segments"], z[f"{i}_weights"], float(z[f"{i}_fit"][0]), float(z[f"{i}_fit"][1]))
                if f"{i}_segments" in z
                else None
            )
            out.append(Explanation(float(z[f"{i}_score"]), z[f"{i}_saliency"] if f"{i}_saliency" in z else None, lime))
        return out


def reusable(
    old: dict | None, row: dict, out: Path, explained: list[int]
) -> tuple[dict, list[Explanation | None] | None] | None:
    """The earlier row (and its explanations) when it was made by the same method and config."""
    if old is None or old.get("registered") != row["registered"]:
        return None
    if json.loads(json.dumps(row["config"], default=str)) != old.get("config"):
        return None
    exps = None
    if explained:
        path = explanations_path(out, row["method"])
        if old.get("explained_images") != [int(i) for i in explained] or not path.exists():
            return None  # the figure needs this method's maps of these very images
        exps = load_explanations(path)
    return old, exps
