"""The data commands: ``synthray synthbench``, ``ingest`` and ``stream``."""

from __future__ import annotations

import argparse
import logging

from synthray.cli.common import emit, yaml_section
from synthray.config import IngestConfig, PipelineConfig, PreprocessConfig, SynthbenchConfig, from_dict

log = logging.getLogger("synthray")


def cmd_synthbench(args: argparse.Namespace) -> int:
    from synthray.data.synthbench import build_synthbench

    cfg = from_dict(SynthbenchConfig, yaml_section(args.config, "synthbench"))
    if args.per_class is not None:
        cfg.per_class = args.per_class
    if args.resolution is not None:
        cfg.resolution = args.resolution
    if args.seed is not None:
        cfg.seed = args.seed
    summary = build_synthbench(args.out, cfg)
    emit(summary)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from synthray.data.ingest import IngestError, ingest

    cfg = from_dict(IngestConfig, yaml_section(args.config, "ingest"))
    if args.no_ray:
        cfg.use_ray = False
    if args.workers is not None:
        cfg.num_workers = args.workers
    try:
        manifest = ingest(args.layout, args.root, args.out, cfg)
    except IngestError as exc:
        log.error("%s (re-run the same command to resume)", exc)
        return 1
    emit(
        {
            k: manifest[k]
            for k in (
                "out",
                "total_rows",
                "counts",
                "num_bad",
                "bad_reasons",
                "num_duplicate_groups",
                "num_cross_class_duplicate_groups",
                "timings",
            )
        }
    )
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import ray

    from synthray.data.stream_check import stream_summary

    pre = from_dict(PreprocessConfig, yaml_section(args.config, "preprocess"))
    pipe = from_dict(PipelineConfig, yaml_section(args.config, "pipeline"))
    if args.resolution is not None:
        pre.resolution = args.resolution
    ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None, include_dashboard=False)
    try:
        summary = stream_summary(
            args.shards, pre, pipe, batch_size=args.batch_size, split=args.split, max_batches=args.max_batches
        )
    finally:
        ray.shutdown()
    emit(summary)
    return 0
