"""The command line's habits: one version everywhere, a config mistake in one line (exit 2),
a bug with its traceback, Ctrl-C as exit 130."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import synthray
from synthray import cli
from synthray.errors import ConfigError


def test_cli_package_metadata_and_module_report_one_version():
    out = subprocess.run([sys.executable, "-m", "synthray", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"synthray {synthray.__version__}"
    assert importlib.metadata.version("synthray") == synthray.__version__


def test_a_config_mistake_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "index.yaml"
    cfg.write_text("index:\n  per_clas: 5\n")
    out = subprocess.run(
        [sys.executable, "-m", "synthray", "index", "--config", str(cfg), "--no-ray"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "unknown config keys ['per_clas']" in out.stderr and "Traceback" not in out.stderr


def test_a_bug_keeps_its_traceback_and_ctrl_c_is_exit_130(monkeypatch):
    def buggy(args):
        raise TypeError("unsupported operand")  # a programming error, not a config one

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_index", buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["index", "--no-ray"])
    monkeypatch.setattr(cli, "cmd_index", interrupted)
    assert cli.main(["index", "--no-ray"]) == 130
    assert issubclass(ConfigError, TypeError) and issubclass(ConfigError, ValueError)
