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
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from synthray import __version__
from synthray.errors import ConfigError
from synthray.config import (
    SECTIONS,
    EvalConfig,
    IngestConfig,
    PipelineConfig,
    PreprocessConfig,
    SynthbenchConfig,
    apply_overrides,
    from_dict,
    load_yaml,
)

log = logging.getLogger("synthray")


def _emit(result: Any, one_line_per_key: bool = False) -> None:
    """The command's result (not status) goes to stdout as JSON, for people and scripts.

    ``one_line_per_key``: each top-level entry on one line (a long summary stays a screen
    long; still one JSON document).
    """
    if one_line_per_key and isinstance(result, dict):
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in result.items())
        sys.stdout.write("{\n" + body + "\n}\n")
        return
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


def _yaml_section(path: str | None, section: str) -> dict[str, Any]:
    if not path:
        return {}
    data = load_yaml(path)
    # A config file may hold several concerns (ingest:, preprocess:, pipeline:) or just one.
    return data.get(section, {}) if section in data else data


def cmd_synthbench(args: argparse.Namespace) -> int:
    from synthray.data.synthbench import build_synthbench

    cfg = from_dict(SynthbenchConfig, _yaml_section(args.config, "synthbench"))
    if args.per_class is not None:
        cfg.per_class = args.per_class
    if args.resolution is not None:
        cfg.resolution = args.resolution
    if args.seed is not None:
        cfg.seed = args.seed
    summary = build_synthbench(args.out, cfg)
    _emit(summary)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from synthray.data.ingest import IngestError, ingest

    cfg = from_dict(IngestConfig, _yaml_section(args.config, "ingest"))
    if args.no_ray:
        cfg.use_ray = False
    if args.workers is not None:
        cfg.num_workers = args.workers
    try:
        manifest = ingest(args.layout, args.root, args.out, cfg)
    except IngestError as exc:
        log.error("%s (re-run the same command to resume)", exc)
        return 1
    _emit(
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

    from synthray.data.pipeline import stream_summary

    pre = from_dict(PreprocessConfig, _yaml_section(args.config, "preprocess"))
    pipe = from_dict(PipelineConfig, _yaml_section(args.config, "pipeline"))
    if args.resolution is not None:
        pre.resolution = args.resolution
    ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None, include_dashboard=False)
    try:
        summary = stream_summary(
            args.shards, pre, pipe, batch_size=args.batch_size, split=args.split, max_batches=args.max_batches
        )
    finally:
        ray.shutdown()
    _emit(summary)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from synthray.config import TrainConfig

    cfg = from_dict(TrainConfig, apply_overrides(_yaml_section(args.config, "train"), args.set))
    if args.no_ray:
        from synthray.train.local import fit_local

        result = fit_local(cfg)
    else:
        import ray

        from synthray.train.ray_trainer import fit_ray

        ray.init(address=args.address) if args.address else ray.init()
        try:
            result = fit_ray(cfg)
        finally:
            ray.shutdown()
    _emit({k: result[k] for k in ("metrics", "checkpoint", "classes", "run")})
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from synthray.index.build import build_index, choose_ray, index_configs
    from synthray.index.store import StoreError
    from synthray.train.checkpoint import CheckpointError

    cfg, attribution = index_configs(load_yaml(args.config) if args.config else {}, args.set)
    try:
        if args.action != "build":
            from synthray.index.admin import index_admin

            _emit(index_admin(args.action, cfg.store, args.target, overwrite=args.overwrite, keep=args.keep))
            return 0
        # No flag: Ray where it pays off (choose_ray). With no cluster named, this machine
        # decides before a local cluster is started for nothing.
        address = args.address or os.environ.get("RAY_ADDRESS")
        use_ray = False if args.no_ray else True if args.ray else (None if address else choose_ray(None))
        if use_ray is False:
            summary = build_index(cfg, attribution, use_ray=False)
        else:
            import ray

            ray.init(address=address) if address else ray.init()
            try:
                summary = build_index(cfg, attribution, use_ray=use_ray)
            finally:
                ray.shutdown()
    except (CheckpointError, StoreError, FileNotFoundError) as exc:
        log.error("index %s failed: %s", args.action, exc)
        return 1
    _emit(summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from synthray.demo import DemoConfig, headline, run_demo

    cfg = from_dict(DemoConfig, _yaml_section(args.config, "demo"))
    if args.per_class is not None:
        cfg.per_class = args.per_class
    # Warnings Ray raises about its own internals (deprecations inside Ray Data and Ray
    # Train, task-concurrency hints) are nothing a demo user can act on.
    import ray.util.annotations  # noqa: F401 - it adds its own filter for its deprecations at import; ours goes first

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    # Ray Data logs its operators' progress every 10 s where there is no terminal to draw
    # bars on (13 lines a time); once a minute keeps a long stage visibly alive.
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "60")
    summary = run_demo(args.out, cfg)
    _emit(headline(summary), one_line_per_key=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from synthray.eval.run import EvalError, evaluate, summarize
    from synthray.index.store import StoreError
    from synthray.train.checkpoint import CheckpointError

    cfg = from_dict(EvalConfig, apply_overrides(_yaml_section(args.config, "eval"), args.set))
    try:
        report = evaluate(cfg)
    except (EvalError, CheckpointError, StoreError) as exc:
        log.error("evaluate failed: %s", exc)
        return 1
    _emit(summarize(report, cfg.out))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:

    root = Path(__file__).resolve().parents[1]
    if not (root / "serve" / "app.py").is_file():
        log.error("serve: the Serve app (serve/app.py) is not beside this synthray install; run from a checkout")
        return 1
    sys.path.insert(0, str(root))
    from serve.local import app_args_from_yaml, serve_forever

    app_args = apply_overrides(app_args_from_yaml(load_yaml(args.config)) if args.config else {}, args.set)
    for key, field in (("checkpoint", "checkpoint"), ("store_path", "store.path"), ("store_url", "store.url")):
        if getattr(args, key) is not None:
            app_args[field] = getattr(args, key)
    if "checkpoint" not in app_args:
        log.error("serve: give --checkpoint (or a --config with one)")
        return 2
    serve_forever(app_args, host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus)
    return 0


def _client(args: argparse.Namespace):
    from synthray.client import SynthrayClient

    return SynthrayClient(args.url, api_key=args.api_key)


def _client_call(fn: Callable[[], Any]) -> int:
    from synthray.client import ClientError

    try:
        _emit(fn())
    except ClientError as exc:
        log.error("%s", exc)
        for bad in exc.details.get("rejected", []):
            log.error("  %s: %s (%s)", bad["file"], bad["reason"], bad["message"])
        return 1
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in (args.explain or "").split(",") if k.strip()]

    def run() -> dict[str, Any]:
        from synthray.client import explanation_figure

        answer = _client(args).attribute(args.images, explain=kinds, lime_samples=args.lime_samples)
        if kinds:
            # The maps go to PNG figures; the printed JSON names them instead of carrying base64.
            out_dir = Path(args.explain_dir)
            for image, result in zip(args.images, answer["results"]):
                exp = result.get("explanation")
                if exp:
                    path = explanation_figure(
                        Path(image).read_bytes(), result, out_dir / f"{Path(image).stem}.explain.png"
                    )
                    exp["figure"] = str(path)
                    exp.pop("saliency", None)
                    if exp.get("lime"):
                        exp["lime"].pop("map", None)
        return answer

    return _client_call(run)


def cmd_enroll(args: argparse.Namespace) -> int:
    return _client_call(lambda: _client(args).enroll(args.name, args.folder))


def cmd_generators(args: argparse.Namespace) -> int:
    client = _client(args)
    return _client_call(lambda: client.delete(args.delete) if args.delete else client.generators())


def cmd_discoveries(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.enroll:
        if not args.name:
            raise ConfigError("--enroll needs --name: the generator name to enroll the discovery as")
        return _client_call(lambda: client.enroll_discovery(args.enroll, args.name))
    return _client_call(lambda: client.discoveries(refresh=args.refresh))


def cmd_feedback(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.enroll:
        return _client_call(lambda: client.enroll_feedback(args.enroll))
    if args.label:
        return _client_call(
            lambda: client.feedback(args.label, hashes=args.hash or (), images=args.images or (), note=args.note)
        )
    return _client_call(client.list_feedback)


def cmd_compare(args: argparse.Namespace) -> int:
    from synthray.methods.compare import load_compare_config, run_compare

    data = apply_overrides(_yaml_section(args.config, "compare"), args.set)
    if args.methods:
        data["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    for key in ("shards", "out"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    result = run_compare(load_compare_config(data))
    _emit(
        {
            "out": result["config"]["out"],
            "rows": [
                {
                    k: r.get(k)
                    for k in ("method", "acc", "auc", "acc_zero_shot", "f1_seen", "f1_zero_shot", "train_s", "error")
                    if k in r
                }
                for r in result["rows"]
            ],
        }
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from synthray.config import SECTIONS, json_schema, to_dict

    cls = SECTIONS[args.section]
    if args.action == "schema":
        _emit(json_schema(cls))
        return 0
    # show: what a run would use, with defaults filled in (a mistake is a one-line error, exit 2)
    _emit(to_dict(from_dict(cls, apply_overrides(_yaml_section(args.config, args.section), args.set))))
    return 0


def cmd_family_curve(args: argparse.Namespace) -> int:
    from synthray.eval.family_curve import FamilyCurveConfig, family_curve

    data = apply_overrides(_yaml_section(args.config, "curve"), args.set)
    curve = family_curve(from_dict(FamilyCurveConfig, data))
    _emit(
        {
            "out": data.get("out", FamilyCurveConfig.out),
            "points": [
                {k: p[k] for k in ("families", "auroc", "tpr_at_5pct_fpr", "real_specificity")} for p in curve["points"]
            ],
        }
    )
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
