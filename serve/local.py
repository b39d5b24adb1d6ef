"""``synthray serve``: the app on a local (or given) Ray cluster, until interrupted."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: The repository root (the folder holding this ``serve`` package): replicas import ``serve.*`` from it.
REPO_ROOT = Path(__file__).resolve().parents[1]


def app_args_from_yaml(data: Mapping[str, Any]) -> dict[str, Any]:
    """AppArgs fields from a YAML document: a Serve config (its first application's
    ``args``) or the fields themselves."""
    if "applications" in data:
        apps = data["applications"] or []
        if not apps:
            raise ValueError("the Serve config has no applications")
        return dict(apps[0].get("args") or {})
    return dict(data)


def validated_args(app_args: Mapping[str, Any]) -> Any:
    """:class:`serve.app.AppArgs` from plain fields; a mistake is one ``ConfigError`` line naming
    the key (the command line reports it without a traceback), as for every other config.

    Raises:
        ConfigError: an unknown key or a value the field does not accept.
    """
    import pydantic

    from serve.app import AppArgs
    from synthray.errors import ConfigError
    from synthray.typed_config import explain

    try:
        return AppArgs.model_validate(dict(app_args))
    except pydantic.ValidationError as err:
        raise ConfigError(explain(AppArgs, err)) from None


def start(
    app_args: Mapping[str, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    num_cpus: int | None = None,
    name: str = "synthray",
) -> str:
    """Starts Ray (or joins ``address``), Serve's HTTP proxy and the app; returns its URL.

    Args:
        app_args: :class:`serve.app.AppArgs` fields.
        host, port: where the HTTP proxy listens.
        address: a running Ray cluster; None starts a local one.
        num_cpus: CPUs of the local cluster (None: all).
        name: the Serve application name.
    """
    import ray
    from ray import serve

    from serve.app import build_app

    args = validated_args(app_args)  # fail on bad arguments before starting anything
    # Replicas import this package; from any working directory they find it through PYTHONPATH.
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address=address or "local",
        num_cpus=num_cpus if address is None else None,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name=name, route_prefix="/")
    url = f"http://{host}:{port}"
    log.info("synthray is serving at %s (OpenAPI at %s/docs); Ctrl-C stops it", url, url)
    return url


def drain(name: str, replicas: int, timeout_s: float) -> bool:
    """Lets the app's ingress replicas finish what they took, admitting nothing new.

    Each call to an ingress replica's ``drain`` closes its gate (new API requests: 503
    ``shutting_down`` with Retry-After; /readyz: 503) and reports how many requests it still
    works on; calls repeat until every one of ``replicas`` has reported 0 or ``timeout_s``
    passes. A closed gate admits nothing, so a replica that reported 0 stays at 0.

    Returns:
        True when every replica finished its requests in time.
    """
    from ray import serve

    handle = serve.get_app_handle(name)
    start = time.monotonic()
    deadline = start + timeout_s
    latest: dict[str, int] = {}
    while True:
        report = handle.drain.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
        if report["replica"] not in latest:
            log.info(
                "draining: ingress replica %s had %d request(s) in progress", report["replica"], report["in_flight"]
            )
        latest[report["replica"]] = report["in_flight"]
        if len(latest) >= replicas and not any(latest.values()):
            log.info("drained in %.1f s: every request in progress was answered", time.monotonic() - start)
            return True
        if time.monotonic() >= deadline:
            log.warning(
                "drain: %d request(s) still in progress after %.0f s; stopping anyway", sum(latest.values()), timeout_s
            )
            return False
        time.sleep(0.1)


def serve_forever(app_args: Mapping[str, Any], **kwargs: Any) -> None:
    """:func:`start`, then block until Ctrl-C (or SIGTERM); then drain (:func:`drain`, at most
    ``graceful_shutdown_timeout_s``; a second Ctrl-C skips it) and stop Serve and Ray."""
    import signal

    import ray
    from ray import serve

    args = validated_args(app_args)
    started = False
    try:
        start(app_args, **kwargs)
        started = True
        # After start: ray.init installs its own SIGTERM handler; a plain kill should stop cleanly too.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        if started:
            log.info(
                "stopping: finishing the requests in progress first (at most %.0f s; Ctrl-C again to stop at once)",
                args.graceful_shutdown_timeout_s,
            )
            try:
                drain(kwargs.get("name", "synthray"), args.ingress_replicas, args.graceful_shutdown_timeout_s)
            except KeyboardInterrupt:
                log.warning("stopping at once")
            except Exception as exc:  # noqa: BLE001 - a failed drain must not keep the process from stopping
                log.warning("drain failed (%s: %s); stopping anyway", type(exc).__name__, exc)
        else:
            log.info("stopping")
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
