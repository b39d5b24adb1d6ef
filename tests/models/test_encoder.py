"""The encoder: shapes, unit norm, memory formats, input checks, local weights, the head ablation."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
import torch.nn.functional as F

from synthray.models import (
    ContrastiveEncoder,
    EncoderConfig,
    ProjectionHead,
    build_encoder,
    list_encoders,
    register_encoder,
)

TINY = "resnet10t"  # 5M params, 512-d features: fast enough for CPU tests at 32 px


def _images(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _tiny(**kwargs) -> ContrastiveEncoder:
    torch.manual_seed(0)
    return ContrastiveEncoder(TINY, **kwargs)


# ---------------------------------------------------------------- every registered encoder
@pytest.mark.parametrize("name", list_encoders())
def test_registered_encoder_gives_unit_embeddings(name):
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(name=name, backbone=TINY))
    x = _images(3)
    z = model(x)
    assert z.shape == (3, 128) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    # channels_last (the GPU layout) gives the same embedding as contiguous NCHW.
    model.eval()
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model_cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-4)
    # Gradients reach the backbone.
    model.train()
    model(x).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_encoders())
def test_registered_encoder_rejects_bad_input(name):
    model = build_encoder(EncoderConfig(name=name, backbone=TINY))
    for bad in (
        torch.rand(3, 32, 32),  # no batch dim
        torch.rand(2, 1, 32, 32),  # grey
        torch.rand(2, 32, 32, 3),  # NHWC as data, not as memory format
        torch.rand(0, 3, 32, 32),  # empty batch
        torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),  # not scaled to [0, 1]
    ):
        with pytest.raises(ValueError):
            model(bad)


def test_default_config_is_the_thesis_encoder():
    model = build_encoder(EncoderConfig())
    assert isinstance(model, ContrastiveEncoder)
    assert model.backbone_name == "efficientnet_b0" and model.feature_dim == 1280 and model.embedding_dim == 128
    z = model.embed(_images(2))
    assert z.shape == (2, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_registry_errors():
    with pytest.raises(ValueError, match="supcon"):
        build_encoder(EncoderConfig(name="no-such-encoder"))
    with pytest.raises(ValueError):
        register_encoder("supcon")(lambda cfg: None)


# ---------------------------------------------------------------- construction checks
def test_unknown_backbone_fails_before_any_model_is_built(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("create_model must not be reached")

    monkeypatch.setattr(timm, "create_model", boom)
    with pytest.raises(ValueError, match="unknown timm backbone"):
        ContrastiveEncoder("resnet_does_not_exist")
    with pytest.raises(ValueError, match="unknown timm backbone"):
        build_encoder(EncoderConfig(backbone="efficientnet_b99"))


def test_pretrained_needs_a_local_file():
    with pytest.raises(ValueError, match="never downloaded"):
        ContrastiveEncoder(TINY, pretrained=True)


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        ContrastiveEncoder(TINY, bogus=1)


def test_drop_rate_none_is_left_to_timm(monkeypatch):
    seen: list[dict] = []
    real = timm.create_model

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    ContrastiveEncoder(TINY, drop_rate=None)
    ContrastiveEncoder(TINY, drop_rate=0.2)
    assert seen[0] == {"pretrained": False, "num_classes": 0}
    assert seen[1] == {"pretrained": False, "num_classes": 0, "drop_rate": 0.2}


# ---------------------------------------------------------------- local weights
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tmp_path, suffix):
    src = _tiny().eval()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    else:
        torch.save(src.backbone.state_dict(), path)
    torch.manual_seed(123)  # a different random init, overwritten by the file
    dst = ContrastiveEncoder(TINY, weights_path=str(path), pretrained=True).eval()
    dst.head.load_state_dict(src.head.state_dict())
    x = _images()
    torch.testing.assert_close(dst.features(x), src.features(x), rtol=0, atol=0)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_full_timm_checkpoint_with_classifier_loads(tmp_path):
    full = timm.create_model(TINY, pretrained=False).eval()  # with its 1000-class fc
    path = tmp_path / "full.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    enc = ContrastiveEncoder(TINY, weights_path=str(path)).eval()
    x = _images()
    want = full.forward_head(full.forward_features(x), pre_logits=True)
    torch.testing.assert_close(enc.features(x), want)


def test_a_checkpoint_saved_inside_ddp_loads(tmp_path):
    """A ``module.`` prefix (the model saved wrapped in DDP) under a ``model`` key: timm's reader unwraps both."""
    src = _tiny().eval()
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in src.backbone.state_dict().items()}, "epoch": 3}, path)
    dst = ContrastiveEncoder(TINY, weights_path=str(path)).eval()
    x = _images()
    torch.testing.assert_close(dst.features(x), src.features(x), rtol=0, atol=0)


def test_mismatching_weights_file_is_a_clear_error(tmp_path):
    other = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), other)
    with pytest.raises(ValueError, match="does not fit"):
        ContrastiveEncoder(TINY, weights_path=str(other))

    state = _tiny().backbone.state_dict()
    dropped = next(iter(state))
    del state[dropped]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(ValueError, match="missing keys"):
        ContrastiveEncoder(TINY, weights_path=str(partial))
    ContrastiveEncoder(TINY, weights_path=str(partial), weights_strict=False)  # tolerated, logged

    with pytest.raises(FileNotFoundError):
        ContrastiveEncoder(TINY, weights_path=str(tmp_path / "absent.pt"))
    with pytest.raises(ValueError, match="must end in"):
        ContrastiveEncoder(TINY, weights_path=str(tmp_path / "weights.npz"))
    junk = tmp_path / "junk.pt"
    torch.save([1, 2, 3], junk)
    with pytest.raises(ValueError, match="state_dict"):
        ContrastiveEncoder(TINY, weights_path=str(junk))


# ---------------------------------------------------------------- head
def test_no_head_ablation_embeds_the_normalised_backbone_feature():
    model = _tiny(head_layers=0).eval()
    assert model.embedding_dim == model.feature_dim == 512
    x = _images()
    z = model(x)
    assert z.shape == (2, 512)
    torch.testing.assert_close(z, F.normalize(model.features(x), dim=1))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_head_depth_and_width(layers):
    head = ProjectionHead(512, 64, hidden_dim=32, num_layers=layers)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == 512 and linears[-1].out_features == 64
    if layers > 1:
        assert linears[0].out_features == 32
    assert head(torch.randn(4, 512)).shape == (4, 64)
    with pytest.raises(ValueError):
        ProjectionHead(512, 64, num_layers=-1)


def test_embed_is_forward_in_eval_and_restores_mode():
    model = _tiny(drop_rate=0.5)
    x = _images()
    assert model.training
    z = model.embed(x)
    assert model.training and not z.requires_grad
    model.eval()
    torch.testing.assert_close(z, model(x))


def test_weights_mismatch_is_logged_when_not_strict(tmp_path, caplog):
    state = _tiny().backbone.state_dict()
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="synthray.models.weights"):
        ContrastiveEncoder(TINY, weights_path=str(path), weights_strict=False)
    assert "extra.weight" in caplog.text
