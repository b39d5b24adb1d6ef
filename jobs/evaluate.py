"""Ray job: evaluate a checkpoint under a protocol (ES1-ES4, sd14, custom).

    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/cpu_demo_eval.yaml
    python jobs/evaluate.py --config configs/genimage_eval.yaml --set protocol.name=ES2

The YAML holds an ``eval:`` section of EvalConfig fields; ``--set key=value`` overrides
single fields (dotted keys for nested ones). Writes report.json, report.md, figures and
config.yaml into ``out``. Same arguments as ``synthray evaluate``.
"""

from __future__ import annotations

import sys

from synthray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
