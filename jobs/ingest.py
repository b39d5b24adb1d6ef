"""Ray job: ingest a data set folder into Parquet shards.

    ray job submit --working-dir . -- python jobs/ingest.py folder data/x data/shards
    python jobs/ingest.py genimage /data/GenImage data/shards/genimage --config ingest.yaml

The YAML holds ``IngestConfig`` fields (nested ``split:`` and ``validation:`` allowed).
Re-running the same command resumes an interrupted run and adds new files only.
"""

from __future__ import annotations

import argparse
import logging

from synthray.config import IngestConfig, from_dict, load_yaml, to_dict
from synthray.data.ingest import ingest
from synthray.data.layouts import list_layouts

logger = logging.getLogger("synthray.jobs.ingest")


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, runs :func:`synthray.data.ingest.ingest`, logs a summary.

    Args:
        argv: command-line arguments (``None`` = ``sys.argv[1:]``).
    Returns:
        the process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layout", choices=list_layouts(), help="how the folder is organised")
    parser.add_argument("root", help="the data set folder")
    parser.add_argument("out", help="output folder for shards, receipts and manifest.json")
    parser.add_argument("--config", help="YAML file with IngestConfig fields")
    parser.add_argument("--no-ray", action="store_true", help="write every shard in this process")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = from_dict(IngestConfig, load_yaml(args.config) if args.config else {})
    if args.no_ray:
        cfg.use_ray = False
    logger.info("config: %s", to_dict(cfg))
    manifest = ingest(args.layout, args.root, args.out, cfg)
    logger.info(
        "done: %d rows, %d shards, %d bad files %s, %d duplicate groups; manifest at %s/manifest.json",
        manifest["total_rows"], len(manifest["shards"]), manifest["num_bad"], manifest["bad_reasons"],
        manifest["num_duplicate_groups"], manifest["out"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
