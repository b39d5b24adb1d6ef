"""Ray job: train the SupCon encoder.

    ray job submit --working-dir . -- python jobs/train_supcon.py --config configs/cpu_demo.yaml
    python jobs/train_supcon.py --config configs/cpu_demo.yaml            # in-process, local Ray
    python jobs/train_supcon.py --config configs/cpu_demo.yaml --no-ray   # one process, no Ray

The YAML holds TrainConfig fields (nested encoder:, loss:, experiment:, preprocess:,
pipeline:); ``--set key=value`` overrides single fields (dotted keys for nested ones).
Under ``ray job submit`` it joins the job's cluster; starting the same command again
resumes from the run's latest checkpoint. Same arguments as ``synthray train``.
"""

from __future__ import annotations

import sys

from synthray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
