"""Training curves from a run folder: what ``metrics.jsonl`` (one record per epoch) and
``progress.jsonl`` (rank 0's step records) hold, as one picture beside them."""

from __future__ import annotations

from pathlib import Path

from synthray.data.files import read_jsonl
from synthray.plots import draw_safely, pyplot, save_figure
from synthray.train.progress import PROGRESS_FILE

CURVES_FILE = "training_curves.png"


def training_curves(run: str | Path) -> Path | None:
    """Draws ``<run>/training_curves.png``: the losses by step, the validation kNN accuracy by
    epoch. Returns its path, or None when the run has no epoch yet."""
    run = Path(run)
    epochs = read_jsonl(run / "metrics.jsonl", skip_bad=True)
    if not epochs:
        return None
    steps = [r for r in read_jsonl(run / PROGRESS_FILE, skip_bad=True) if r.get("kind") == "step"]
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
    path = draw_safely("training curves", training_curves, run)
    return str(path) if path else None
