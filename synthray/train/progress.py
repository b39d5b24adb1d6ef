"""Training progress a person can follow: a line every few seconds with the step, the loss,
the rate and an ETA, not only one line per epoch.

Rank 0 logs the lines and appends the same records to ``<run>/progress.jsonl``. A driver
whose workers' output is not forwarded (the demo sends Ray's worker logs to files) follows
that file instead (:func:`following`), so the person at the terminal still sees the steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(record: dict[str, Any]) -> str:
    """One log line for a progress record (a step record or an epoch's metrics)."""
    if record.get("kind") == "epoch":
        return (
            f"epoch {record['epoch'] + 1}/{record['epochs']}: train_loss {record['train_loss']:.4f} "
            f"val_loss {record['val_loss']:.4f} val_knn_acc {record['val_knn_acc']:.3f} "
            f"({record['train_images_per_s']:.0f} img/s)"
            + (f" model {record['model_version']}" if record.get("model_version") else "")
        )
    return (
        f"step {record['step']}/{record['total_steps']} (epoch {record['epoch'] + 1}/{record['epochs']}): "
        f"loss {record['loss']:.4f}, {record['images_per_s']:.0f} img/s, ETA {_duration(record['eta_s'])}"
    )


class StepProgress:
    """Reports training progress at most every ``every_s`` seconds, and at each epoch's end.

    Args:
        total_steps: optimizer steps of the whole run (epochs x steps per epoch).
        epochs: epochs of the whole run.
        first_step: the step this attempt starts at (a resumed run does not count the
            steps before it in its rate). The rate is measured from the first step's end:
            the first step carries the start-up (workers, the data pipeline's first batch)
            and would make the ETA of the first lines hours long.
        file: where records are appended (rank 0); None: log only.
        every_s: the least time between two step lines.
        max_lines: about how many step lines a whole run gets: a long run spaces them
            out (its expected length / ``max_lines``) so the terminal keeps a screenful.
    """

    def __init__(
        self,
        total_steps: int,
        epochs: int,
        first_step: int = 0,
        file: Path | None = None,
        every_s: float = 10.0,
        max_lines: int = 25,
    ) -> None:
        self.total_steps, self.epochs, self.file, self.every_s = total_steps, epochs, file, every_s
        self._min_every_s, self.max_lines = every_s, max_lines
        self._first_step = first_step
        self._start: float | None = None  # set at the end of this attempt's first step
        self._last = 0.0
        self._images = 0
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text("")  # this attempt's records only: a resumed run starts the file again

    def step(self, step: int, epoch: int, loss: float, images: int) -> None:
        """Counts one optimizer step (``images`` in its batch); reports when it is time."""
        now = time.perf_counter()
        if self._start is None:  # the clock starts after the first step (see the class docstring)
            self._start = self._last = now
            self._first_step = step
            return
        self._images += images
        if now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self._start
        done = step - self._first_step
        eta = (self.total_steps - step) * elapsed / done if done > 0 else float("nan")
        if not math.isnan(eta):  # space the lines over the expected length of the run
            self.every_s = max(self._min_every_s, (elapsed + eta) / self.max_lines)
        self._emit(
            {
                "kind": "step",
                "step": step,
                "total_steps": self.total_steps,
                "epoch": epoch,
                "epochs": self.epochs,
                "loss": loss,
                "images_per_s": self._images / elapsed,
                "eta_s": eta,
            }
        )

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Reports an epoch's metrics (what Ray Train's report carries)."""
        self._emit({"kind": "epoch", "epochs": self.epochs, **metrics})

    def _emit(self, record: dict[str, Any]) -> None:
        log.info("%s", describe(record))
        if self.file is not None:
            with open(self.file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def following(file: Path, interval_s: float = 1.0) -> Iterator[None]:
    """Logs the records appended to ``file`` while the block runs (a background thread reads
    it every ``interval_s``), and any left when the block ends."""
    stop = threading.Event()
    offset = 0

    def read_new() -> None:
        nonlocal offset
        try:
            if file.stat().st_size < offset:  # the file was started again (a new attempt)
                offset = 0
            with open(file, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            try:
                log.info("train: %s", describe(json.loads(line)))
            except (ValueError, KeyError) as e:  # a record this version cannot show: skip it
                log.debug("progress record not shown (%s): %s", e, line)

    def run() -> None:
        while not stop.wait(interval_s):
            read_new()

    thread = threading.Thread(target=run, name="synthray-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        read_new()
