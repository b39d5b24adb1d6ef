"""How zero-shot detection grows with the number of generators seen in training.

Community Forensics (Park & Owens, CVPR 2025) found a detector's accuracy on unseen generators
rising with the number of generators it was trained on. This measures the same on a
benchmark with procedural families: for each count N, an encoder is trained (same steps, same
recipe, no Ray) on real photographs and N generator families, its index is built, and the
held-out families (never in any run's training) are scored against real test photographs that
no run trained on: is-AI AUROC, TPR at 5% FPR (threshold calibrated on validation photographs),
real specificity. ``curve.json``, ``curve.md`` and ``curve.png`` go to the output folder; a run
already there for a count is reused (an interrupted curve goes on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from synthray.config import ExperimentConfig, TrainConfig
from synthray.data.schema import REAL
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)


@config_dataclass
class FamilyCurveConfig:
    """One curve: training-family counts, the held-out families, and the training recipe."""

    shards: str = "runs/demo/shards"
    """a synthbench (with procedural families) ingested"""
    out: str = "runs/family_curve"
    """curve.json, curve.md, curve.png, one run folder per count"""
    counts: tuple[int, ...] = (1, 3, 10, 20, 45)
    """generator families trained on, per point"""
    held_out: tuple[str, ...] = ("pixel_shuffle", "vq_vae", "sdedit_unet", "proc_0032", "proc_0034")
    """families no run trains on: every point is scored on these, zero-shot"""
    steps: int = 300
    """optimizer steps of every run, whatever its data size (epochs follow)"""
    per_class: int = 50
    """index references per generator (real: 4x)"""
    max_test_per_class: int = 100
    """test images per held-out family and of real"""
    seed: int = 0
    """which families a count draws, and training"""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """the recipe; shards/run/classes are set here"""


def choose_families(available: list[str], held_out: tuple[str, ...], count: int, seed: int) -> list[str]:
    """``count`` training families, the same prefix of one seeded order for every count
    (so a larger count adds families to a smaller one's)."""
    pool = sorted(f for f in available if f not in held_out and f != REAL)
    if count > len(pool):
        raise ValueError(f"{count} training families asked for, {len(pool)} available besides the held-out ones")
    order = sorted(pool, key=lambda f: hashlib.blake2b(f"{seed}/{f}".encode(), digest_size=8).digest())
    return order[:count]


def _score(checkpoint: str, cfg: FamilyCurveConfig, store_dir: Path) -> dict[str, Any]:
    """Builds the run's index (no Ray) and scores real and held-out test images."""
    from sklearn.metrics import roc_auc_score

    from synthray.attribution import Attributor, Embedder
    from synthray.data.manifest import read_labels
    from synthray.data.pipeline import find_shards
    from synthray.eval.data import embed_rows, select_rows
    from synthray.eval.metrics import tpr_at_fpr
    from synthray.index import IndexConfig, StoreConfig, open_store
    from synthray.index.build import build_index

    build_index(
        IndexConfig(
            checkpoint=checkpoint,
            shards=cfg.shards,
            per_class=cfg.per_class,
            device="cpu",
            store=StoreConfig(path=str(store_dir)),
        ),
        use_ray=False,
    )
    files = find_shards(cfg.shards)
    rows = select_rows(read_labels(files), "test", [REAL, *cfg.held_out], cfg.max_test_per_class)
    embedder = Embedder(checkpoint, device="cpu")
    vectors = embed_rows(embedder, files, rows, 64, what="test")
    with open_store(StoreConfig(path=str(store_dir)), embedder.model_version, embedder.dim, create=False) as store:
        answers = Attributor(embedder, store).attribute_vectors(vectors)
    score = np.asarray([a.is_ai_score for a in answers])
    flagged = np.asarray([a.is_ai for a in answers])
    real = rows.generator == REAL
    per_family = {
        f: {
            "auroc": round(
                float(
                    roc_auc_score(
                        np.r_[np.zeros(real.sum()), np.ones((rows.generator == f).sum())],
                        np.r_[score[real], score[rows.generator == f]],
                    )
                ),
                4,
            ),
            "flagged": round(float(flagged[rows.generator == f].mean()), 4),
        }
        for f in cfg.held_out
        if (rows.generator == f).any()
    }
    return {
        "auroc": round(float(roc_auc_score(~real, score)), 4),
        "tpr_at_5pct_fpr": round(tpr_at_fpr(score[real], score[~real], 0.05), 4),
        "flagged_at_threshold": round(float(flagged[~real].mean()), 4),
        "real_specificity": round(float(1 - flagged[real].mean()), 4),
        "per_family": per_family,
    }


def family_curve(cfg: FamilyCurveConfig) -> dict[str, Any]:
    """Trains and scores one encoder per count (see the module docstring); returns the curve."""
    from synthray.data.pipeline import class_counts
    from synthray.train.local import fit_local

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    available = sorted(class_counts(cfg.shards, "train"))
    points = []
    for count in cfg.counts:
        families = choose_families(available, cfg.held_out, count, cfg.seed)
        run_dir = out / f"n{count:03d}"
        done = run_dir / "point.json"
        if done.is_file():
            points.append(json.loads(done.read_text()))
            log.info("family curve: N=%d reused from %s", count, done)
            continue
        t0 = time.perf_counter()
        train = dataclasses.replace(
            cfg.train,
            shards=cfg.shards,
            run_dir=str(run_dir),
            run_name="train",
            seed=cfg.seed,
            experiment=ExperimentConfig(setting="custom", classes=(REAL, *families)),
        )
        # The same number of steps at every count: one "epoch" of exactly that many steps, the
        # data passed over again as often as a count's smaller data set needs.
        train = dataclasses.replace(train, epochs=1, steps_per_epoch=cfg.steps, repeat_data=True)
        log.info("family curve: N=%d, training on %s", count, families)
        result = fit_local(train, device="cpu")
        scores = _score(result["checkpoint"], cfg, run_dir / "index")
        point = {
            "families": count,
            "trained_on": families,
            "steps": int(result["metrics"]["step"]),
            **scores,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        done.write_text(json.dumps(point, indent=1))
        log.info("family curve: N=%d: AUROC %.3f, TPR@5%%FPR %.3f", count, scores["auroc"], scores["tpr_at_5pct_fpr"])
        points.append(point)
    curve = {"held_out": list(cfg.held_out), "points": points, "steps": cfg.steps}
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    _write_markdown(curve, out / "curve.md")
    _plot(curve, out / "curve.png")
    return curve


def _write_markdown(curve: dict[str, Any], path: Path) -> None:
    lines = [
        "# Zero-shot detection vs number of training generators",
        "",
        f"Held out of every run: {', '.join(curve['held_out'])}. Same training steps per run; test photographs "
        "never seen in training.",
        "",
        "| training families | AUROC held-out vs real | TPR at 5% FPR | flagged at the calibrated threshold | "
        "real specificity |",
        "|---|---|---|---|---|",
    ]
    for p in curve["points"]:
        lines.append(
            f"| {p['families']} | {p['auroc']:.3f} | {p['tpr_at_5pct_fpr']:.3f} | "
            f"{p['flagged_at_threshold']:.3f} | {p['real_specificity']:.3f} |"
        )
    lines += ["", "![curve](curve.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _plot(curve: dict[str, Any], path: Path) -> None:
    from synthray.plots import pyplot, save_figure

    plt = pyplot()
    n = [p["families"] for p in curve["points"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(n, [p["auroc"] for p in curve["points"]], "o-", label="AUROC held-out vs real")
    ax.plot(n, [p["tpr_at_5pct_fpr"] for p in curve["points"]], "s-", label="TPR at 5% FPR")
    ax.set_xscale("log")
    ax.set_xlabel("generator families in training")
    ax.set_ylim(0, 1.02)
    ax.set_title("Zero-shot detection of held-out generators")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path, dpi=120)
