"""The ``synthray`` command: one subcommand per stage, each runnable alone.

    synthray synthbench <out> --per-class N        generate the built-in benchmark
    synthray ingest <layout> <root> <out>          data set folder -> Parquet shards
    synthray stream <shards>                       stream preprocessed batches, report speed/balance
    synthray train --config configs/cpu_demo.yaml  train the SupCon encoder (Ray Train)
    synthray index --config configs/cpu_demo_index.yaml  build the reference index (Ray Data -> Qdrant)
    synthray index list|activate|snapshot|restore        the store's collections, the active alias, backups
    synthray demo                                  the main job on the embedded defaults
    synthray evaluate --config configs/cpu_demo_eval.yaml  evaluate a protocol (ES1-ES4, sd14): report + figures
    synthray serve --checkpoint <ckpt>             the Serve app on a local Ray cluster (blocks)
    synthray attribute <url> <images...>           attribute images with a running service
    synthray enroll <url> <name> <folder>          enroll a generator's images (few-shot)
    synthray generators <url> [--delete NAME]      list generators, delete an enrolled one
    synthray compare --config configs/compare_cpu.yaml  detector methods side by side (table + figures)
    synthray config schema|show <section>          a config's JSON schema, or a file's resolved config

Argument parsing only: the work lives in the library.
"""

from __future__ import annotations

import argparse
import logging
from typing import Callable

from synthray import __version__
from synthray.cli.data import cmd_ingest, cmd_stream, cmd_synthbench
from synthray.cli.model import (
    cmd_compare,
    cmd_config,
    cmd_demo,
    cmd_evaluate,
    cmd_family_curve,
    cmd_index,
    cmd_train,
)
from synthray.cli.service import (
    cmd_attribute,
    cmd_discoveries,
    cmd_enroll,
    cmd_feedback,
    cmd_generators,
    cmd_serve,
)
from synthray.config import SECTIONS
from synthray.errors import ConfigError

# The commands are re-exported here and looked up here when the parser is built, so a test
# can stand in for one (tests/test_cli.py replaces cmd_index).
__all__ = [
    "build_parser",
    "main",
    "cmd_attribute",
    "cmd_compare",
    "cmd_config",
    "cmd_demo",
    "cmd_discoveries",
    "cmd_enroll",
    "cmd_evaluate",
    "cmd_family_curve",
    "cmd_feedback",
    "cmd_generators",
    "cmd_index",
    "cmd_ingest",
    "cmd_serve",
    "cmd_stream",
    "cmd_synthbench",
    "cmd_train",
]

log = logging.getLogger("synthray")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthray",
        description="Detect AI-generated images and attribute them to their generator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"synthray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synthbench", help="generate the built-in benchmark (plain-folder layout)")
    p.add_argument("out", help="output folder (<out>/<label>/*.png and synthbench.json)")
    p.add_argument("--per-class", type=int, help="images per class")
    p.add_argument("--resolution", type=int, help="image side in pixels")
    p.add_argument("--seed", type=int, help="random seed; same seed, same bytes")
    p.add_argument("--config", help="YAML with SynthbenchConfig fields (or a synthbench: section)")
    p.set_defaults(func=cmd_synthbench)

    from synthray.data.layouts import list_layouts

    p = sub.add_parser("ingest", help="data set folder -> Parquet shards + manifest.json")
    p.add_argument("layout", choices=list_layouts(), help="how the folder is organised")
    p.add_argument("root", help="data set folder")
    p.add_argument("out", help="shard folder; re-running resumes and adds only new files")
    p.add_argument("--config", help="YAML with IngestConfig fields (or an ingest: section)")
    p.add_argument("--no-ray", action="store_true", help="write shards in this process, without Ray")
    p.add_argument("--workers", type=int, help="parallel shard writers")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("stream", help="stream preprocessed class-balanced batches; report speed and balance")
    p.add_argument("shards", help="shard folder written by `synthray ingest`")
    p.add_argument("--split", default="train", help="train | val | test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, help="output side (default from config: 256)")
    p.add_argument("--max-batches", type=int, help="stop after this many batches")
    p.add_argument("--config", help="YAML with preprocess: and pipeline: sections")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray cluster")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("train", help="train the SupCon encoder (Ray Train, or one process with --no-ray)")
    p.add_argument("--config", required=True, help="YAML with TrainConfig fields (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (dotted keys)")
    p.add_argument("--no-ray", action="store_true", help="one process, no Ray")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "index",
        help="build the reference index (Qdrant) from shards and calibrate 'unknown'; "
        "list, activate, snapshot, restore its collections",
    )
    p.add_argument(
        "action",
        nargs="?",
        default="build",
        choices=["build", "list", "activate", "snapshot", "restore"],
        help="build (default); list collections; activate COLLECTION (move the active alias, also to "
        "roll back); snapshot [FILE] of the active collection; restore FILE into the store",
    )
    p.add_argument(
        "target",
        nargs="?",
        help="activate: a collection; snapshot: the archive file to write "
        "(default <store>/../snapshots/<collection>-<time>.tar); restore: the archive",
    )
    p.add_argument("--overwrite", action="store_true", help="restore: replace a collection of the same name")
    p.add_argument("--keep", type=int, help="snapshot: keep this many newest snapshots, delete older ones")
    p.add_argument("--config", help="YAML with index: and attribution: sections (configs/cpu_demo_index.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field: per_class=all, store.path=..., attribution.k=5",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--no-ray", action="store_true", help="embed in this process, without Ray")
    where.add_argument(
        "--ray",
        action="store_true",
        help="embed on Ray even where this process would be faster "
        "(default: Ray with GPUs, several nodes or more than 4 CPUs; this process otherwise)",
    )
    p.add_argument("--address", help="Ray cluster address (default: the job's cluster, or a local one)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("demo", help="the main job on the built-in benchmark, local Ray, embedded defaults")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--per-class", type=int, help="benchmark images per class")
    p.add_argument("--config", help="YAML with DemoConfig fields (or a demo: section)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint under a protocol: report.json, report.md, figures")
    p.add_argument("--config", help="YAML with an eval: section of EvalConfig fields (configs/cpu_demo_eval.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field: protocol.name=ES4, per_class=all, attribution.k=5",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="run the Serve app (HTTP API) on a local Ray cluster until Ctrl-C")
    p.add_argument("--checkpoint", help="checkpoint or training run folder")
    p.add_argument("--store-path", dest="store_path", help="embedded Qdrant folder (the index)")
    p.add_argument("--store-url", dest="store_url", help="Qdrant server URL instead of the embedded store")
    p.add_argument("--config", help="serve/config.yaml, or a YAML of AppArgs fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an AppArgs field")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to listen on every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray cluster")
    p.set_defaults(func=cmd_serve)

    def client_parser(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("url", help="service URL, e.g. http://127.0.0.1:8000")
        p.add_argument("--api-key", help="API key (default: $SYNTHRAY_API_KEY)")
        p.set_defaults(func=func)
        return p

    p = client_parser("attribute", "attribute images with a running service", cmd_attribute)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--explain",
        nargs="?",
        const="saliency,lime",
        metavar="KINDS",
        help="also explain each attribution (saliency,lime; default both) as <stem>.explain.png figures",
    )
    p.add_argument("--explain-dir", default=".", help="where the explanation figures go (default: here)")
    p.add_argument("--lime-samples", type=int, help="LIME occluded views per image (default: the service's)")
    p = client_parser("enroll", "enroll a generator's images (a folder) into a running service", cmd_enroll)
    p.add_argument("name", help="generator name (new or existing)")
    p.add_argument("folder", help="folder of ~50 images of that generator")
    p = client_parser("generators", "list the service's generators, or delete an enrolled one", cmd_generators)
    p.add_argument("--delete", metavar="NAME", help="delete this generator's enrolled samples")
    p = client_parser(
        "discoveries", "list candidate new generators among unknown answers, or enroll one", cmd_discoveries
    )
    p.add_argument("--refresh", action="store_true", help="regroup the inbox now")
    p.add_argument("--enroll", metavar="ID", help="enroll this discovery (needs --name)")
    p.add_argument("--name", help="the generator name to enroll it as")
    p = client_parser(
        "feedback", "label images (real / a generator), list the labels, or enroll one label", cmd_feedback
    )
    p.add_argument("images", nargs="*", help="image files to label (or --hash)")
    p.add_argument("--label", help="'real' or a generator name")
    p.add_argument("--hash", action="append", help="content hash (sha256) of an image the service answered")
    p.add_argument("--note", default="", help="kept with the label")
    p.add_argument("--enroll", metavar="LABEL", help="enroll every feedback image with this label")

    p = sub.add_parser("compare", help="train and score detector methods side by side (table + figures)")
    p.add_argument(
        "--config", help="YAML with CompareConfig fields (or a compare: section); see configs/compare_cpu.yaml"
    )
    p.add_argument("--methods", help="comma-separated registered methods (default: the config's)")
    p.add_argument("--shards", help="shard folder written by `synthray ingest`")
    p.add_argument("--out", help="output folder (compare.md, compare.json, figures)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (dotted keys)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("config", help="a config's JSON schema (keys, types, defaults, descriptions) or resolved values")
    p.add_argument("action", choices=("schema", "show"), help="schema: the JSON schema; show: the resolved config")
    p.add_argument("section", choices=sorted(SECTIONS), help="which config (the section name in YAML files)")
    p.add_argument("--config", help="show: a YAML file with the section (or with only its fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (dotted keys)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("family-curve", help="zero-shot detection vs the number of generator families trained on")
    p.add_argument(
        "--config", help="YAML with FamilyCurveConfig fields (or a curve: section); see configs/family_curve.yaml"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (dotted keys)")
    p.set_defaults(func=cmd_family_curve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # What the user can fix (a config, a value, a path) in one line; anything else is a
        # bug and keeps its traceback.
        log.error("%s failed: %s", args.command, exc)
        return 2
    except KeyboardInterrupt:
        log.error("%s interrupted", args.command)
        return 130
