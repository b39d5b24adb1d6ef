"""Ray job: build the reference index from shards (Ray Data embedding -> Qdrant), calibrate it.

    ray job submit --working-dir . -- python jobs/build_index.py --config configs/cpu_demo_index.yaml
    python jobs/build_index.py --config configs/cpu_demo_index.yaml             # in-process, local Ray
    python jobs/build_index.py --config configs/cpu_demo_index.yaml --no-ray    # one process, no Ray

The YAML holds an ``index:`` section (IndexConfig: checkpoint, shards, per_class, store)
and an ``attribution:`` section (k, vote, unknown_rate, target_fpr); ``--set key=value``
overrides a field (``per_class=all``, ``store.path=...``, ``attribution.k=5``). Paths are
read where the driver runs: ``--working-dir`` does not upload ``runs/`` (git-ignored), so
on a job pass absolute paths (or shared storage) for the checkpoint, shards and store.
Starting the same command again adds only what is missing. Same arguments as ``synthray index``.
"""

from __future__ import annotations

import sys

from synthray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["index", *sys.argv[1:]]))
