"""The box-counting fractal dimension on shapes of known dimension, and as a network layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthray.methods.fractal import FractalDimension, box_counting_dimension, default_box_sizes
from synthray.methods.resnet import TimmBody

CARPET_DIMENSION = math.log(8) / math.log(3)  # 1.8928


def carpet(level: int) -> torch.Tensor:
    """The Sierpinski carpet at 3**level pixels: (1, 1, 3**level, 3**level) of 0/1."""
    img = np.ones((1, 1), dtype=np.float32)
    for _ in range(level):
        hole = np.zeros_like(img)
        img = np.block([[img, img, img], [img, hole, img], [img, img, img]])
    return torch.from_numpy(img)[None, None]


def test_filled_square_is_two_dimensional():
    img = torch.zeros(1, 1, 64, 64)
    img[..., 16:48, 16:48] = 1
    assert box_counting_dimension(img).item() == pytest.approx(2.0, abs=0.02)


def test_line_is_one_dimensional():
    img = torch.zeros(1, 1, 64, 64)
    img[..., 30, :] = 1
    assert box_counting_dimension(img).item() == pytest.approx(1.0, abs=0.02)
    diagonal = torch.eye(64)[None, None]
    assert box_counting_dimension(diagonal).item() == pytest.approx(1.0, abs=0.02)


def test_sierpinski_carpet():
    img = carpet(5)  # 243 px
    # Boxes on the carpet's own 3-adic grid give the exact self-similarity dimension ...
    assert box_counting_dimension(img, box_sizes=[1, 3, 9, 27]).item() == pytest.approx(CARPET_DIMENSION, abs=0.01)
    # ... and the default powers of two, misaligned with it, still land near it.
    assert box_counting_dimension(img).item() == pytest.approx(CARPET_DIMENSION, abs=0.1)


def test_dimensions_per_channel_and_batch():
    square = torch.zeros(64, 64)
    square[16:48, 16:48] = 1
    line = torch.zeros(64, 64)
    line[5, :] = 1
    maps = torch.stack([torch.stack([square, line]), torch.stack([line, square])])  # (2, 2, 64, 64)
    d = FractalDimension()(maps)
    assert d.shape == (2, 2)
    assert torch.allclose(d, torch.tensor([[2.0, 1.0], [1.0, 2.0]]), atol=0.02)


def test_gradients_reach_the_feature_maps():
    maps = torch.randn(2, 3, 16, 16, requires_grad=True)
    FractalDimension()(maps).sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="expected"):
        box_counting_dimension(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="box sizes"):
        box_counting_dimension(torch.zeros(1, 1, 8, 8), box_sizes=[2])
    assert default_box_sizes(16, 16) == [1, 2, 4] and default_box_sizes(2, 2) == [1, 2]


def test_fractal_layer_appends_one_dimension_per_channel():
    plain, fractal = TimmBody("resnet10t"), TimmBody("resnet10t", fractal=True, fractal_stage=1)
    stage_channels = plain.backbone.feature_info[1]["num_chs"]
    assert fractal.out_dim == plain.out_dim + stage_channels
    out = fractal.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, fractal.out_dim) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="feature stages"):
        TimmBody("resnet10t", fractal=True, fractal_stage=9)
