"""Box-counting fractal dimension of feature maps, as a network layer (after 004 §3.3).

004 appends the fractal dimension of CNN feature maps to the pooled features, on the idea
that natural images repeat micro-patterns at every scale (Keller et al. 1987) and
generators reproduce that self-similarity poorly. The box-counting estimate (Huang et al.
1994): binarise the map, count the boxes of side ``s`` that hold any occupied pixel,
``N(s)``, for several ``s``; the dimension is the slope of ``log N(s)`` against
``log(1/s)``, fitted by least squares over the box sizes.

"Differentiable enough": a pixel is occupied when its activation is above the map's own
mean. The forward pass uses that hard step, so counts are exact (a soft sigmoid leaks a
little occupancy into every background pixel, and thousands of them swamp a thin line's
count); the backward pass uses the gradient of a sigmoid of the same margin (a
straight-through estimator). A box's count is the max over its pixels (a sub-gradient, like
max-pooling) and the slope is a closed-form least-squares fit, linear in ``log N``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


def default_box_sizes(height: int, width: int) -> list[int]:
    """Powers of two from 1 up to a quarter of the shorter side (always at least 1 and 2).

    Boxes much larger than the structure only count its bounding box: the log-log line
    bends there, so the fit stops at a quarter of the map.

    Args:
        height: map height.
        width: map width.
    Returns:
        increasing box sides.
    """
    top = max(2, min(height, width) // 4)
    sizes = [1]
    while sizes[-1] * 2 <= top:
        sizes.append(sizes[-1] * 2)
    return sizes


def occupancy(maps: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Binarisation of each map at its own mean, with a straight-through gradient.

    Args:
        maps: (N, C, H, W) activations.
        temperature: width of the sigmoid whose gradient stands in for the step's, in units
            of each map's standard deviation; 0 = no gradient (the plain step).
    Returns:
        (N, C, H, W) occupancy, exactly 0 or 1 in the forward pass.
    """
    mean = maps.mean(dim=(-2, -1), keepdim=True)
    hard = (maps > mean).to(maps.dtype)
    if temperature <= 0 or not maps.requires_grad:
        return hard
    std = maps.std(dim=(-2, -1), keepdim=True, unbiased=False)
    soft = torch.sigmoid((maps - mean) / (temperature * std + _EPS))
    return hard + (soft - soft.detach())


def box_counting_dimension(
    maps: torch.Tensor, box_sizes: Sequence[int] | None = None, temperature: float = 0.1
) -> torch.Tensor:
    """Box-counting dimension of every map.

    Args:
        maps: (N, C, H, W) activations (a binary image works: occupied = above its mean).
        box_sizes: box sides in pixels, at least two distinct; None = :func:`default_box_sizes`.
        temperature: see :func:`occupancy`.
    Returns:
        (N, C) dimension estimates (0 for an empty or constant map).
    Raises:
        ValueError: on a bad shape or fewer than two usable box sizes.
    """
    if maps.ndim != 4 or 0 in maps.shape:
        raise ValueError(f"expected (N, C, H, W) maps, got {tuple(maps.shape)}")
    h, w = maps.shape[-2:]
    sizes = sorted(set(int(s) for s in (box_sizes or default_box_sizes(h, w))))
    if len(sizes) < 2 or sizes[0] < 1 or sizes[-1] > max(h, w):
        raise ValueError(f"need >= 2 box sizes in [1, {max(h, w)}], got {sizes} for {h}x{w} maps")
    occ = occupancy(maps.float(), temperature)
    log_counts = []
    for s in sizes:
        # ceil_mode: boxes on the border that are only partly inside the map still count.
        boxes = occ if s == 1 else F.max_pool2d(occ, kernel_size=s, stride=s, ceil_mode=True)
        log_counts.append(torch.log(boxes.sum(dim=(-2, -1)) + _EPS))
    y = torch.stack(log_counts, dim=-1)  # (N, C, S)
    x = torch.tensor([math.log(1.0 / s) for s in sizes], dtype=y.dtype, device=y.device)
    xc = x - x.mean()
    # Least-squares slope of y on x; an empty map has all counts ~eps -> slope ~0.
    return ((y - y.mean(dim=-1, keepdim=True)) * xc).sum(dim=-1) / (xc * xc).sum()


class FractalDimension(nn.Module):
    """Layer: (N, C, H, W) feature maps -> (N, C) box-counting dimensions (no parameters).

    Args:
        box_sizes: fixed box sides; None = powers of two fitted to each input's size.
        temperature: width of the surrogate gradient's sigmoid (see :func:`occupancy`).
    """

    def __init__(self, box_sizes: Sequence[int] | None = None, temperature: float = 0.1) -> None:
        super().__init__()
        self.box_sizes = list(box_sizes) if box_sizes else None
        self.temperature = float(temperature)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Dimensions of every channel; see :func:`box_counting_dimension`."""
        return box_counting_dimension(maps, self.box_sizes, self.temperature)
