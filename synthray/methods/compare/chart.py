"""``compare.png``: the comparison's quality metrics as grouped bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthray.methods.compare.table import COLUMNS


def bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars of the quality metrics per method (failed methods left out)."""
    from synthray.plots import pyplot, save_figure

    plt = pyplot()
    ok = [r for r in rows if "error" not in r]
    metrics = [(k, h) for k, h in COLUMNS if k not in ("train_s", "infer_img_s", "params")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(ok) + 2.0), 4.5))
    width = 0.8 / len(metrics)
    x = np.arange(len(ok))
    for i, (key, header) in enumerate(metrics):
        vals = [r.get(key) if r.get(key) is not None else np.nan for r in ok]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=header)
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in ok], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.18))
    return save_figure(fig, path)
