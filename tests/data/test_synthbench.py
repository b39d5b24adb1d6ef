"""synthbench: registry, layout, determinism, resume, and the colour baseline.

Everything runs on real files at 32 px with a handful of images per class and a few fitting
steps; one full build is shared by the module (see ``built``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthray.config import SynthbenchConfig
from synthray.data.generators import lookup_generator
from synthray.data.schema import REAL
from synthray.data.synthbench import (
    SUMMARY_NAME,
    build_synthbench,
    create_family,
    find_photos,
    fingerprint_probe,
    get_family,
    image_name,
    list_families,
    register_family,
    resolve_config,
    trivial_baseline,
)
from synthray.data.synthbench import build as build_module
from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.classes import new_family, single_thread_torch
from synthray.data.synthbench.classes import class_layout, image_relpath
from synthray.data.synthbench.crops import CropConfig, CropSampler, draw_jitter, jitter, to_uint8
from synthray.data.synthbench.families.procedural import (
    ProceduralFamily,
    create_procedural,
    procedural_index,
    procedural_name,
    sample_spec,
)
from synthray.data.synthbench.photos import PHOTO_FOLDERS, _package_dir, split_photos
from synthray.data.synthbench.seeding import stream

RES = 32
PER_CLASS = 20
# A short fit keeps the module fast; the fakes' colour moments are matched to their source
# crops whatever the fit, so the colour-baseline test stays meaningful.
STEPS = 10
SMALL = SynthbenchConfig(per_class=PER_CLASS, resolution=RES, seed=0, train_steps=STEPS)
# Cheap families for the rebuild tests; sdedit_unet draws noise while generating.
SUBSET = ("tconv", "sdedit_unet", "patch_transformer")
RESUME = ("tconv", "patch_transformer", "vq_vae")


def _digests(root: Path, labels: list[str] | None = None) -> dict[str, str]:
    """sha256 of every PNG under ``root`` (or under the given label folders), by relative path."""
    folders = [root / label for label in labels] if labels else [p for p in root.iterdir() if p.is_dir()]
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*.png"))
    }


def _path(root: Path, label: str, index: int) -> Path:
    """Where image ``index`` of ``label`` is in a SMALL build (its split from the layout)."""
    layout = class_layout(PER_CLASS, PER_CLASS, SMALL.val_fraction, SMALL.test_fraction)
    split = next(name for name, r in layout if index in r)
    return root / image_relpath(label, split, index)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """As the builder runs: one torch thread (OpenMP barriers crawl on a busy 2-core box)."""
    with single_thread_torch():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthbench") / "bench"
    return out, build_synthbench(out, SMALL, num_workers=2)


# --- registry ------------------------------------------------------------------------------


def test_at_least_eight_registered_families_of_distinct_architecture() -> None:
    names = list_families()
    assert len(names) >= 8
    assert REAL not in names
    classes = [get_family(name) for name in names]
    assert len(set(classes)) == len(names)
    assert len({cls.architecture for cls in classes}) == len(names)
    for name in names:
        # A family name must stay its own label when a folder layout reads it back.
        assert lookup_generator(name) is None, f"{name} collides with a known generator alias"


def test_families_are_distinct_networks() -> None:
    signatures = {}
    for name in list_families():
        model = create_family(name)
        # Layer structure (types, shapes, upsampling modes) without the class name; two
        # families may share parameter shapes (nearest vs bilinear) but not the structure.
        layers = "\n".join(repr(child) for child in model.children())
        shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
        signatures[name] = (layers, shapes)
        assert model.num_parameters() > 10_000, name
    assert len(set(signatures.values())) == len(signatures)


@pytest.mark.parametrize("name", list_families())
def test_family_generates_and_fits(name: str) -> None:
    model = new_family(name, seed=0)
    x = torch.rand(4, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    noise = torch.Generator().manual_seed(2)
    model.prepare(x, noise, steps=1)
    loss = model.fit_loss(x, noise)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    out = model.generate(x, noise)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        model.generate(torch.rand(1, 3, RES + 2, RES + 2), noise)


def test_family_initialisation_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = new_family("tconv", seed=0).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    b = new_family("tconv", seed=0).state_dict()
    c = new_family("tconv", seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_register_family_rejects_duplicates_and_bad_names() -> None:
    class Dummy(GeneratorFamily):
        architecture = "dummy"

    with pytest.raises(ValueError):
        register_family("tconv")(Dummy)
    with pytest.raises(ValueError):
        register_family("Bad-Name")(Dummy)
    with pytest.raises(KeyError, match="known"):
        get_family("no_such_family")


# --- source photographs ----------------------------------------------------------------------


def test_real_photos_are_shipped_colour_photographs() -> None:
    photos, skipped = find_photos()
    package_dirs = {dist: _package_dir(mod) for dist, mod, _ in PHOTO_FOLDERS}
    names = {Path(p.relpath).name for p in photos}
    assert {"astronaut.png", "china.jpg", "flower.jpg"} <= names
    for photo in photos:
        path = Path(photo.path)
        assert path.is_relative_to(package_dirs[photo.package])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == photo.sha256
        img = np.asarray(photo.load())
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    # Synthetic patterns, logos and grayscale scans are never used as "real".
    for name in ("color.png", "logo.png", "chessboard_RGB.png", "camera.png"):
        assert name in reasons and name not in names


# --- the built folder ------------------------------------------------------------------------


def test_real_images_are_crops_of_their_splits_photos(built: tuple[Path, dict]) -> None:
    out, _ = built
    photos = split_photos(find_photos()[0], SMALL.val_fraction, SMALL.test_fraction)
    layout = class_layout(PER_CLASS, PER_CLASS, SMALL.val_fraction, SMALL.test_fraction)
    for split, indices in layout:
        sampler = CropSampler([p.load() for p in photos if p.split == split], RES, CropConfig())
        for index in (indices[0], indices[-1]):
            rng = stream(SMALL.seed, REAL, index)
            expected = to_uint8(jitter(sampler.sample(rng), draw_jitter(rng)))
            with Image.open(out / image_relpath(REAL, split, index)) as img:
                np.testing.assert_array_equal(np.asarray(img), expected)


def test_photographs_are_split_by_scene_never_shared() -> None:
    photos = split_photos(find_photos()[0], 0.2, 0.2)
    splits = {p.relpath: p.split for p in photos}
    assert set(splits.values()) == {"train", "val", "test"}
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts["test"] >= 5 and counts["val"] >= 5 and counts["train"] > counts["test"], counts
    # a stereo pair is one scene: both of its views land in the same split
    assert splits["data/motorcycle_left.png"] == splits["data/motorcycle_right.png"]
    assert split_photos(find_photos()[0], 0.2, 0.2) == photos  # deterministic
    # bundled photographs: each with its licence and origin recorded
    bundled = [p for p in photos if p.package == "synthray"]
    assert len(bundled) >= 20 and all(p.licence and p.origin for p in bundled)


def test_fakes_are_made_from_the_real_image_of_the_same_index(built: tuple[Path, dict]) -> None:
    """Pairs: fake i shows the content of real i (its source, in the same split), not another crop."""
    out, _ = built
    sources = (out / "sources.csv").read_text().splitlines()
    assert sources[0] == "relpath,source" and len(sources) == 1 + PER_CLASS * len(list_families())

    def small(path: Path) -> np.ndarray:  # content, not traces: a coarse luminance map
        with Image.open(path) as img:
            return np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float64).ravel()

    paired, unpaired = [], []
    for family in ("tconv", "kl_vae"):
        for i in range(0, PER_CLASS, 3):
            fake = small(_path(out, family, i))
            paired.append(np.corrcoef(fake, small(_path(out, REAL, i)))[0, 1])
            unpaired.append(np.corrcoef(fake, small(_path(out, REAL, (i + 5) % PER_CLASS)))[0, 1])
    # (10 fitting steps: the fakes are rough copies; measured medians 0.45 paired, about 0 unpaired)
    assert np.median(paired) > np.median(unpaired) + 0.3, (np.median(paired), np.median(unpaired))


def test_layout_counts_and_image_format(built: tuple[Path, dict]) -> None:
    out, summary = built
    labels = [REAL, *list_families()]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(labels)
    layout = class_layout(PER_CLASS, PER_CLASS, SMALL.val_fraction, SMALL.test_fraction)
    for label in labels:
        files = sorted(p.relative_to(out).as_posix() for p in (out / label).rglob("*.png"))
        assert files == sorted(image_relpath(label, split, i) for split, r in layout for i in r)
        for path in sorted((out / label).rglob("*.png"))[:3]:
            with Image.open(path) as img:
                assert (img.format, img.mode, img.size) == ("PNG", "RGB", (RES, RES))
    assert not list(out.rglob("*.tmp")) and not (out / build_module.STATE_NAME).exists()
    assert json.loads((out / SUMMARY_NAME).read_text()) == summary


def test_summary_describes_the_build(built: tuple[Path, dict]) -> None:
    _, summary = built
    assert summary["counts"] == {label: PER_CLASS for label in [REAL, *list_families()]}
    assert summary["config"]["families"] == list_families()
    held_out = summary["held_out"]
    assert 2 <= len(held_out) <= 3 and set(held_out) <= set(list_families())
    assert summary["config"]["held_out"] == held_out
    for family in summary["families"]:
        assert family["architecture"] == get_family(family["name"]).architecture
        assert family["parameters"] == create_family(family["name"]).num_parameters()
        assert family["fit"]["steps"] == SMALL.train_steps
    assert {p["file"].rsplit("/", 1)[-1] for p in summary["photos"]} >= {"astronaut.png", "china.jpg"}
    assert set(summary["timings"]["classes_s"]) == set(summary["labels"])
    for key in ("baseline", "fingerprint_probe"):
        assert summary[key]["attribution"]["n_classes"] == len(summary["labels"])
    # a look at the classes, beside the summary
    assert Path(summary["samples_figure"]).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_gives_identical_bytes_different_seed_does_not(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = built
    labels = [REAL, *SUBSET]
    # A subset, one worker instead of two: every class comes out byte-identical, since a class
    # depends on nothing but (seed, label, config).
    again = tmp_path / "again"
    build_synthbench(again, dataclasses.replace(SMALL, families=SUBSET), num_workers=1)
    assert _digests(again) == _digests(out, labels)

    other = tmp_path / "seed1"
    build_synthbench(other, dataclasses.replace(SMALL, seed=1, families=SUBSET[:1]), num_workers=1)
    theirs, ours = _digests(other, labels[:2]), _digests(out, labels[:2])
    assert theirs.keys() == ours.keys()
    assert all(theirs[k] != ours[k] for k in ours)


def test_complete_folder_is_skipped(built: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    out, summary = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with caplog.at_level(logging.INFO, logger="synthray.data.synthbench"):
        again = build_synthbench(out, SMALL)
    assert again == summary
    assert "already complete" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_damaged_complete_folder_rebuilds_only_what_is_missing(
    built: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, summary = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    _path(copy, REAL, 3).unlink()
    rebuilt: list[str] = []
    real_build_class = build_module.build_class

    def recording(job):
        rebuilt.append(job.label)
        return real_build_class(job)

    monkeypatch.setattr(build_module, "build_class", recording)
    again = build_synthbench(copy, SMALL, num_workers=1)
    assert rebuilt == [REAL]
    assert again["families"] == summary["families"]  # kept from the old summary
    assert _digests(copy) == _digests(out)


def test_interrupted_run_is_resumed_to_identical_bytes(
    built: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = built
    cfg = dataclasses.replace(SMALL, families=RESUME)
    target = tmp_path / "resume"
    real_build_class = build_module.build_class

    def dies_on_second_family(job):  # the run is killed while building the second family
        if job.label == RESUME[1]:
            first = _path(target, job.label, 0)
            first.parent.mkdir(parents=True, exist_ok=True)
            # What a kill mid-class leaves: some finished images (here, wrong ones: they
            # must be overwritten) and a temporary file of the image being written.
            Image.new("RGB", (RES, RES)).save(first)
            (first.parent / f".{image_name(job.label, 1)}.999.tmp").write_bytes(b"half")
            raise KeyboardInterrupt
        return real_build_class(job)

    monkeypatch.setattr(build_module, "build_class", dies_on_second_family)
    with pytest.raises(KeyboardInterrupt):
        build_synthbench(target, cfg, num_workers=1)
    assert not (target / SUMMARY_NAME).exists()
    assert (target / build_module.STATE_NAME).exists()
    finished = set(json.loads((target / build_module.STATE_NAME).read_text())["classes"])
    assert finished == {REAL, RESUME[0]}

    # A class cut off half-way: some of its files are gone.
    _path(target, RESUME[0], 5).unlink()
    built_now: list[str] = []

    def recording(job):
        built_now.append(job.label)
        return real_build_class(job)

    monkeypatch.setattr(build_module, "build_class", recording)
    summary = build_synthbench(target, cfg, num_workers=1)
    assert sorted(built_now) == sorted(RESUME)  # real was complete and not rebuilt
    assert summary["timings"]["resumed_classes"] == 1
    labels = [REAL, *RESUME]
    assert _digests(target) == _digests(out, labels)  # classes do not depend on each other
    assert not list(target.rglob("*.tmp")) and not (target / build_module.STATE_NAME).exists()


def test_different_config_needs_overwrite(built: tuple[Path, dict], tmp_path: Path) -> None:
    target = tmp_path / "small"
    tiny = SynthbenchConfig(per_class=3, resolution=RES, seed=0, train_steps=1, families=("tconv",))
    build_synthbench(target, tiny, num_workers=1)
    (target / "notes.txt").write_text("not ours")
    bigger = SynthbenchConfig(per_class=4, resolution=RES, seed=0, train_steps=1, families=("vq_vae",))
    with pytest.raises(FileExistsError):
        build_synthbench(target, bigger, num_workers=1)
    summary = build_synthbench(target, bigger, num_workers=1, overwrite=True)
    assert summary["counts"] == {REAL: 4, "vq_vae": 4}
    assert not (target / "tconv").exists()
    assert (target / "notes.txt").exists()  # only the files synthbench wrote are removed
    assert len(list((target / REAL).rglob("*.png"))) == 4


@pytest.mark.parametrize(
    "change, match",
    [
        ({"resolution": 40}, "multiple of 16"),
        ({"per_class": 0}, "per_class"),
        ({"families": ("no_such_family",)}, "unknown"),
        ({"families": ("tconv", "kl_vae", "vq_vae"), "held_out": ("pixel_shuffle",)}, "held_out"),
        ({"procedural": -1}, "procedural"),
        ({"families": ("proc_12",)}, "unknown"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "fraction"),
    ],
)
def test_invalid_configs_are_rejected(change: dict, match: str) -> None:
    cfg = SynthbenchConfig(**{"per_class": 2, "resolution": RES, **change})
    with pytest.raises((ValueError, KeyError), match=match):
        resolve_config(cfg)


def test_procedural_families_are_drawn_from_a_space_of_architectures() -> None:
    specs = [sample_spec(i) for i in range(60)]
    assert sample_spec(7) == specs[7]  # a name is one architecture, always
    assert procedural_index(procedural_name(42)) == 42 and procedural_index("tconv") is None
    # the space is explored: every upsampler, mode and depth occurs, and few specs repeat
    assert {s.upsample for s in specs} >= {"tconv4", "nearest", "bilinear", "pixel_shuffle"}
    assert {s.mode for s in specs} == {"reconstruct", "latent_noise", "denoise"}
    assert {s.depth for s in specs} == {1, 2, 3}
    assert len({s.describe() for s in specs}) == len(specs)
    # the cost bound: wide full-resolution stages only where the decoder is shallow
    assert all(s.width <= (12 if s.depth == 3 or s.kernel == 5 else 16) for s in specs)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_procedural_family_builds_fits_and_generates(index: int) -> None:
    name = procedural_name(index)
    model = new_family(name, seed=0)
    assert isinstance(model, ProceduralFamily) and model.name == name
    assert model.architecture == sample_spec(index).describe()
    x = torch.rand(4, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    noise = torch.Generator().manual_seed(2)
    loss = model.fit_loss(x, noise)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    out = model.generate(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and torch.isfinite(out).all()
    again = new_family(name, seed=0).generate(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # seeded: the same network, the same fakes
    assert not torch.equal(
        create_procedural(name).state_dict()[next(iter(model.state_dict()))],
        new_family(name, seed=1).state_dict()[next(iter(model.state_dict()))],
    )


def test_a_build_with_procedural_families_and_more_real_images(tmp_path: Path) -> None:
    cfg = SynthbenchConfig(
        per_class=10,
        real_per_class=25,
        resolution=RES,
        train_steps=2,
        families=None,
        procedural=2,
        held_out=("tconv", procedural_name(1)),
    )
    summary = build_synthbench(tmp_path / "b", cfg, num_workers=2)
    assert {procedural_name(0), procedural_name(1)} <= set(summary["labels"])
    assert summary["counts"][REAL] == 25 and summary["counts"][procedural_name(0)] == 10
    assert len(list((tmp_path / "b" / REAL).rglob("*.png"))) == 25
    assert summary["splits"]["real_images"] == {"train": 15, "val": 5, "test": 5}


def test_default_held_out_is_filled_in() -> None:
    cfg = resolve_config(SynthbenchConfig())
    assert cfg.families == tuple(list_families())
    assert cfg.held_out == build_module.DEFAULT_HELD_OUT
    assert resolve_config(SynthbenchConfig(held_out=("tconv",))).held_out == ("tconv",)


# --- the baseline ----------------------------------------------------------------------------


def test_colour_baseline_is_far_from_perfect_on_synthbench(built: tuple[Path, dict]) -> None:
    out, summary = built
    baseline = trivial_baseline(out, seed=0)
    assert baseline == summary["baseline"]
    attribution = baseline["attribution"]
    assert attribution["chance_balanced_accuracy"] == pytest.approx(1 / (len(list_families()) + 1), abs=1e-3)
    # Thresholds that the trivially separable tree below clears easily.
    assert attribution["accuracy"] < 0.5
    assert baseline["real_vs_fake"]["balanced_accuracy"] < 0.85
    assert baseline["real_vs_fake"]["chance"] == 0.5


def _write_tinted_tree(root: Path, per_class: int = 20) -> None:
    """Three classes that differ only in colour: the colour baseline must see it at once."""
    rng = np.random.default_rng(0)
    tints = {"real": (200, 60, 60), "gan_a": (60, 200, 60), "gan_b": (60, 60, 200)}
    for label, tint in tints.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(tint, 25, size=(RES, RES, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / label / f"{i:03d}.png")


def test_colour_baseline_scores_perfectly_on_a_trivially_separable_tree(tmp_path: Path) -> None:
    _write_tinted_tree(tmp_path)
    baseline = trivial_baseline(tmp_path, seed=0)
    assert baseline["attribution"]["accuracy"] >= 0.95
    assert baseline["real_vs_fake"]["balanced_accuracy"] >= 0.95
    assert baseline["n_images"] == 60


def test_fingerprint_probe_runs_on_any_tree(tmp_path: Path) -> None:
    _write_tinted_tree(tmp_path)
    probe = fingerprint_probe(tmp_path, seed=0, size=RES)
    assert probe["n_images"] == 60
    assert 0.0 <= probe["attribution"]["accuracy"] <= 1.0


def test_baseline_without_real_class_reports_attribution_only(tmp_path: Path) -> None:
    _write_tinted_tree(tmp_path)
    (tmp_path / "real").rename(tmp_path / "gan_c")
    baseline = trivial_baseline(tmp_path)
    assert baseline["real_vs_fake"] is None
    assert baseline["attribution"]["n_classes"] == 3
