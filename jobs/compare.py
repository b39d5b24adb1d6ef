"""Job: train and score detector methods side by side on one data set and protocol.

    python jobs/compare.py --config configs/compare_cpu.yaml
    python jobs/compare.py --config configs/compare_cpu.yaml --methods supcon_knn,small_cnn --set overrides.steps=50
    ray job submit --working-dir . -- python jobs/compare.py --config configs/compare_cpu.yaml

Runs in one process without Ray (so it also runs on a GPU box that has none); writes
compare.md, compare.json, compare.png and explanations.png to the config's ``out``. Same
arguments as ``synthray compare``.
"""

from __future__ import annotations

import sys

from synthray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["compare", *sys.argv[1:]]))
