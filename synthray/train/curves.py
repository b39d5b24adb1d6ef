"""Training curves from a run folder: what ``metrics.jsonl`` (one record per epoch) and
``progress.jsonl`` (rank 0's step records) hold, as one picture beside them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from synthray.plots import pyplot, save_figure
from synthray.train.progress import PROGRESS_FILE

log = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by a crash: the rest still draws
            continue
    return out


def training_curves(run: str | Path) -> Path | None:
    """Draws ``<run>/training_curves.png``: the losses by step, the validation kNN accuracy by
    epoch. Returns its path, or None when the run has no epoch yet."""
    run = Path(run)
    epochs = _records(run / "metrics.jsonl")
    if not epochs:
        return None
    steps = [r for r in _records(run / PROGRESS_FILE) if r.get("kind") == "step"]
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    if steps:
        ax.plot(
            [r["step"] for r in steps],
            [r["loss"] for r in steps],
            ".-",
            color="tab:gray",
            alpha=0.6,
            label="train loss (running mean within the epoch)",
        )
    ax.plot(
        [r["step"] for r in epochs],
        [r["train_loss"] for r in epochs],
        "o-",
        color="tab:blue",
        label="train loss (epoch)",
    )
    ax.plot(
        [r["step"] for r in epochs],
        [r.get("val_loss") for r in epochs],
        "s-",
        color="tab:orange",
        label="validation loss",
    )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("SupCon loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bx.plot([r["epoch"] + 1 for r in epochs], [r.get("val_knn_acc") for r in epochs], "o-", color="tab:green")
    bx.set_xlabel("epoch")
    bx.set_ylabel("validation kNN accuracy")
    bx.set_ylim(0, 1.02)
    bx.set_xticks([r["epoch"] + 1 for r in epochs])
    bx.grid(alpha=0.3)
    fig.suptitle(f"{run.name}: {len(epochs)} epoch(s), last model {epochs[-1].get('model_version', '?')}", fontsize=9)
    return save_figure(fig, run / CURVES_FILE)


def draw_curves(run: str | Path) -> str | None:
    """:func:`training_curves`, logged; a failure to draw is a warning, never a failed run."""
    try:
        path = training_curves(run)
    except Exception as e:  # noqa: BLE001 - a picture must never cost a finished training run
        log.warning("training curves not drawn (%s: %s)", type(e).__name__, e)
        return None
    if path is not None:
        log.info("training curves: %s", path)
    return str(path) if path else None
