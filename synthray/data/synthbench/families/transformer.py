"""A patch transformer decoder: tokens in, a linear "unpatchify" out (ViT/DiT style).

Transformer image generators (ViT-VQGAN, DiT, MaskGIT decoders) work on patch tokens and map
each token back to a block of pixels with a linear layer. Nothing ties neighbouring patches at
the pixel level, so the fingerprint is an 8-pixel block grid.
"""

from __future__ import annotations

import torch
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.registry import register_family

_PATCH = 8
_DIM = 96
_DEPTH = 2
_HEADS = 4


def _sincos_2d(h: int, w: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``(h * w, dim)`` fixed 2-D sine-cosine position embedding (any grid size)."""
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=dtype) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    ay = ys.reshape(-1, 1) * omega[None]
    ax = xs.reshape(-1, 1) * omega[None]
    return torch.cat([torch.sin(ay), torch.cos(ay), torch.sin(ax), torch.cos(ax)], dim=1)


@register_family("patch_transformer")
class PatchTransformer(GeneratorFamily):
    """8x8 patch tokens -> pre-norm transformer encoder -> linear unpatchify."""

    architecture = (
        f"patch transformer (ViT/DiT-style): {_PATCH}x{_PATCH} patch embedding (192 -> {_DIM}), "
        f"{_DEPTH} pre-norm self-attention layers, linear unpatchify (patch-grid artefacts)"
    )
    stride = _PATCH
    learning_rate = 1e-3

    def __init__(self) -> None:
        super().__init__()
        pixels = 3 * _PATCH * _PATCH
        self.embed = nn.Linear(pixels, _DIM)
        layer = nn.TransformerEncoderLayer(
            _DIM,
            _HEADS,
            dim_feedforward=2 * _DIM,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.body = nn.TransformerEncoder(layer, _DEPTH, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(_DIM)
        self.unpatchify = nn.Linear(_DIM, pixels)

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        n, c, height, width = x.shape
        gh, gw = height // _PATCH, width // _PATCH
        patches = (
            self.to_net(x)
            .reshape(n, c, gh, _PATCH, gw, _PATCH)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(n, gh * gw, c * _PATCH * _PATCH)
        )
        tokens = self.embed(patches) + _sincos_2d(gh, gw, _DIM, x.dtype)[None]
        out = self.unpatchify(self.norm(self.body(tokens)))
        img = out.reshape(n, gh, gw, c, _PATCH, _PATCH).permute(0, 3, 1, 4, 2, 5)
        return self.from_net(img.reshape(n, c, height, width))
