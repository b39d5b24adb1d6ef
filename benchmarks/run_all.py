"""Runs every benchmark and writes one Markdown table of the figures.

Each benchmark runs as its own process (as a user would run it) with ``--json``; this
script collects the rows: figure, the plain baseline it was compared with in the same
run, the ratio, and the machine.

    python benchmarks/run_all.py                 # quick sizes, minutes on 2 CPU cores
    python benchmarks/run_all.py --full          # the sizes quoted in the README
    python benchmarks/run_all.py --only index serve --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import read_rows  # benchmarks/results.py (the script's folder is on sys.path)

log = logging.getLogger("run_all")
HERE = Path(__file__).resolve().parent

#: benchmark -> (script, quick arguments, full arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "preprocess": (
        "bench_preprocess.py",
        ["--images", "600", "--repeats", "3", "--cpus", "1", "2"],
        ["--images", "3000", "--repeats", "3"],
    ),
    "train": ("bench_train.py", ["--epochs", "2", "--steps", "8", "--per-class", "120"], []),
    "index": ("bench_index.py", ["--quick"], []),
    "serve": ("bench_serve.py", ["--quick"], []),
}


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def table(results: dict[str, Path], failures: dict[str, str], seconds: dict[str, float]) -> str:
    lines, machine = [], None
    body = [
        "| benchmark | figure | median (lowest-highest) | runs | baseline (same run) | baseline median | ratio "
        "| notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, path in results.items():
        machine, rows = read_rows(path)
        for r in rows:
            ratio = f"x{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            value = f"{_fmt(r['value'])} {r['unit']}"
            if r.get("spread"):
                value += f" ({_fmt(r['spread'][0])}-{_fmt(r['spread'][1])})"
            body.append(
                f"| {name} | {r['measure']} | {value} | {r.get('runs', 1)} | {r['baseline'] or '-'} | "
                f"{_fmt(r['baseline_value'])} | {ratio} | {r['notes']} |"
            )
    if machine:
        gpu = machine.get("gpu") or "no GPU"
        lines.append(
            f"Machine: {machine['cpus']} CPU cores, {gpu}, {machine['platform']}, Python {machine['python']}, "
            f"torch {machine.get('torch')}, Ray {machine.get('ray')}."
        )
        lines.append(
            "Ratios > 1 mean better than the baseline (faster, or lower latency). Each figure is the "
            "median of its runs, the baseline measured as many times in the same run."
        )
        lines.append("")
    lines += body
    lines.append("")
    lines.append("Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for name, why in failures.items():
        lines.append(f"- **{name} failed**: {why}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full sizes instead of the quick ones")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run just these")
    parser.add_argument("--out", default="benchmarks/RESULTS.md", help="where the Markdown table goes")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    results: dict[str, Path] = {}
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(BENCHMARKS):
            script, quick, full = BENCHMARKS[name]
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(HERE / script), *(full if args.full else quick), "--json", str(out)]
            log.info("running %s: %s", name, " ".join(cmd[1:]))
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                failures[name] = f"timed out after {args.timeout} s"
                continue
            finally:
                seconds[name] = time.perf_counter() - t0
            sys.stdout.write(proc.stdout)  # each benchmark's own table, as it printed it
            if proc.returncode != 0 or not out.exists():
                failures[name] = f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
                continue
            results[name] = out
        text = table(results, failures, seconds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    sys.stdout.write("\n" + text)
    log.info("table written to %s", args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
