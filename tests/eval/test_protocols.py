"""Protocol resolution against a checkpoint's classes and the classes in the shards."""

from __future__ import annotations

import pytest

from synthray.config import ProtocolConfig
from synthray.eval.protocols import GENIMAGE_GENERATORS, CheckpointInfo, ProtocolError, list_protocols, resolve_protocol

TEXTURES = ["real", "stripes", "checks", "rings", "diagonals"]
ALL = {c: 20 for c in [*TEXTURES, "dots"]}
ES4_CKPT = CheckpointInfo(trained=tuple(TEXTURES), held_out=("dots",), setting="ES4")


def _resolve(name, ck=ES4_CKPT, test=ALL, refs=ALL, **kw):
    return resolve_protocol(ProtocolConfig(name=name, **kw), ck, test, refs)


def test_every_protocol_is_registered():
    assert list_protocols() == ["ES1", "ES2", "ES3", "ES4", "custom", "sd14"]


def test_es2_indexes_the_trained_classes_and_leaves_out_the_held_out_one():
    p = _resolve("ES2")
    assert p.indexed == ("real", "checks", "diagonals", "rings", "stripes")
    assert p.zero_shot == () and p.novel == ()
    assert p.real == "real" and p.ignored == ("dots",)
    assert any("dots" in n for n in p.notes)


def test_es4_takes_the_checkpoints_held_out_classes_as_zero_shot():
    p = _resolve("ES4")
    assert p.indexed == ("real", "checks", "diagonals", "rings", "stripes")
    assert p.zero_shot == ("dots",) and p.novel == ("dots",)
    assert p.test_classes == ("real", "checks", "diagonals", "dots", "rings", "stripes")
    assert p.seen == ("real", "checks", "diagonals", "rings", "stripes")
    assert _resolve("auto") == p  # the checkpoint trained as ES4
    assert _resolve("es4.1", held_out=("dots",)).novel == ("dots",)  # a named variant, any case


def test_es4_accepts_genimage_folder_spellings():
    gens = list(GENIMAGE_GENERATORS)
    counts = {c: 10 for c in ["real", *gens]}
    ck = CheckpointInfo(
        trained=tuple(c for c in ["real", *gens] if c not in ("BigGAN", "SD1.4", "SD1.5")), setting="ES4"
    )
    p = resolve_protocol(
        ProtocolConfig(name="ES4.1", held_out=("biggan", "sdv4", "stable_diffusion_v_1_5")), ck, counts, counts
    )
    assert p.zero_shot == ("BigGAN", "SD1.4", "SD1.5") == p.novel
    assert any("differ from the checkpoint" in n for n in p.notes)  # the checkpoint named none


def test_es1_real_is_zero_shot_but_indexed():
    ck = CheckpointInfo(trained=("checks", "rings", "stripes"), setting="ES1")
    p = _resolve("ES1", ck=ck)
    assert p.indexed == ("real", "checks", "rings", "stripes")
    assert p.zero_shot == ("real",) and p.novel == ()
    assert p.ignored == ("diagonals", "dots")


def test_es3_and_sd14_test_every_other_generator():
    ck = CheckpointInfo(trained=("real", "stripes"), setting="ES3", generator="stripes")
    p = _resolve("ES3", ck=ck)
    assert p.indexed == ("real", "stripes")
    assert p.novel == p.zero_shot == ("checks", "diagonals", "dots", "rings")

    counts = {"real": 5, "SD1.4": 5, "ADM": 5, "Midjourney": 5, "my-gan": 5}
    sd = resolve_protocol(ProtocolConfig(name="sd14"), CheckpointInfo(trained=("real", "SD1.4")), counts, counts)
    assert sd.indexed == ("real", "SD1.4")
    assert sd.zero_shot == ("ADM", "Midjourney")  # GenImage's generators only
    assert sd.ignored == ("my-gan",)
    assert any("missing" in n and "Wukong" in n for n in sd.notes)


def test_custom_protocol():
    p = _resolve("custom", indexed=("real", "stripes", "checks"), zero_shot=("dots",))
    assert p.indexed == ("real", "checks", "stripes")
    assert p.novel == ("dots",) and p.zero_shot == ("dots",)


@pytest.mark.parametrize(
    "name, kwargs, ck, test, message",
    [
        ("ES9", {}, ES4_CKPT, ALL, "unknown protocol"),
        ("ES4", {"held_out": ("zigzags",)}, ES4_CKPT, ALL, "unknown class 'zigzags'"),
        ("ES4", {"held_out": ("stripes",)}, ES4_CKPT, ALL, "trained on them"),
        ("ES4", {"held_out": ("real",)}, ES4_CKPT, ALL, "cannot be held out"),
        ("ES4", {}, CheckpointInfo(trained=tuple(TEXTURES)), ALL, "needs held-out generators"),
        ("ES1", {}, ES4_CKPT, ALL, "generators only"),
        ("ES2", {}, CheckpointInfo(trained=("checks", "rings")), ALL, "no 'real' class"),
        ("ES3", {}, ES4_CKPT, ALL, "trained on ['real', 'stripes'] only"),
        ("sd14", {}, ES4_CKPT, ALL, "trained on ['SD1.4', 'real'] only"),
        ("ES4", {}, ES4_CKPT, {**ALL, "dots": 0}, "['dots'] have no images in the test split"),
        ("ES2", {}, ES4_CKPT, {**ALL, "rings": 0}, "['rings'] have no images in the test split"),
        ("custom", {"indexed": ("real", "dots"), "zero_shot": ("dots",)}, ES4_CKPT, ALL, "both indexed and zero-shot"),
    ],
)
def test_protocol_errors(name, kwargs, ck, test, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _resolve(name, ck=ck, test=test, **kwargs)


def test_an_indexed_class_without_references_is_an_error():
    with pytest.raises(ProtocolError, match=r"\['checks'\] have no images in the reference split"):
        _resolve("ES2", refs={**ALL, "checks": 0})
