"""Layout readers and generator names: every registered layout against a tree built in its shape."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from synthray.config import SplitConfig
from synthray.data.generators import canonical_generators, is_real_name, normalize_generator
from synthray.data.layouts import carve_split, get_layout, hash_unit, list_layouts, register_layout
from synthray.data.schema import REAL, SourceRecord
from tests.data.imagetrees import bad_dir, make_bad_files, make_hidden_files, make_stray_files, make_tree

DATASET = {"genimage": "genimage", "forensynths": "forensynths", "cifake": "cifake", "folder": "folder"}


def _scan(layout: str, root: Path, split_cfg: SplitConfig | None = None) -> tuple[list[SourceRecord], dict[str, str]]:
    strays: dict[str, str] = {}
    reader = get_layout(layout)
    records = list(reader(root, split_cfg or SplitConfig(), lambda rel, reason, _: strays.__setitem__(rel, reason)))
    return records, strays


def test_registry_lists_every_layout() -> None:
    assert set(DATASET) <= set(list_layouts())
    assert list_layouts() == sorted(list_layouts())
    with pytest.raises(ValueError, match="unknown layout 'nope'.*genimage"):
        get_layout("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_layout("genimage")(lambda root, split_cfg, on_stray=None: iter(()))


@pytest.mark.parametrize("layout", list_layouts())
def test_reader_labels_every_file(layout: str, tmp_path: Path) -> None:
    expected = {e.relpath: e for e in make_tree(layout, tmp_path, per_class=3)}
    records, strays = _scan(layout, tmp_path)
    assert strays == {}
    assert sorted(r.relpath for r in records) == sorted(expected)
    for record in records:
        want = expected[record.relpath]
        assert record.generator == want.generator, record.relpath
        assert record.split in want.splits, record.relpath
        assert record.category == want.category, record.relpath
        assert record.dataset == DATASET[layout]
        assert record.is_real == (want.generator == REAL)
        assert Path(record.path).is_absolute() and Path(record.path).is_file()
        assert Path(record.path) == tmp_path / record.relpath


@pytest.mark.parametrize("layout", list_layouts())
def test_reader_order_is_deterministic(layout: str, tmp_path: Path) -> None:
    make_tree(layout, tmp_path, per_class=2)
    first, _ = _scan(layout, tmp_path)
    second, _ = _scan(layout, tmp_path)
    assert first == second


@pytest.mark.parametrize("layout", list_layouts())
def test_reader_yields_bad_files_and_skips_hidden(layout: str, tmp_path: Path) -> None:
    make_tree(layout, tmp_path, per_class=1)
    folder = bad_dir(layout, tmp_path)
    bad = make_bad_files(folder)
    hidden = make_hidden_files(folder)
    records, _ = _scan(layout, tmp_path)
    relpaths = {r.relpath for r in records}
    prefix = folder.relative_to(tmp_path).as_posix()
    # Validation decides about content, so every bad file (the .txt, the dangling link ...)
    # must reach it; only hidden entries stay out.
    assert {f"{prefix}/{name}" for name in bad} <= relpaths
    assert not {f"{prefix}/{name}" for name in hidden} & relpaths


@pytest.mark.parametrize("layout", list_layouts())
def test_reader_reports_strays(layout: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_tree(layout, tmp_path, per_class=1)
    want = make_stray_files(layout, tmp_path)
    records, strays = _scan(layout, tmp_path)
    assert strays == want
    assert not set(want) & {r.relpath for r in records}
    # Without a handler a stray is still never silent.
    with caplog.at_level(logging.WARNING, logger="synthray.data.layouts"):
        list(get_layout(layout)(tmp_path, SplitConfig()))
    assert all(rel in caplog.text for rel in want)


@pytest.mark.parametrize("layout", list_layouts())
def test_reader_rejects_wrong_root(layout: str, tmp_path: Path) -> None:
    (tmp_path / "just_a_file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected .* found just_a_file.png"):
        get_layout(layout)(tmp_path, SplitConfig())
    with pytest.raises(ValueError, match="not a directory"):
        get_layout(layout)(tmp_path / "missing", SplitConfig())


def test_wrong_layout_for_tree_names_expectation(tmp_path: Path) -> None:
    make_tree("cifake", tmp_path, per_class=1)
    expected = r"not a GenImage tree: expected <generator>/\{train,val\}.*found test/, train/"
    with pytest.raises(ValueError, match=expected):
        get_layout("genimage")(tmp_path, SplitConfig())


def test_genimage_single_generator_root(tmp_path: Path) -> None:
    make_tree("genimage", tmp_path, per_class=1)
    records, _ = _scan("genimage", tmp_path / "stable_diffusion_v_1_4" / "imagenet_ai_0419_sdv4")
    assert {r.generator for r in records} == {"SD1.4", REAL}
    assert all(r.relpath.startswith(("train/", "val/")) for r in records)


def test_genimage_val_is_test_and_train_carves_val(tmp_path: Path) -> None:
    make_tree("genimage", tmp_path, per_class=12)
    records, _ = _scan("genimage", tmp_path, SplitConfig(val_fraction=0.3))
    splits_by_folder: dict[str, set[str]] = {"train": set(), "val": set()}
    for record in records:
        splits_by_folder[record.relpath.split("/")[-3]].add(record.split)
    assert splits_by_folder == {"train": {"train", "val"}, "val": {"test"}}


def test_forensynths_categories_and_generators(tmp_path: Path) -> None:
    make_tree("forensynths", tmp_path, per_class=1)
    records, _ = _scan("forensynths", tmp_path)
    fakes = {(r.relpath.split("/")[1] if r.split == "test" else "train", r.generator) for r in records if not r.is_real}
    assert ("seeingdark", "SITD") in fakes and ("stylegan2", "StyleGAN2") in fakes and ("progan", "ProGAN") in fakes
    assert {r.category for r in records if r.relpath.startswith("test/seeingdark")} == {""}
    assert {r.category for r in records if r.relpath.startswith("train/")} == {"car", "cat"}


# --------------------------------------------------------------------------- splits


def test_hash_split_is_stable_and_fractions_hold() -> None:
    rels = [f"gen/{i:05d}.png" for i in range(20_000)]
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.1, salt="s")
    splits = [carve_split(r, cfg, with_test=True) for r in rels]
    assert splits == [carve_split(r, cfg, with_test=True) for r in rels]
    assert abs(splits.count("test") / len(rels) - 0.1) < 0.01
    assert abs(splits.count("val") / len(rels) - 0.2) < 0.01
    train_val = [carve_split(r, cfg, with_test=False) for r in rels]
    assert set(train_val) == {"train", "val"}
    assert abs(train_val.count("val") / len(rels) - 0.2) < 0.01
    # The salt, and only the salt, draws another split.
    other = [carve_split(r, SplitConfig(val_fraction=0.2, test_fraction=0.1, salt="t"), with_test=True) for r in rels]
    assert other != splits
    # A pinned value: the split of a file must never change between Python versions,
    # processes or machines (Python's hash() would).
    assert hash_unit("a/b.png", "synthray") == pytest.approx(0.9993779514386053, abs=1e-15)


def test_zero_fractions_keep_everything_in_train() -> None:
    cfg = SplitConfig(val_fraction=0.0, test_fraction=0.0)
    assert {carve_split(f"{i}.png", cfg, with_test=True) for i in range(500)} == {"train"}


# --------------------------------------------------------------------------- generator names


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("sdv4", "SD1.4"),
        ("stable_diffusion_v_1_4", "SD1.4"),
        ("imagenet_ai_0419_sdv4", "SD1.4"),
        ("SD-1.4", "SD1.4"),
        ("sd14", "SD1.4"),
        ("imagenet_ai_0424_sdv5", "SD1.5"),
        ("stable_diffusion_v_1_5", "SD1.5"),
        ("imagenet_ai_0508_adm", "ADM"),
        ("guided", "ADM"),
        ("imagenet_glide", "GLIDE"),
        ("glide_100_27", "GLIDE"),
        ("imagenet_midjourney", "Midjourney"),
        ("imagenet_ai_0419_biggan", "BigGAN"),
        ("imagenet_ai_0419_vqdm", "VQDM"),
        ("wukong", "Wukong"),
        ("progan", "ProGAN"),
        ("stylegan", "StyleGAN"),
        ("stylegan2", "StyleGAN2"),
        ("cyclegan", "CycleGAN"),
        ("stargan", "StarGAN"),
        ("gaugan", "GauGAN"),
        ("crn", "CRN"),
        ("imle", "IMLE"),
        ("san", "SAN"),
        ("seeingdark", "SITD"),
        ("deepfake", "Deepfake"),
        ("whichfaceisreal", "WhichFaceIsReal"),
        ("dalle", "DALL-E"),
        ("dalle2", "DALL-E 2"),
        ("DALL-E 3", "DALL-E 3"),
        ("dalle_mini", "DALL-E mini"),
        ("ldm_200_cfg", "LDM"),
        ("nature", REAL),
        ("0_real", REAL),
        ("REAL", REAL),
        ("real", REAL),
        ("authentic", REAL),
        ("  my-gan ", "my-gan"),
        ("synthbench_pixelshuffle", "synthbench_pixelshuffle"),
    ],
)
def test_normalize_generator(name: str, canonical: str) -> None:
    assert normalize_generator(name) == canonical
    # Normalising twice changes nothing: canonical names are fixed points.
    assert normalize_generator(canonical) == canonical


def test_generator_table_helpers() -> None:
    assert "SD1.4" in canonical_generators() and REAL in canonical_generators()
    assert all(normalize_generator(c) == c for c in canonical_generators())
    assert is_real_name("nature") and is_real_name("0_real") and not is_real_name("FAKE")
    assert normalize_generator("fake") == "fake"  # only the CIFAKE reader knows FAKE is SD1.4
    with pytest.raises(ValueError, match="empty"):
        normalize_generator("   ")


@pytest.mark.parametrize("tree", ["genimage", "forensynths", "cifake"])
@pytest.mark.parametrize("layout", ["genimage", "forensynths", "cifake"])
def test_tree_of_another_layout_is_refused(tree: str, layout: str, tmp_path: Path) -> None:
    make_tree(tree, tmp_path, per_class=1)
    if tree == layout:
        assert list(get_layout(layout)(tmp_path, SplitConfig()))
    else:
        with pytest.raises(ValueError, match="expected"):
            get_layout(layout)(tmp_path, SplitConfig())
