"""Train and score a list of detector methods on one data set and protocol, side by side.

For a shard folder and an experiment setting (which classes train, which are held out as
zero-shot; :func:`synthray.train.experiments.select_classes`), every chosen method is built
from the registry, trained by its ``fit`` on the same :class:`FitContext` and scored on the
same test images by ``scoring.py``. Written to ``out``:

- ``compare.json``: the resolved config, the classes, one row per method (every metric,
  training facts, the method's config), and the explanation scores;
- ``compare.md``: the table (accuracy, AUC, in-sample / zero-shot detection accuracy,
  F1 seen / zero-shot, training seconds, inference images/s, parameters);
- ``compare.png``: a bar chart of the metrics; ``explanations.png``: saliency and LIME maps
  of a few test images for every method that can explain its prediction.

A method that fails (bad settings, a binary head without real images, ...) is reported
with its error and the others still run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthray.errors import ConfigError
from synthray.config import ExperimentConfig, PipelineConfig, PreprocessConfig, from_dict, to_dict
from synthray.data.schema import REAL
from synthray.methods.base import FitContext, Method, Prediction, count_parameters
from synthray.methods.explain import ExplainConfig, Explanation, explain_score, explanation_figure
from synthray.methods.registry import build_method, list_methods
from synthray.methods.scoring import score_predictions

log = logging.getLogger(__name__)

#: What `synthray compare` runs when no method list is given: one of each family.
DEFAULT_METHODS = (
    "supcon_knn",
    "supcon_centroid",
    "supcon_comparator",
    "supcon_mlp",
    "euclidean_knn",
    "small_cnn",
    "resnet50_sigmoid",
    "resnet50_transfer",
    "resnet50_fractal_combined",
    "cnn_autoencoder",
)
#: Table columns: (key in a row, header).
COLUMNS = (
    ("acc", "acc"),
    ("auc", "AUC"),
    ("acc_seen", "acc in-sample"),
    ("acc_zero_shot", "acc zero-shot"),
    ("f1_seen", "F1 seen"),
    ("f1_zero_shot", "F1 zero-shot"),
    ("train_s", "train s"),
    ("infer_img_s", "infer img/s"),
    ("params", "params"),
)


@dataclasses.dataclass
class MethodSpec:
    """One method of a comparison."""

    name: str  # registered method (see synthray.methods.list_methods())
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # its own config fields
    label: str | None = None  # row name; None = name (set it to run one method twice with other params)

    @property
    def row(self) -> str:
        return self.label or self.name


def _default_experiment() -> ExperimentConfig:
    from synthray.data.synthbench.build import DEFAULT_HELD_OUT

    return ExperimentConfig(setting="ES4", held_out=DEFAULT_HELD_OUT)


@dataclasses.dataclass
class ExplainFigureConfig:
    """The explanation figure of a comparison."""

    images: int = 2  # test images explained per method (0 = no figure); a seen and a zero-shot one first
    kinds: tuple[str, ...] = ("saliency", "lime")
    lime: ExplainConfig = dataclasses.field(default_factory=lambda: ExplainConfig(n_samples=150, n_segments=30))


@dataclasses.dataclass
class CompareConfig:
    """A side-by-side comparison of detector methods."""

    shards: str = "runs/demo/shards"  # ingest output folder
    out: str = "runs/compare"  # where the table, JSON and figures go (and the methods' scratch)
    methods: list[Any] = dataclasses.field(default_factory=lambda: list(DEFAULT_METHODS))  # names or MethodSpec dicts
    # Settings given to every method whose config has the field (e.g. backbone, steps,
    # batch_size, lr); a method's own params win.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Which classes train; the rest of the data's classes are zero-shot. Default: ES4 with the
    # built-in benchmark's held-out families.
    experiment: ExperimentConfig = dataclasses.field(default_factory=_default_experiment)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=lambda: PreprocessConfig(resolution=64))
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    references_per_class: int | None = None  # train images per class enrolled as references; None = all
    test_per_class: int | None = None  # test images per class scored; None = all
    predict_batch_size: int = 128  # test images per predict() call
    explain: ExplainFigureConfig = dataclasses.field(default_factory=ExplainFigureConfig)
    seed: int = 0
    keep_going: bool = True  # False: the first failing method stops the comparison
    # Reuse a method's row from an earlier compare.json in ``out`` when the method, its
    # resolved config, the data and the test set are the same (a stopped comparison goes on
    # where it stopped; a changed method is re-run). False: run everything again.
    resume: bool = True

    def __post_init__(self) -> None:
        specs = []
        for m in self.methods:
            if isinstance(m, MethodSpec):
                specs.append(m)
            elif isinstance(m, str):
                specs.append(MethodSpec(m))
            elif isinstance(m, dict):
                specs.append(from_dict(MethodSpec, m))
            else:
                raise ConfigError(f"a method is a name or {{name, params, label}}, got {m!r}")
        rows = [s.row for s in specs]
        dupes = sorted({r for r in rows if rows.count(r) > 1})
        if dupes:
            raise ValueError(f"methods {dupes} appear twice; give one of them a distinct label")
        known = set(list_methods())
        unknown = [s.name for s in specs if s.name not in known]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {sorted(known)}")
        if not specs:
            raise ValueError("no method to compare")
        self.methods = specs


@dataclasses.dataclass
class TestSet:
    """The test images every method is scored on (uint8, so each method finalises them itself)."""

    pixels: np.ndarray  # (N, 3, R, R) uint8
    labels: np.ndarray  # (N,) true class names


def load_test_set(
    shards: str,
    classes: list[str],
    preprocess: PreprocessConfig,
    pipeline: PipelineConfig,
    per_class: int | None,
    seed: int,
) -> TestSet:
    """Every test-split image of ``classes`` (at most ``per_class`` each), preprocessed once."""
    from synthray.data.loader import iter_preprocessed

    pipe = dataclasses.replace(pipeline, balance="none")
    pixels, labels = [], []
    taken = dict.fromkeys(classes, 0)
    for batch in iter_preprocessed(shards, classes, preprocess, pipe, split="test", seed=seed):
        names = np.array([classes[i] for i in batch["label"]], dtype=object)
        keep = [j for j, n in enumerate(names) if per_class is None or taken[n] < per_class]
        for j in keep:
            taken[names[j]] += 1
        pixels.append(batch["image"][keep])
        labels.append(names[keep])
    if not pixels or sum(len(p) for p in pixels) == 0:
        raise ValueError(f"{shards} has no test-split image of {classes}")
    return TestSet(np.concatenate(pixels), np.concatenate(labels))


def _images(test: TestSet, idx: slice | np.ndarray, preprocess: PreprocessConfig, device: torch.device) -> torch.Tensor:
    from synthray.data.preprocess import finalize_pixels

    return finalize_pixels(test.pixels[idx], preprocess, device)


def predict_all(
    method: Method, test: TestSet, preprocess: PreprocessConfig, device: torch.device, batch_size: int
) -> tuple[Prediction, float]:
    """The method's predictions for the whole test set and its inference images/s (model time only)."""
    parts, seconds = [], 0.0
    for s in range(0, len(test.labels), batch_size):
        x = _images(test, slice(s, s + batch_size), preprocess, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        parts.append(method.predict(x))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
    return Prediction.concat(parts), (len(test.labels) / seconds if seconds > 0 else float("inf"))


def pick_explained(test: TestSet, seen: list[str], held_out: list[str], n: int) -> list[int]:
    """Indices of the test images to explain: a seen generator's, a zero-shot one's, then real, then any."""
    order: list[int] = []
    for group in ([c for c in seen if c != REAL], list(held_out), [REAL]):
        hits = np.flatnonzero(np.isin(test.labels, group))
        if len(hits):
            order.append(int(hits[0]))
    order += [i for i in range(len(test.labels)) if i not in order]
    return order[:n]


def explain_method(
    method: Method, images: torch.Tensor, predicted: list[str], cfg: ExplainFigureConfig
) -> list[Explanation | None]:
    """Explanations of the method's predicted label for each image (None where it has no score)."""
    out: list[Explanation | None] = []
    for img, label in zip(images, predicted):
        fn = method.score_fn(label)
        out.append(None if fn is None else explain_score(fn, img, cfg.kinds, cfg.lime))
    return out


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
    earlier = _earlier_rows(out, cfg, seen, held, len(test.labels)) if cfg.resume else {}
    explain_images = _images(test, np.array(explained, dtype=np.int64), preprocess, dev) if explained else None
    rows: list[dict[str, Any]] = []
    figure_rows: list[tuple[str, list[Explanation | None]]] = []
    for spec in cfg.methods:
        row: dict[str, Any] = {"method": spec.row, "registered": spec.name}
        try:
            method = build_method(spec.name, spec.params, cfg.overrides)
            row["config"] = dataclasses.asdict(method.cfg)
            reused = _reusable(earlier.get(spec.row), row, out, explained)
            if reused is not None:
                log.info("== %s: unchanged since the last run, its row is reused (resume: false re-runs it)", spec.row)
                rows.append(reused[0])
                if reused[1] is not None:
                    figure_rows.append((spec.row, reused[1]))
                continue
            log.info("== %s: fit", spec.row)
            t0 = time.perf_counter()
            fit_info = method.fit(ctx)
            row["train_s"] = round(time.perf_counter() - t0 + float(fit_info.get("shared_s", 0.0)), 2)
            row["fit"] = fit_info
            pred, speed = predict_all(method, test, preprocess, dev, cfg.predict_batch_size)
            row.update(score_predictions(test.labels, pred, seen, held, method.attributes))
            row.update(
                head="attribution" if method.attributes else "real/AI",
                infer_img_s=round(speed, 1),
                params=count_parameters(method.modules()),
            )
            if explain_images is not None:
                exps = explain_method(method, explain_images, list(pred.labels[explained]), cfg.explain)
                row["explained_scores"] = [None if e is None else round(e.score, 4) for e in exps]
                row["explained_images"] = [int(i) for i in explained]
                figure_rows.append((spec.row, exps))
                _save_explanations(out, spec.row, exps)
            log.info(
                "== %s: acc %s AUC %s F1 seen %s zero-shot %s (%.1f s)",
                spec.row,
                row["acc"],
                row["auc"],
                row["f1_seen"],
                row["f1_zero_shot"],
                row["train_s"],
            )
        except Exception as exc:  # one method's failure is its row, not the comparison's end
            if not cfg.keep_going:
                raise
            log.exception("%s failed", spec.row)
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        # Written after every method: a comparison stopped half-way keeps what it measured.
        result = {
            "config": to_dict(cfg),
            "device": str(dev),
            "classes": {"seen": seen, "zero_shot": held},
            "n_test": int(len(test.labels)),
            "n_real_test": int((test.labels == REAL).sum()),
            "rows": rows,
            "complete": len(rows) == len(cfg.methods),
        }
        (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
        (out / "compare.md").write_text(markdown_table(result))
    bar_chart(rows, out / "compare.png")
    if explain_images is not None and figure_rows:
        shown = [(test.pixels[i].transpose(1, 2, 0) / 255.0) for i in explained]
        titles = [f"{test.labels[i]}" + (" (zero-shot)" if test.labels[i] in held else "") for i in explained]
        explanation_figure(shown, figure_rows, titles, out / "explanations.png")
    return result


def _earlier_rows(out: Path, cfg: CompareConfig, seen: list[str], held: list[str], n_test: int) -> dict[str, dict]:
    """Rows of the last compare.json in ``out`` made on the same data and test set, by row name."""
    path = out / "compare.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); every method runs again", path, exc)
        return {}
    same = (
        old.get("config", {}).get("shards") == cfg.shards
        and old.get("n_test") == n_test
        and old.get("classes") == {"seen": seen, "zero_shot": held}
        and {
            k: old.get("config", {}).get(k)
            for k in ("preprocess", "pipeline", "seed", "test_per_class", "references_per_class", "experiment")
        }
        == {
            k: to_dict(cfg).get(k)
            for k in ("preprocess", "pipeline", "seed", "test_per_class", "references_per_class", "experiment")
        }
    )
    if not same:
        log.info("%s was made on other data or settings; every method runs again", path)
        return {}
    return {r["method"]: r for r in old.get("rows", []) if "error" not in r}


def _explanations_path(out: Path, row: str) -> Path:
    return out / "work" / "explanations" / f"{row}.npz"


def _save_explanations(out: Path, row: str, exps: list[Explanation | None]) -> None:
    """The maps behind the figure, so a resumed comparison can draw it without re-running the method."""
    arrays: dict[str, np.ndarray] = {"n": np.array(len(exps))}
    for i, e in enumerate(exps):
        if e is None:
            continue
        arrays[f"{i}_score"] = np.array(e.score)
        if e.saliency is not None:
            arrays[f"{i}_saliency"] = e.saliency
        if e.lime is not None:
            arrays[f"{i}_segments"], arrays[f"{i}_weights"] = e.lime.segments, e.lime.weights
            arrays[f"{i}_fit"] = np.array([e.lime.intercept, e.lime.r2])
    path = _explanations_path(out, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _load_explanations(path: Path) -> list[Explanation | None]:
    from synthray.methods.explain import LimeResult

    with np.load(path, allow_pickle=False) as z:
        out: list[Explanation | None] = []
        for i in range(int(z["n"])):
            if f"{i}_score" not in z:
                out.append(None)
                continue
            lime = (
                LimeResult(z[f"{i}_segments"], z[f"{i}_weights"], float(z[f"{i}_fit"][0]), float(z[f"{i}_fit"][1]))
                if f"{i}_segments" in z
                else None
            )
            out.append(Explanation(float(z[f"{i}_score"]), z[f"{i}_saliency"] if f"{i}_saliency" in z else None, lime))
        return out


def _reusable(
    old: dict | None, row: dict, out: Path, explained: list[int]
) -> tuple[dict, list[Explanation | None] | None] | None:
    """The earlier row (and its explanations) when it was made by the same method and config."""
    if old is None or old.get("registered") != row["registered"]:
        return None
    if json.loads(json.dumps(row["config"], default=str)) != old.get("config"):
        return None
    exps = None
    if explained:
        path = _explanations_path(out, row["method"])
        if old.get("explained_images") != [int(i) for i in explained] or not path.exists():
            return None  # the figure needs this method's maps of these very images
        exps = _load_explanations(path)
    return old, exps


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key in ("train_s", "infer_img_s"):
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table with a legend."""
    head = "| method | head | " + " | ".join(h for _, h in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in result["rows"]:
        if "error" in r:
            error = str(r["error"]).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['method']} | failed: {error} | " + " | ".join("—" for _ in COLUMNS) + " |")
            continue
        lines.append(f"| {r['method']} | {r['head']} | " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |")
    cls = result["classes"]
    legend = (
        f"\nSeen (trained) classes: {', '.join(cls['seen'])}. Zero-shot (held-out) classes: "
        f"{', '.join(cls['zero_shot']) or 'none'}. {result['n_test']} test images, device {result['device']}.\n\n"
        "acc / AUC: real vs AI over the whole test split (a method flags AI when its label is not "
        '"real"; AUC of its is-AI score). acc in-sample / zero-shot: the same accuracy on real + seen '
        "generators / on real + held-out generators. F1 seen / zero-shot: per-class attribution F1, "
        "macro-averaged over the seen / held-out classes (— for real/AI-only methods). train s includes "
        "an encoder shared with another row. infer img/s: model time only.\n"
    )
    if result.get("n_real_test") is not None and result["n_test"]:
        share_ai = 1 - result["n_real_test"] / result["n_test"]
        legend += (
            f'\nBaseline: answering "AI" for every image scores acc {share_ai:.3f} '
            f"({result['n_real_test']} of the {result['n_test']} test images are real), "
            "so read the AUC first; an AUC of 0.5 is chance.\n"
        )
    return "\n".join(lines) + "\n" + legend


def bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars of the quality metrics per method (failed methods left out)."""
    from synthray.plots import pyplot, save_figure

    plt = pyplot()
    ok = [r for r in rows if "error" not in r]
    metrics = [(k, h) for k, h in COLUMNS if k not in ("train_s", "infer_img_s", "params")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(ok) + 2.0), 4.5))
    width = 0.8 / len(metrics)
    x = np.arange(len(ok))
    for i, (key, header) in enumerate(metrics):
        vals = [r.get(key) if r.get(key) is not None else np.nan for r in ok]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=header)
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in ok], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.18))
    return save_figure(fig, path)


def load_compare_config(data: dict[str, Any]) -> CompareConfig:
    """A :class:`CompareConfig` from YAML data (a ``compare:`` section or the fields themselves)."""
    return from_dict(CompareConfig, data.get("compare", data) if isinstance(data, dict) else data)
