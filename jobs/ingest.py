"""Ray job: ingest a data set folder into Parquet shards.

    ray job submit --working-dir . -- python jobs/ingest.py folder data/x data/shards
    python jobs/ingest.py genimage /data/GenImage data/shards/genimage --config ingest.yaml

The YAML holds ``IngestConfig`` fields (nested ``split:`` and ``validation:`` allowed), or an
``ingest:`` section. Re-running the same command resumes an interrupted run and adds new
files only. Same arguments as ``synthray ingest`` (this is that command, as a job entrypoint).
"""

from __future__ import annotations

import sys

from synthray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["ingest", *sys.argv[1:]]))
