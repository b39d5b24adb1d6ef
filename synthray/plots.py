"""Figures as PNG files: matplotlib's Agg backend (no display needed) and one way to save.

Every figure the project draws (reports, explanations, curves) goes through these two
calls, so the backend choice and the save (folder created, layout tightened, figure closed
so long runs do not accumulate open figures) live in one place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Writes ``fig`` to ``path`` (PNG; parent folders created) and closes it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def draw_safely(what: str, draw: Callable[..., Path | None], *args: Any, **kwargs: Any) -> Path | None:
    """``draw(*args, **kwargs)``, logged as ``what``; a failure is a warning and None, never an
    error: a picture must not cost the run (training, index, benchmark) that it illustrates."""
    try:
        path = draw(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any drawing error, whatever the figure
        log.warning("%s not drawn (%s: %s)", what, type(e).__name__, e)
        return None
    if path is not None:
        log.info("%s: %s", what, path)
    return path
