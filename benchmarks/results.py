"""Machine-readable benchmark results, so ``run_all.py`` can put every figure in one table.

Each benchmark prints its own Markdown table for people and, with ``--json PATH``, writes
the same figures as rows: what was measured, the plain baseline it was compared with in
the same run, and the ratio.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence


@dataclasses.dataclass
class Row:
    """One measured figure next to its baseline."""

    benchmark: str  # e.g. "preprocess"
    measure: str  # what, e.g. "Ray Data, 2 CPUs, images/s end to end"
    value: float
    unit: str  # images/s, ms, s ...
    baseline: str = ""  # the plain way doing the same work, in the same run
    baseline_value: float | None = None
    higher_is_better: bool = True  # ratio = value/baseline (higher better) or baseline/value (lower better)
    notes: str = ""
    spread: tuple[float, float] | None = None  # lowest and highest of the repeats (value is their median)
    runs: int = 1  # repeats behind value (and baseline_value, measured as many times in the same run)

    @property
    def ratio(self) -> float | None:
        if not self.baseline_value or not self.value:
            return None
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value


def median_spread(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The median of repeated measurements and their (lowest, highest): one run of a setting on
    a shared 2-core machine is noise, so every figure is a median beside its spread."""
    if not values:
        raise ValueError("no measurements")
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return median, (ordered[0], ordered[-1])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    return info


def write_rows(path: str | Path | None, rows: Sequence[Row], **context: Any) -> None:
    """Writes ``rows`` as JSON (no-op without a path)."""
    if not path:
        return
    data = {
        "machine": machine(),
        "context": context,
        "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows],
    }
    Path(path).write_text(json.dumps(data, indent=2))


def read_rows(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = json.loads(Path(path).read_text())
    return data["machine"], data["rows"]
