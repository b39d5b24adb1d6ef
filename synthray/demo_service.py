"""The demo's last acts: the Serve app answering over HTTP, few-shot enrollment, discovery.

Starts the app on the demo's Ray cluster, attributes a few test images of known classes,
then shows the product's central promise on a generator family the encoder never saw:
its test images are attributed before enrollment (unknown or wrong), 50 of its training
images are enrolled over HTTP, and the same test images are attributed again. Only the
public HTTP API is used (through :mod:`synthray.client`), as a user would. Then a second
unseen family arrives one image at a time, as live traffic: the service gathers its unknown
answers into a discovery, which is enrolled by one call.
"""

from __future__ import annotations

import collections
import logging
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from synthray.data.schema import REAL

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def class_images(shards: str | Path, split: str, generator: str, count: int) -> list[tuple[str, bytes]]:
    """``count`` images of one class and split (the same ones every run): (file name, bytes)."""
    from synthray.data.manifest import read_labels
    from synthray.data.pipeline import find_shards
    from synthray.eval.data import iter_images, select_rows

    rows = select_rows(read_labels(find_shards(shards)), split, [generator], cap=count)
    if len(rows) == 0:
        raise ValueError(f"no {split} images of {generator!r} in {shards}")
    names = dict(zip(rows.content_hash, rows.source_path))
    out: list[tuple[str, bytes]] = []
    for hashes, images in iter_images(shards, split, rows.content_hash, batch_size=64):
        out.extend((Path(names[h]).name, b) for h, b in zip(hashes, images))
    return out


def _tally(results: Sequence[dict[str, Any]], truth: str) -> dict[str, Any]:
    labels = collections.Counter(r["label"] for r in results)
    return {
        "images": len(results),
        "correct": labels.get(truth, 0),
        "accuracy": round(labels.get(truth, 0) / max(1, len(results)), 3),
        "labels": dict(labels.most_common()),
    }


def start_app(out: Path, checkpoint: str, store_path: str, port: int = 0) -> tuple[str, str]:
    """Deploys the Serve app on the running Ray cluster; returns (URL, API key).

    The write key is a fresh random one in ``<out>/api_key`` (mode 600): the app reads it
    from that file, as it would from a mounted secret.
    """
    from ray import serve

    from serve.app import AppArgs, build_app
    from synthray.discovery.config import DiscoveryConfig
    from synthray.index.config import StoreConfig

    key = secrets.token_urlsafe(24)
    key_file = out / "api_key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    port = port or free_port()
    # The CPU demo's encoder answers most images of an unseen family with a similar trained
    # generator's name by a tiny margin rather than "unknown" (vq_vae: median confidence 0.003,
    # real photographs 0.058): such uncertain answers go to the discovery inbox too.
    args = AppArgs(
        checkpoint=checkpoint,
        store=StoreConfig(path=store_path),
        api_key_file=str(key_file.resolve()),
        device="cpu",
        discovery=DiscoveryConfig(low_confidence=0.02),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="synthray", route_prefix="/")
    return f"http://127.0.0.1:{port}", key


def discovery_story(
    client: Any, shards: str | Path, family: str, count: int = 60, query_count: int = 20, seen: Iterable[str] = ()
) -> dict[str, Any]:
    """The discovery act: ``count`` images of ``family`` sent one request each, as live traffic
    arrives; the discovery that gathers them, its enrollment by one call, and the family's test
    images attributed before and after, with what the enrollment did to other images (test
    images of up to 10 seen classes and real photographs). Leaves the index as it found it."""
    import hashlib

    queries = [b for _, b in class_images(shards, "test", family, query_count)]
    before = client.attribute(queries)["results"]
    others = [(c, b) for c in [c for c in seen if c != REAL][:10] for _, b in class_images(shards, "test", c, 3)]
    others += [(REAL, b) for _, b in class_images(shards, "test", REAL, query_count)]

    def others_right() -> float:
        answers = client.attribute([b for _, b in others])["results"] if others else []
        return round(sum(a["label"] == c for (c, _), a in zip(others, answers)) / max(1, len(others)), 3)

    others_before = others_right()
    stream = class_images(shards, "train", family, count)
    answered = [client.attribute([data])["results"][0]["label"] for _, data in stream]
    sent = {hashlib.sha256(data).hexdigest() for _, data in stream}
    listing = client.discoveries(refresh=True)
    found = []
    for d in listing["discoveries"]:
        members = set(client.discovery(d["id"], members=True)["members"])
        found.append((len(members & sent), len(members), d))
    result: dict[str, Any] = {
        "family": family,
        "sent": len(stream),
        "answered": dict(collections.Counter(answered)),
        "inbox": listing["inbox"],
        "discoveries": len(found),
        "before": _tally(before, family),
    }
    if not found or max(found, key=lambda f: f[0])[0] == 0:
        log.warning(
            "discovery act: no discovery gathered the %d %s images (answered %s)",
            len(stream),
            family,
            result["answered"],
        )
        return result
    held, size, best = max(found, key=lambda f: f[0])
    enrolled = client.enroll_discovery(best["id"], family)
    after = client.attribute(queries)["results"]
    result.update(
        {
            "discovery": best["id"],
            "gathered": held,
            "size": size,
            "cohesion": best["cohesion"],
            "enrolled": enrolled["enrolled"],
            "source": enrolled["source"],
            "after": _tally(after, family),
            "others_right_before": others_before,
            "others_right_after": others_right(),
        }
    )
    log.info(
        "discovery act: %d %s images sent one by one (%s); discovery %s gathered %d of them (size %d); "
        "enrolled by one call: its test images named %d/%d before, %d/%d after; other classes' test images "
        "right %.2f before, %.2f after",
        len(stream),
        family,
        result["answered"],
        best["id"],
        held,
        size,
        result["before"]["correct"],
        len(before),
        result["after"]["correct"],
        len(after),
        result["others_right_before"],
        result["others_right_after"],
    )
    client.delete(family)
    return result


def service_story(
    out: Path,
    shards: str | Path,
    checkpoint: str,
    store_path: str,
    seen: Iterable[str],
    family: str,
    enroll_count: int = 50,
    query_count: int = 20,
    port: int = 0,
    discover_family: str | None = None,
    discover_count: int = 60,
) -> dict[str, Any]:
    """Serve, attribute, enroll ``family``, attribute again; returns the figures.

    Args:
        out: demo folder (the API key file goes here).
        shards: the demo's shards (test images are queried, train images enrolled).
        checkpoint: the encoder's checkpoint or run folder.
        store_path: the embedded index the app serves (built by the index stage).
        seen: classes in the index; a few test images of each are attributed first.
        family: a held-out generator family to enroll.
        enroll_count: images enrolled (from the train split).
        query_count: test images per class attributed.
        port: HTTP port (0 picks a free one).
        discover_family: a second held-out family for the discovery act (None: no act).
        discover_count: its images sent one by one.
    """
    from ray import serve

    from synthray.client import SynthrayClient

    t0 = time.perf_counter()
    url, key = start_app(out, checkpoint, store_path, port)
    try:
        client = SynthrayClient(url, api_key=key)
        client.wait_ready(timeout_s=300)
        started_s = time.perf_counter() - t0
        log.info("Serve app ready at %s after %.0f s", url, started_s)

        known: dict[str, Any] = {}
        for name in seen:
            images = class_images(shards, "test", name, max(1, query_count // 4))
            known[name] = _tally(client.attribute([b for _, b in images])["results"], name)
        listed = {g["name"]: g for g in client.generators()["generators"]}
        if listed.get(family, {}).get("enrolled"):  # a re-run: start from the un-enrolled state again
            log.info("removing %r's earlier enrollment so 'before' is measured without it", family)
            client.delete(family)
        queries = class_images(shards, "test", family, query_count)
        # Real test photographs: an enrollment must not make them look generated.
        reals = [b for _, b in class_images(shards, "test", REAL, 3 * query_count)]
        before = client.attribute([b for _, b in queries])["results"]
        real_before = client.attribute(reals)["results"]
        t1 = time.perf_counter()
        enrolled = client.enroll(family, [b for _, b in class_images(shards, "train", family, enroll_count)])
        enroll_s = time.perf_counter() - t1
        after = client.attribute([b for _, b in queries])["results"]
        real_after = client.attribute(reals)["results"]
        generators = client.generators()
        # Leave the index as the index stage built it (a re-run, or an evaluation against
        # it, then starts from the same state); DELETE is part of the API tour anyway.
        deleted = client.delete(family)["deleted"]
        result = {
            "url": url,
            "api_key_file": str((out / "api_key").resolve()),
            "startup_s": round(started_s, 1),
            "known_classes": known,
            "enrollment": {
                "family": family,
                "enrolled": enrolled["enrolled"],
                "unchanged": enrolled["unchanged"],
                "rejected": len(enrolled["rejected"]),
                "seconds": round(enroll_s, 2),
                "before": _tally(before, family),
                "after": _tally(after, family),
                "real_before": _tally(real_before, REAL),
                "real_after": _tally(real_after, REAL),
                "calibration": enrolled.get("calibration"),
            },
            "generators": {g["name"]: g["counts"] for g in generators["generators"]},
            "deleted_after": deleted,
        }
        e = result["enrollment"]
        log.info(
            "enrolled %d images of %r in %.1f s: its test images attributed right %d/%d before, %d/%d after",
            e["enrolled"],
            family,
            enroll_s,
            e["before"]["correct"],
            len(before),
            e["after"]["correct"],
            len(after),
        )
        if discover_family:
            result["discovery"] = discovery_story(
                client, shards, discover_family, discover_count, query_count, seen=list(seen)
            )
        return result
    finally:
        serve.shutdown()
