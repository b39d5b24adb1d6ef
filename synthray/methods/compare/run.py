"""``run_compare``: every method of a comparison fitted, scored and explained on the same data,
one row each, the outputs rewritten after every method."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthray.config import PreprocessConfig, to_dict
from synthray.data.files import write_json_atomic, write_text_atomic
from synthray.data.schema import REAL
from synthray.methods.base import FitContext, Method, count_parameters
from synthray.methods.compare.chart import bar_chart
from synthray.methods.compare.predict import explain_method, pick_explained, predict_all
from synthray.methods.compare.resume import earlier_rows, reusable, save_explanations
from synthray.methods.compare.settings import CompareConfig, MethodSpec
from synthray.methods.compare.table import markdown_table
from synthray.methods.compare.testset import TestSet, finalized, load_test_set
from synthray.methods.explain import Explanation, explanation_figure
from synthray.methods.registry import build_method
from synthray.methods.scoring import score_predictions

log = logging.getLogger(__name__)

#: A method's explanations, by row name, as the figure draws them.
FigureRows = list[tuple[str, list[Explanation | None]]]


@dataclasses.dataclass
class _Bench:
    """What every method of one comparison shares: the classes, the test set, the explained images."""

    cfg: CompareConfig
    device: torch.device
    out: Path
    preprocess: PreprocessConfig  # the config's, without augmentation
    seen: list[str]
    held: list[str]
    test: TestSet
    ctx: FitContext
    explained: list[int]  # test images explained (indices)
    explain_images: torch.Tensor | None  # those images, finalized; None when none is explained


def run_compare(cfg: CompareConfig, device: str | torch.device | None = None) -> dict[str, Any]:
    """Runs the comparison and writes its outputs to ``cfg.out``.

    Args:
        cfg: the comparison.
        device: torch device; None = the preprocess config's ("auto": CUDA when present).
    Returns:
        what ``compare.json`` holds.
    Raises:
        ValueError / FileNotFoundError: bad shards, classes or settings (before any training);
            a failing method only when ``keep_going`` is False.
    """
    bench = _prepare(cfg, device)
    earlier = earlier_rows(bench.out, cfg, bench.seen, bench.held, len(bench.test.labels)) if cfg.resume else {}
    rows: list[dict[str, Any]] = []
    figure_rows: FigureRows = []
    for spec in cfg.specs:
        rows.append(_run_method(spec, bench, earlier, figure_rows))
        # Written after every method, a reused one too: a comparison stopped half-way keeps
        # what it measured, and a run that reuses every row still writes them all.
        result = _result(bench, rows)
        write_json_atomic(bench.out / "compare.json", result, indent=2, default=str)
        write_text_atomic(bench.out / "compare.md", markdown_table(result))
    bar_chart(rows, bench.out / "compare.png")
    if bench.explain_images is not None and figure_rows:
        _explanation_figure(bench, figure_rows)
    return result


def _run_method(spec: MethodSpec, bench: _Bench, earlier: dict[str, Any], figure_rows: FigureRows) -> dict[str, Any]:
    """One method's row: reused from the last run when nothing it depends on changed, else
    fitted and scored (a failure is the row's ``error``, unless ``keep_going`` is False)."""
    row: dict[str, Any] = {"method": spec.row, "registered": spec.name}
    try:
        method = build_method(spec.name, spec.params, bench.cfg.overrides)
        row["config"] = dataclasses.asdict(method.cfg)
        reused = reusable(earlier.get(spec.row), row, bench.out, bench.explained)
        if reused is not None:
            log.info("== %s: unchanged since the last run, its row is reused (resume: false re-runs it)", spec.row)
            if reused[1] is not None:
                figure_rows.append((spec.row, reused[1]))
            return reused[0]
        _fit_and_score(method, row, bench, figure_rows)
    except Exception as exc:  # one method's failure is its row, not the comparison's end
        if not bench.cfg.keep_going:
            raise
        log.exception("%s failed", spec.row)
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _prepare(cfg: CompareConfig, device: str | torch.device | None) -> _Bench:
    """The classes of the experiment, the test set and the images to explain (no method yet)."""
    from synthray.data.pipeline import class_counts
    from synthray.data.preprocess import resolve_device
    from synthray.train.experiments import select_classes

    dev = torch.device(device) if device is not None else resolve_device(cfg.preprocess.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = dataclasses.replace(cfg.preprocess, augment=[], seed=None)
    seen, held = select_classes(class_counts(cfg.shards, "train"), cfg.experiment)
    classes = seen + held
    test = load_test_set(cfg.shards, classes, preprocess, cfg.pipeline, cfg.test_per_class, cfg.seed)
    log.info(
        "compare: %d methods, seen %s, zero-shot %s, %d test images on %s",
        len(cfg.methods),
        seen,
        held,
        len(test.labels),
        dev,
    )
    ctx = FitContext(
        shards=cfg.shards,
        classes=seen,
        held_out=held,
        experiment=cfg.experiment,
        preprocess=preprocess,
        pipeline=cfg.pipeline,
        device=dev,
        work_dir=out / "work",
        seed=cfg.seed,
        references_per_class=cfg.references_per_class,
    )
    explained = pick_explained(test, seen, held, cfg.explain.images)
    explain_images = finalized(test, np.array(explained, dtype=np.int64), preprocess, dev) if explained else None
    return _Bench(cfg, dev, out, preprocess, seen, held, test, ctx, explained, explain_images)


def _fit_and_score(method: Method, row: dict[str, Any], bench: _Bench, figure_rows: FigureRows) -> None:
    """Fits the method, scores it and explains its answers, filling ``row`` as it goes (a failure
    part-way keeps in the row what was measured before it)."""
    cfg, test, name = bench.cfg, bench.test, row["method"]
    log.info("== %s: fit", name)
    t0 = time.perf_counter()
    fit_info = method.fit(bench.ctx)
    row["train_s"] = round(time.perf_counter() - t0 + float(fit_info.get("shared_s", 0.0)), 2)
    row["fit"] = fit_info
    pred, speed = predict_all(method, test, bench.preprocess, bench.device, cfg.predict_batch_size)
    row.update(score_predictions(test.labels, pred, bench.seen, bench.held, method.attributes))
    row.update(
        head="attribution" if method.attributes else "real/AI",
        infer_img_s=round(speed, 1),
        params=count_parameters(method.modules()),
    )
    if bench.explain_images is not None:
        exps = explain_method(method, bench.explain_images, list(pred.labels[bench.explained]), cfg.explain)
        row["explained_scores"] = [None if e is None else round(e.score, 4) for e in exps]
        row["explained_images"] = [int(i) for i in bench.explained]
        figure_rows.append((name, exps))
        save_explanations(bench.out, name, exps)
    log.info(
        "== %s: acc %s AUC %s F1 seen %s zero-shot %s (%.1f s)",
        name,
        row["acc"],
        row["auc"],
        row["f1_seen"],
        row["f1_zero_shot"],
        row["train_s"],
    )


def _result(bench: _Bench, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``compare.json`` holds after the methods run so far."""
    return {
        "config": to_dict(bench.cfg),
        "device": str(bench.device),
        "classes": {"seen": bench.seen, "zero_shot": bench.held},
        "n_test": int(len(bench.test.labels)),
        "n_real_test": int((bench.test.labels == REAL).sum()),
        "rows": rows,
        "complete": len(rows) == len(bench.cfg.methods),
    }


def _explanation_figure(bench: _Bench, figure_rows: FigureRows) -> None:
    """``explanations.png``: the explained test images, a row of maps per method."""
    test = bench.test
    shown = [(test.pixels[i].transpose(1, 2, 0) / 255.0) for i in bench.explained]
    titles = [f"{test.labels[i]}" + (" (zero-shot)" if test.labels[i] in bench.held else "") for i in bench.explained]
    explanation_figure(shown, figure_rows, titles, bench.out / "explanations.png")
