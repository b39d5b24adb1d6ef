"""The model commands: ``synthray train``, ``index``, ``demo``, ``evaluate``, ``compare``,
``family-curve``, and ``config`` (the settings they read)."""

from __future__ import annotations

import argparse
import logging
import os
import warnings

from synthray.cli.common import emit, yaml_section
from synthray.config import EvalConfig, apply_overrides, from_dict, load_yaml

log = logging.getLogger("synthray")


def cmd_train(args: argparse.Namespace) -> int:
    from synthray.config import TrainConfig

    cfg = from_dict(TrainConfig, apply_overrides(yaml_section(args.config, "train"), args.set))
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
    emit({k: result[k] for k in ("metrics", "checkpoint", "classes", "run")})
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from synthray.index.build import build_index, choose_ray, index_configs
    from synthray.index.store import StoreError
    from synthray.train.checkpoint import CheckpointError

    cfg, attribution = index_configs(load_yaml(args.config) if args.config else {}, args.set)
    try:
        if args.action != "build":
            from synthray.index.admin import index_admin

            emit(index_admin(args.action, cfg.store, args.target, overwrite=args.overwrite, keep=args.keep))
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
    emit(summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from synthray.demo import DemoConfig, headline, run_demo

    cfg = from_dict(DemoConfig, yaml_section(args.config, "demo"))
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
    emit(headline(summary), one_line_per_key=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from synthray.eval.run import EvalError, evaluate, summarize
    from synthray.index.store import StoreError
    from synthray.train.checkpoint import CheckpointError

    cfg = from_dict(EvalConfig, apply_overrides(yaml_section(args.config, "eval"), args.set))
    try:
        report = evaluate(cfg)
    except (EvalError, CheckpointError, StoreError) as exc:
        log.error("evaluate failed: %s", exc)
        return 1
    emit(summarize(report, cfg.out))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from synthray.methods.compare import load_compare_config, run_compare

    data = apply_overrides(yaml_section(args.config, "compare"), args.set)
    if args.methods:
        data["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    for key in ("shards", "out"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    result = run_compare(load_compare_config(data))
    emit(
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
        emit(json_schema(cls))
        return 0
    # show: what a run would use, with defaults filled in (a mistake is a one-line error, exit 2)
    emit(to_dict(from_dict(cls, apply_overrides(yaml_section(args.config, args.section), args.set))))
    return 0


def cmd_family_curve(args: argparse.Namespace) -> int:
    from synthray.eval.family_curve import FamilyCurveConfig, family_curve

    data = apply_overrides(yaml_section(args.config, "curve"), args.set)
    curve = family_curve(from_dict(FamilyCurveConfig, data))
    emit(
        {
            "out": data.get("out", FamilyCurveConfig.out),
            "points": [
                {k: p[k] for k in ("families", "auroc", "tpr_at_5pct_fpr", "real_specificity")} for p in curve["points"]
            ],
        }
    )
    return 0
