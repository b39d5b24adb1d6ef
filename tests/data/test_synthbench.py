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
from synthray.data.synthbench.crops import CropConfig, CropSampler, draw_jitter, jitter, to_uint8
from synthray.data.synthbench.photos import PHOTO_FOLDERS, _package_dir
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
        for path in sorted(folder.glob("*.png"))
    }


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


def test_real_images_are_crops_of_the_shipped_photos(built: tuple[Path, dict]) -> None:
    out, _ = built
    photos, _ = find_photos()
    sampler = CropSampler([p.load() for p in photos], RES, CropConfig())
    for index in (0, 7):
        rng = stream(SMALL.seed, REAL, index)
        expected = to_uint8(jitter(sampler.sample(rng), draw_jitter(rng)))
        with Image.open(out / REAL / image_name(REAL, index)) as img:
            np.testing.assert_array_equal(np.asarray(img), expected)


def test_layout_counts_and_image_format(built: tuple[Path, dict]) -> None:
    out, summary = built
    labels = [REAL, *list_families()]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(labels)
    for label in labels:
        files = sorted((out / label).iterdir())
        assert [f.name for f in files] == [image_name(label, i) for i in range(PER_CLASS)]
        for path in files[:3]:
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


def test_same_seed_gives_identical_bytes_different_seed_does_not(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
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
    (copy / REAL / image_name(REAL, 3)).unlink()
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
            (target / job.label).mkdir(parents=True, exist_ok=True)
            # What a kill mid-class leaves: some finished images (here, wrong ones: they
            # must be overwritten) and a temporary file of the image being written.
            Image.new("RGB", (RES, RES)).save(target / job.label / image_name(job.label, 0))
            (target / job.label / f".{image_name(job.label, 1)}.999.tmp").write_bytes(b"half")
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
    (target / RESUME[0] / image_name(RESUME[0], 5)).unlink()
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
    assert len(list((target / REAL).glob("*.png"))) == 4


@pytest.mark.parametrize(
    "change, match",
    [
        ({"resolution": 40}, "multiple of 16"),
        ({"per_class": 0}, "per_class"),
        ({"families": ("no_such_family",)}, "unknown"),
        ({"families": ("tconv", "kl_vae", "vq_vae"), "held_out": ("pixel_shuffle",)}, "held_out"),
    ],
)
def test_invalid_configs_are_rejected(change: dict, match: str) -> None:
    cfg = SynthbenchConfig(**{"per_class": 2, "resolution": RES, **change})
    with pytest.raises((ValueError, KeyError), match=match):
        resolve_config(cfg)


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
