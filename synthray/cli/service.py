"""The service commands: ``synthray serve`` runs the Serve app; ``attribute``, ``enroll``,
``generators``, ``discoveries`` and ``feedback`` call a running one through its client."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from synthray.cli.common import emit
from synthray.config import apply_overrides, load_yaml
from synthray.errors import ConfigError

log = logging.getLogger("synthray")


def cmd_serve(args: argparse.Namespace) -> int:

    root = Path(__file__).resolve().parents[2]
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
        emit(fn())
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
