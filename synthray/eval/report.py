"""The report people read (``report.md``) and its figures, from the report's numbers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from synthray.eval.eval_report import EvalReport

log = logging.getLogger(__name__)

ZERO_SHOT_NOTE = (
    "Zero-shot classes are the test classes the encoder never trained on. They are scored two ways. "
    "**Closed set (the thesis's protocol, 3.5.3 / Table 4.3):** every test class, zero-shot ones included, gets "
    "the same number of references in an exact kNN that always names a class; an image is correct when it gets "
    "its own class; precision/recall/F1 are macro-averaged separately over seen and zero-shot classes. "
    "**Open set (the service):** the index holds only the indexed classes, with the calibrated thresholds; an "
    'image of a class that is not indexed is correct when it comes out "unknown" (its per-class unknown rate is '
    "its recall); indexed classes are scored on their own labels, and the open-set zero-shot columns score the "
    '"unknown" answer (plus any zero-shot class the index holds, such as ES1\'s real, on its own label).'
)


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _pm(row: Mapping[str, Any], key: str) -> str:
    v, s = row.get(key), row.get(f"{key}_std")
    return "-" if v is None else (f"{v:.3f} ± {s:.3f}" if s else f"{v:.3f}")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _confusion_md(conf: Mapping[str, Any]) -> list[str]:
    return _table(["true \\ predicted", *conf["columns"]], [[r, *row] for r, row in zip(conf["rows"], conf["matrix"])])


def _macro_row(name: str, m: Mapping[str, Any]) -> list[Any]:
    seen, zs = m["macro"].get("seen") or {}, m["macro"].get("zero_shot") or {}
    return [
        name,
        seen.get("precision"),
        seen.get("recall"),
        seen.get("f1"),
        zs.get("precision"),
        zs.get("recall"),
        zs.get("f1"),
        m.get("accuracy"),
    ]


def _service_md(service: Mapping[str, Any]) -> list[str]:
    """What the service answers on images it never saw, and what enrolling the held-out generators does."""
    at = service.get("at_threshold")
    if not at:
        return []
    lines = [
        "## Unseen photographs and held-out generators (the service's answers)",
        "",
        f"Real test photographs (no training step saw them) answered `real`: {_f(at['real_specificity_label'])} "
        f"(`is_ai` false: {_f(at['real_specificity_is_ai'])}; label and is_ai disagree on "
        f"{at['label_is_ai_disagree']} images).",
        "",
    ]
    o = service.get("open_set") or {}
    lines += [
        f"Open set: AUROC known vs novel {_f(o.get('known_vs_novel_auroc'))}, OSCR {_f(o.get('oscr'))} "
        "(score: the best class score).",
        "",
    ]
    enr = service.get("enrollment") or {}
    before, after = enr.get("before") or at, enr.get("after") or {}
    families = sorted(at.get("flagged_ai") or {})
    if families:
        rows = [
            [
                f,
                at["flagged_ai"].get(f),
                at.get("answered_unknown", {}).get(f),
                (after.get("named") or {}).get(f),
                (enr.get("checks") or {}).get(f, {}).get("threshold"),
                (enr.get("refused") or {}).get(f) and "refused",
            ]
            for f in families
        ]
        lines += _table(
            [
                "held-out generator",
                "flagged AI",
                "answered unknown",
                "named after enrollment",
                "its is-AI threshold",
                "enrollment",
            ],
            rows,
        )
    if enr:
        lines += [
            f"Each held-out generator enrolled with {', '.join(f'{f} {n}' for f, n in enr['enrolled_per_family'].items())} "
            f"validation images, in turn, as the service enrolls. Real specificity before "
            f"{_f(before.get('real_specificity_label'))}, after {_f(after.get('real_specificity_label'))} "
            f"(change {_f(enr.get('real_specificity_change'))}).",
            "",
        ]
    return lines


def render_markdown(report: EvalReport) -> str:
    """``report.md``'s text."""
    p, ck = report.protocol, report.checkpoint
    lines = [f"# Evaluation: {p.name}", ""]
    lines += [
        f"- checkpoint: `{ck['checkpoint']}` (model version `{ck['model_version']}`, trained on "
        f"{', '.join(ck['classes'])}; held out: {', '.join(ck['held_out']) or 'none'})",
        f"- indexed classes: {', '.join(p.indexed)}",
        f"- zero-shot classes (never trained on): {', '.join(p.zero_shot) or 'none'}",
        f'- not indexed (open-set truth "unknown"): {", ".join(p.novel) or "none"}',
        f"- test images ({report.test_split} split): " + ", ".join(f"{c} {n}" for c, n in report.test_counts.items()),
        f"- service rule: the {report.attribution_rule['k']} nearest references of each class; "
        f"is-AI threshold {_f((report.thresholds or {}).get('ai_threshold'))}; the thesis's closed-set "
        f"kNN: vote={report.attribution_rule['vote']}",
        "",
    ]
    for note in report.notes:
        lines.append(f"> {note}")
    service = report.service or {}
    if service.get("calibration_warning"):
        lines += ["", f"> **Warning:** {service['calibration_warning']}"]
    lines += ["", "## Detection: real vs each generator", ""]
    det = report.detection or {}
    if det:
        rows = [
            [g, d["auc"], d.get("tpr_at_1pct_fpr"), d.get("tpr_at_5pct_fpr"), d["accuracy"], d["n_real"], d["n_ai"]]
            for g, d in det["per_generator"].items()
        ]
        o = det["overall"]
        rows.append(
            [
                "**all AI**",
                o["auc"],
                o.get("tpr_at_1pct_fpr"),
                o.get("tpr_at_5pct_fpr"),
                o["accuracy"],
                o["n_real"],
                o["n_ai"],
            ]
        )
        lines += _table(["generator", "AUROC", "TPR @1% FPR", "TPR @5% FPR", "accuracy", "real", "AI"], rows)
        lines += [
            f"AUROC of the is-AI score; TPR at 1% / 5% FPR with thresholds set on these test images; accuracy "
            f"at the threshold calibrated on validation photographs, {_f(det['threshold'])} "
            f"(TPR {_f(o['tpr'])}, FPR {_f(o['fpr'])}).",
            "",
        ]
    else:
        lines += ["No real test images: no detection metrics.", ""]
    lines += _service_md(service)

    lines += ["## Attribution", "", ZERO_SHOT_NOTE, ""]
    header = ["mode", "seen P", "seen R", "seen F1", "zero-shot P", "zero-shot R", "zero-shot F1", "accuracy"]
    rows = []
    if report.closed_set:
        rows.append(_macro_row("closed set (thesis)", report.closed_set))
    rows.append(_macro_row("open set (service)", report.open_set))
    lines += _table(header, rows)
    o = report.open_set
    if o["novel_classes"]:
        lines += [
            f'Open set: share answered "unknown" per class (novel classes should be high, indexed ones low); '
            f"novelty AUROC of 1 - mean neighbour similarity: {_f(o['novelty_auroc'])}.",
            "",
        ]
        lines += _table(["class", "unknown rate"], [[c, r] for c, r in o["unknown_rate"].items()])
    for m, title in ((report.closed_set, "Closed set"), (report.open_set, "Open set")):
        if not m:
            continue
        lines += [f"### {title}: per class", ""]
        lines += _table(
            ["label", "precision", "recall", "F1", "support"],
            [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in m["per_class"].items()],
        )
        lines += [f"{title} confusion matrix (rows: true class):", ""] + _confusion_md(m["confusion"])

    if report.sweep:
        lines += [
            "## Reference sample-size sweep (closed set, exact kNN)",
            "",
            "References drawn at random per class (mean ± std over draws); a class with fewer references "
            "than asked uses all it has (capped).",
            "",
        ]
        lines += _table(
            ["per class", "k", "draws", "capped", "accuracy", "macro F1", "seen F1", "zero-shot F1"],
            [
                [
                    r["size"],
                    r["k"],
                    r["draws"],
                    "yes" if r["capped"] else "no",
                    _pm(r, "accuracy"),
                    _pm(r, "macro_f1"),
                    _pm(r, "seen_f1"),
                    _pm(r, "zero_shot_f1"),
                ]
                for r in report.sweep
            ],
        )
    if report.robustness:
        lines += [
            "## Robustness (test images degraded before preprocessing)",
            "",
            f"{report.robustness_images} test images; references are clean.",
            "",
        ]
        rows = []
        for spec, r in report.robustness.items():
            d = (r.get("detection") or {}).get("overall") or {}
            rows.append(
                [
                    spec,
                    d.get("auc"),
                    d.get("accuracy"),
                    r.get("open_set_accuracy"),
                    r.get("open_set_seen_f1"),
                    r.get("closed_set_accuracy"),
                ]
            )
        lines += _table(
            ["degradation", "detection AUC", "detection acc.", "open-set acc.", "open-set seen F1", "closed-set acc."],
            rows,
        )
    if report.explanations:
        lines += _explanations_md(report.explanations, (report.figures or {}).get("explanations"))
    if report.figures:
        shown = {"explanations"} if report.explanations else set()  # already beside its table
        lines += (
            ["## Figures", ""]
            + [f"![{name}]({path})" for name, path in report.figures.items() if name not in shown]
            + [""]
        )
    idx = report.index
    lines += [
        "## Index",
        "",
        f"- collection `{idx.get('collection')}`, "
        f"{'reused' if idx.get('reused') else 'built for this evaluation'}; references per class: "
        + ", ".join(f"{c} {n.get('trained', 0)}" for c, n in idx.get("counts", {}).items()),
        "",
    ]
    lines += ["## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in report.timings.items()), ""]
    return "\n".join(lines)


def _answer(fact: Mapping[str, Any]) -> str:
    if fact["predicted"] == fact["explained_class"]:
        return fact["predicted"]
    return f"{fact['predicted']} (nearest {fact['explained_class']})"


def _explanation_title(fact: Mapping[str, Any]) -> str:
    return (
        f"{fact['role']}\ntrue {fact['true']} -> {_answer(fact)}\ncos to {fact['explained_class']} {fact['score']:.2f}"
    )


def _explanations_md(facts: Sequence[Mapping[str, Any]], figure: str | None) -> list[str]:
    lines = [
        "## Explanations",
        "",
        "Why the service named a class, for a few test images: the score is the cosine similarity of the "
        "image's embedding to the mean of that class's references in the index (the vote winner's when the "
        'answer was "unknown"). Saliency: pixels the score is most sensitive to; LIME: superpixels whose '
        "occlusion (blurred) lowers the score (red) or raises it (blue). Saliency top-10% share: the share of "
        "the saliency mass in the 10% most salient pixels (0.1 = spread evenly).",
        "",
    ]
    lines += _table(
        ["role", "image", "true", "answer", "score", "saliency top-10% share", "LIME R2"],
        [
            [
                f["role"],
                f"`{Path(f['source_path']).name}`",
                f["true"],
                _answer(f),
                f["score"],
                f.get("saliency_top10_share"),
                (f.get("lime") or {}).get("r2"),
            ]
            for f in facts
        ],
    )
    if figure:
        lines += [f"![explanations]({figure})", ""]
    return lines


def write_markdown(report: EvalReport, path: Path) -> Path:
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def write_figures(
    report: EvalReport,
    embeddings: np.ndarray,
    truth: Sequence[str],
    out: Path,
    cfg: Any,
    explained: Sequence[Any] = (),
) -> dict[str, str]:
    """Every figure the report has numbers for; returns {name: path relative to ``out``}.

    ``explained``: the :class:`~synthray.eval.explain.Explained` images behind
    ``report.explanations`` (same order), drawn into ``explanations.png``.
    """
    from synthray.eval import figures

    name = report.protocol.name
    written: dict[str, Path | None] = {}
    for key, m, title in (
        ("closed_set", report.closed_set, "closed set (thesis)"),
        ("open_set", report.open_set, "open set (service)"),
    ):
        if m:
            written[f"confusion_{key}"] = figures.confusion_heatmap(
                m["confusion"], out / f"confusion_{key}.png", f"{name}: {title}"
            )
    if report.detection and report.protocol.real is not None:  # detection has numbers only with a real class
        preds = report.predictions
        written["roc"] = figures.roc_curves(
            [p.true for p in preds],
            [p.is_ai_score for p in preds],
            report.protocol.real,
            out / "roc.png",
            f"{name}: real vs each generator",
        )
    if report.sweep:
        written["sweep"] = figures.sweep_curve(report.sweep, out / "sweep.png", f"{name}: references per class")
    if report.robustness:
        written["robustness"] = figures.robustness_chart(
            report.robustness, out / "robustness.png", f"{name}: degraded test images"
        )
    if cfg.umap:
        written["umap"] = figures.umap_plot(
            embeddings,
            truth,
            out / "umap.png",
            f"{name}: test embeddings (UMAP)",
            seed=cfg.seed,
            max_points=cfg.umap_max_points,
        )
    if explained:
        written["explanations"] = figures.explanation_grid(
            [e.image for e in explained],
            [e.explanation for e in explained],
            [_explanation_title(f) for f in report.explanations or []],
            out / "explanations.png",
        )
    return {k: str(p.relative_to(out)) for k, p in written.items() if p is not None}
