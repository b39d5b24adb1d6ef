"""The README's Ray CLI lines, run verbatim as a user on a fresh machine types them.

Ray 2.60 turns token authentication on for ``ray start`` once a token exists, and a client
that is not told (``RAY_AUTH_MODE=token``) then fails with "Missing authentication token".
This test copies the repository (tracked files) into a fresh folder, gives it the demo's
shards (a small synthbench with the demo's families) and a HOME with no Ray token, and runs
the README block between ``<!-- ray-cli:begin -->`` and ``<!-- ray-cli:end -->`` with bash,
unchanged: ``ray start`` on Ray's default ports, ``ray job submit`` of the training job,
``ray stop``.

Default ports would collide with the session's own Ray cluster, so the block runs in a
private network namespace and PID namespace (``unshare``, root; CI runs as root): the
cluster binds 127.0.0.1 there, and whatever the block leaves running dies with the namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
#: Brings the namespace's loopback up (no iproute2 needed): SIOCGIFFLAGS, then SIOCSIFFLAGS | IFF_UP.
LOOPBACK_UP = (
    "import fcntl, socket, struct; s = socket.socket(); "
    "flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]; "
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', flags | 1))"
)


def readme_block(name: str) -> str:
    """The shell block of the README between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- {name}:begin -->\n```sh\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert found, f"README has no {name} block"
    return found.group(1)


def _copy_repo(dest: Path) -> None:
    """The files a fresh clone has (tracked, plus new ones git does not ignore); no runs/, no caches."""
    listed = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # `make install` made the environment; the copy uses the same one.
    (dest / ".venv").symlink_to(Path(sys.prefix))


def _demo_shards(repo: Path) -> None:
    """runs/demo/shards as `make demo` leaves them, at a small size: the demo's families
    (its held-out ones included), photographs split by source, ingested."""
    from synthray.config import DemoConfig

    demo = DemoConfig()
    cfg = repo / "synthbench.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "synthbench": {
                    "per_class": 16,
                    "real_per_class": 48,
                    "resolution": demo.resolution,
                    "procedural": demo.procedural,
                    "train_steps": 10,
                    "held_out": list(demo.held_out),
                }
            }
        )
    )
    for argv in (
        ["synthbench", str(repo / "runs/demo/synthbench"), "--config", str(cfg)],
        ["ingest", "folder", str(repo / "runs/demo/synthbench"), str(repo / "runs/demo/shards"), "--no-ray"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "synthray", *argv], capture_output=True, text=True, timeout=900, cwd=repo
        )
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.timeout(1800)
def test_the_readme_ray_cli_block_runs_as_written_on_a_fresh_machine(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace (CI has both)")
    block = readme_block("ray-cli")
    assert "RAY_AUTH_MODE=token" in block and "ray start" in block and "ray job submit" in block
    repo = tmp_path / "synthray"
    _copy_repo(repo)
    _demo_shards(repo)
    (repo / "readme-block.sh").write_text(block)
    home = tmp_path / "home"
    home.mkdir()
    # Ray's session folders hold unix sockets, whose paths must stay under 108 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="srcli", dir="/tmp")
    # A fresh login: no Ray token, no virtualenv on PATH (the block activates it).
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(str(Path(sys.prefix)))
    )
    env = {"HOME": str(home), "PATH": path or "/usr/bin:/bin", "TMPDIR": ray_tmp, "LANG": "C.UTF-8"}
    script = f'{sys.executable} -c "{LOOPBACK_UP}" && cd {repo} && exec bash -e readme-block.sh'
    try:
        done = subprocess.run(
            ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc", "bash", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "AuthenticationError" not in out
    assert (home / ".ray" / "auth_token").is_file()  # the block made the token it used
    assert re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-3000:]
    history = [json.loads(line) for line in (repo / "runs/ray-cli/supcon-cpu/metrics.jsonl").read_text().splitlines()]
    # One epoch of at most the 10 steps the block asks for (this small benchmark may run out first).
    assert [h["epoch"] for h in history] == [0] and 1 <= history[0]["step"] <= 10
