"""The evaluation's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations

import dataclasses

from synthray.attribution.config import AttributionConfig
from synthray.index.config import StoreConfig
from synthray.methods.explain_config import EXPLAIN_KINDS, ExplainConfig
from synthray.typed_config import config_dataclass

#: GenImage's robustness study degrades test images by JPEG, resolution and blur; these
#: are the levels evaluated by default (spec syntax: ``<name>:<parameter>``).
DEFAULT_DEGRADATIONS = (
    "jpeg:95",
    "jpeg:75",
    "jpeg:50",
    "jpeg:30",
    "downscale:0.5",
    "downscale:0.25",
    "blur:1",
    "blur:2",
)


@config_dataclass
class ProtocolConfig:
    """Which classes are indexed, which are zero-shot, which is real (see ``synthray.eval.protocols``)."""

    name: str = "auto"
    """auto (the checkpoint's training setting) | ES1 | ES2 | ES3 | ES4 | sd14 | custom"""
    generator: str | None = None
    """ES3: the one generator trained with real; None = the checkpoint's"""
    held_out: tuple[str, ...] = ()
    """ES4: zero-shot generators; () = the checkpoint's held-out ones"""
    indexed: tuple[str, ...] = ()
    """custom: classes with references in the index"""
    zero_shot: tuple[str, ...] = ()
    """custom: test classes kept out of the index (open-set "unknown")"""


@config_dataclass
class ExplainReportConfig:
    """Saliency and LIME-style maps of a few test images' attributions (``explanations.png``).

    Images are picked by :func:`synthray.eval.explain.pick_images`: a seen generator
    attributed correctly, a wrong answer, a zero-shot generator, a real image, then more
    classes in turn; within each role the first in content-hash order.
    """

    images: int = 4
    """test images explained; 0 = no explanations"""
    kinds: tuple[str, ...] = EXPLAIN_KINDS
    """"saliency" and/or "lime" """
    lime: ExplainConfig = dataclasses.field(
        default_factory=lambda: ExplainConfig(n_segments=30, compactness=100.0, n_samples=100)
    )
    """LIME-style occlusion. A third of ExplainConfig's views and fewer superpixels, so a report's explanations cost
    seconds on a CPU (one forward pass per view; on the demo's encoder the weights of two seeds correlate ~0.95 at 100
    views, ~0.97 at 150, ~0.99 at 300). Compactness 100 makes SLIC cut near-square cells: a generator's fingerprint has
    no object edges to follow, and at ExplainConfig's 10 SLIC returns 1-3 superpixels for fine textures. A lime mapping
    in YAML starts from ExplainConfig's own defaults (list every field you mean to keep, as configs/*eval*.yaml do).
    """

    def __post_init__(self) -> None:
        if self.images < 0:
            raise ValueError(f"explain.images must be >= 0, got {self.images}")
        if not self.kinds or set(self.kinds) - set(EXPLAIN_KINDS):
            raise ValueError(f"explain.kinds must be among {EXPLAIN_KINDS}, got {list(self.kinds)}")


@config_dataclass
class EvalConfig:
    """One evaluation run: a checkpoint, the shards' test split, a protocol -> a report folder."""

    checkpoint: str = "runs/demo/train/supcon-cpu"
    """checkpoint folder, or a training run folder"""
    shards: str = "runs/demo/shards"
    """ingest output holding the reference and test splits"""
    out: str = "runs/demo/eval"
    """run folder: report.json, report.md, figures, config.yaml"""
    protocol: ProtocolConfig = dataclasses.field(default_factory=ProtocolConfig)
    test_split: str = "test"
    """images evaluated"""
    reference_split: str = "train"
    """references: the index, the closed-set kNN and the sweep draw from it"""
    per_class: int | str = 50
    """References per indexed class (int, or "all"); the closed-set kNN uses the same rows (smallest content hashes), so
    both see one reference set.
    """
    real_per_class: int | str | None = None
    """real references in the index; None = 4 x per_class"""
    calibration_per_class: int = 50
    """validation queries per generator for the open-set thresholds"""
    calibration_real: int = 200
    """real validation photographs the is-AI threshold is calibrated on"""
    enroll_per_class: int = 50
    """Held-out generators enrolled (in memory, as the service enrolls) with this many of their validation images before
    the test images are answered again; 0 skips.
    """
    calibration_split: str = "val"
    """split the index build calibrates on"""
    max_test_per_class: int | None = 500
    """test images per class (smallest content hashes); None = all"""
    reference_max_per_class: int | None = 5000
    """reference embeddings held in memory per class ("all" of the sweep)"""
    attribution: AttributionConfig | None = None
    """None = the rule stored with the index (or AttributionConfig() when the index is built here); a rule different
    from the stored one re-calibrates the index.
    """
    sweep_sizes: tuple[int | str, ...] = (10, 20, 50, 100, 500, "all")
    """references per class; () skips the sweep"""
    sweep_repeats: int = 3
    """random draws per size (mean/std); "all" is drawn once"""
    sweep_small_k: int = 3
    """k for sizes below 4*k (the thesis used k=3 at 10 and 20 references, 11 from 50)"""
    degradations: tuple[str, ...] = DEFAULT_DEGRADATIONS
    """robustness specs; () skips robustness"""
    robustness_max_per_class: int | None = 100
    """test images per class re-encoded for each degradation"""
    umap: bool = True
    """UMAP figure of the test embeddings (umap-learn; ~20 s JIT on first use)"""
    umap_max_points: int = 3000
    """subsample above this for the UMAP figure"""
    figures: bool = True
    """write PNG figures (matplotlib Agg)"""
    explain: ExplainReportConfig = dataclasses.field(default_factory=ExplainReportConfig)
    """Explanations of a few attributions: facts in report.json, maps in explanations.png (with figures)"""
    seed: int = 0
    """sweep draws, UMAP, subsampling"""
    batch_size: int = 64
    """images per embedding batch"""
    device: str = "auto"
    """auto | cpu | cuda"""
    use_ray: bool = True
    """build the index with Ray (build_index's use_ray); embedding here is in-process"""
    store: StoreConfig = dataclasses.field(default_factory=lambda: StoreConfig(path=""))
    """Where the index lives. url None and path "" = a private embedded index under <out>/index, rebuilt whenever it
    does not match this evaluation.
    """

    def __post_init__(self) -> None:
        if isinstance(self.per_class, str) and self.per_class != "all":
            raise ValueError(f"per_class must be an int or 'all', got {self.per_class!r}")
        if isinstance(self.per_class, int) and self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        for size in self.sweep_sizes:
            if not (size == "all" or (isinstance(size, int) and size >= 1)):
                raise ValueError(f"sweep_sizes entries must be ints >= 1 or 'all', got {size!r}")
        if self.enroll_per_class < 0:
            raise ValueError(f"enroll_per_class must be >= 0, got {self.enroll_per_class}")
        if self.sweep_repeats < 1:
            raise ValueError(f"sweep_repeats must be >= 1, got {self.sweep_repeats}")
        for name in ("max_test_per_class", "reference_max_per_class", "robustness_max_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
