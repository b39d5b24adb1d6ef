"""``compare.md``: the comparison's rows as a Markdown table with a legend."""

from __future__ import annotations

from typing import Any

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
