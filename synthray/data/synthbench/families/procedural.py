"""Procedural generator families: architectures drawn from a space, so training sees many.

Community Forensics (Park & Owens, CVPR 2025) trained on thousands of generators and found
accuracy on unseen ones rising with the number seen in training. Hand-writing that many is
not possible; drawing them is. An :class:`ArchSpec` fixes one architecture (how the decoder
upsamples and by how much, kernel size, depth, normalisation, activation, latent size, noise
injection, reconstruction or partly-from-noise generation, how the output range is handled,
skip-summed RGB or not), :func:`sample_spec` draws one from a named random stream, and
:class:`ProceduralFamily` builds the network. Family ``proc_0007`` is always the same
architecture (its spec depends on the index alone); the benchmark seed sets its weights and
images, as for the named families.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.seeding import stream

#: ``proc_NNNN``: the name of procedural family NNNN.
PROCEDURAL_PREFIX = "proc_"
_NAME = re.compile(rf"^{PROCEDURAL_PREFIX}(\d{{4}})$")
#: Seed of the architecture space (not the benchmark seed: a name is one architecture).
SPACE_SEED = 20251
_INDEX_LIMIT = 10_000

UPSAMPLERS = ("tconv4", "tconv3", "tconv2", "nearest", "bilinear", "bicubic", "pixel_shuffle")
NORMS = ("none", "batch", "group", "instance", "pixel")
ACTIVATIONS = ("relu", "leaky", "silu", "gelu", "elu", "tanh")
OUTPUTS = ("linear", "tanh", "sigmoid", "hardtanh")
MODES = ("reconstruct", "latent_noise", "denoise")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One architecture of the space (every field is drawn by :func:`sample_spec`)."""

    depth: int  # 2x stages down and up: the latent is at 1 / 2**depth of the image side
    upsample: str  # one of UPSAMPLERS: transposed conv (kernel 4/3/2), resize + conv, sub-pixel conv
    kernel: int  # decoder conv kernel side (3 or 5)
    convs_per_stage: int  # decoder convs after each upsampling (1 or 2)
    norm: str  # one of NORMS, in the decoder
    act: str  # one of ACTIVATIONS
    width: int  # decoder channels at full resolution (doubling per stage down, capped at 64)
    latent: int  # channels of the bottleneck code
    noise: bool  # per-pixel noise added after every decoder stage (StyleGAN-like)
    # one of MODES: decode the crop's code; decode a code partly replaced by noise; or noise the
    # crop itself and denoise it (SDEdit-style: the network predicts the clean image, with a skip
    # from its noisy input)
    mode: str
    latent_noise: float  # latent_noise: share of the code's spread replaced by noise; denoise: pixel noise sigma
    output: str  # one of OUTPUTS: how the last conv's values become [-1, 1]
    skip_rgb: bool  # RGB summed over every decoder scale (StyleGAN2 skips) or from the last only

    @property
    def stride(self) -> int:
        return 2**self.depth

    def describe(self) -> str:
        """One line for the benchmark summary."""
        extra = f", {self.latent_noise:.2f} of the code noised" if self.mode == "latent_noise" else ""
        head = f"input noised (sigma {self.latent_noise:.2f}) and denoised: " if self.mode == "denoise" else ""
        return (
            f"procedural: {head}conv encoder (/{self.stride}) -> {self.latent}-ch code{extra} -> decoder of "
            f"{self.depth} x [{self.upsample} 2x + {self.convs_per_stage} conv{self.kernel}x{self.kernel}], "
            f"norm {self.norm}, act {self.act}, width {self.width}, noise {'on' if self.noise else 'off'}, "
            f"output {self.output}{', skip-summed RGB' if self.skip_rgb else ''}"
        )


def procedural_name(index: int) -> str:
    """The family name of procedural architecture ``index``."""
    if not 0 <= index < _INDEX_LIMIT:
        raise ValueError(f"procedural index must be in [0, {_INDEX_LIMIT}), got {index}")
    return f"{PROCEDURAL_PREFIX}{index:04d}"


def procedural_index(name: str) -> int | None:
    """The index of a procedural family name, or None for any other name."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def sample_spec(index: int) -> ArchSpec:
    """Architecture ``index`` of the space (a pure function of the index)."""
    rng = stream(SPACE_SEED, "procedural", index)

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    depth = int(rng.choice([1, 2, 2, 3, 3]))
    mode = pick(MODES)
    upsample = pick(UPSAMPLERS)
    kernel = int(rng.choice([3, 3, 5]))
    convs = int(rng.integers(1, 3))
    norm, act = pick(NORMS), pick(ACTIVATIONS)
    width = int(rng.choice([8, 12, 16, 24]))
    # A cost bound, so no family takes many times the others' fitting time on a CPU: wide
    # full-resolution stages are what cost, so deep decoders and 5x5 kernels get fewer channels.
    width = min(width, 12 if depth == 3 or kernel == 5 else 16)
    return ArchSpec(
        depth=depth,
        upsample=upsample,
        kernel=kernel,
        convs_per_stage=1 if kernel == 5 else convs,
        norm=norm,
        act=act,
        width=width,
        latent=int(rng.choice([3, 4, 8, 16, 32])),
        noise=bool(rng.random() < 0.35),
        mode=mode,
        latent_noise=round(float(rng.uniform(0.2, 0.6) if mode == "latent_noise" else rng.uniform(0.1, 0.4)), 3)
        if mode != "reconstruct"
        else 0.0,
        output=pick(OUTPUTS),
        skip_rgb=bool(rng.random() < 0.3),
    )


def _activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "leaky": lambda: nn.LeakyReLU(0.2),
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "elu": nn.ELU,
        "tanh": nn.Tanh,
    }[name]()


class _PixelNorm(nn.Module):
    """Per-pixel feature normalisation (ProGAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _norm(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(4, channels), channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "pixel":
        return _PixelNorm()
    return nn.Identity()


def _upsample(kind: str, cin: int, cout: int) -> nn.Module:
    """A 2x upsampling ``(N, cin, H, W) -> (N, cout, 2H, 2W)``."""
    if kind == "tconv4":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    if kind == "tconv3":
        return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    if kind == "tconv2":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    if kind == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2))
    mode = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}[kind]
    align = None if mode == "nearest" else False
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=mode, align_corners=align), nn.Conv2d(cin, cout, 3, padding=1)
    )


class _Stage(nn.Module):
    """Upsample, then ``convs`` convs with norm, activation and optional noise."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int) -> None:
        super().__init__()
        self.up = _upsample(spec.upsample, cin, cout)
        layers: list[nn.Module] = [_norm(spec.norm, cout), _activation(spec.act)]
        for _ in range(spec.convs_per_stage):
            layers += [
                nn.Conv2d(cout, cout, spec.kernel, padding=spec.kernel // 2),
                _norm(spec.norm, cout),
                _activation(spec.act),
            ]
        self.body = nn.Sequential(*layers)
        self.noise_strength = nn.Parameter(torch.full((1, cout, 1, 1), 0.1)) if spec.noise else None

    def forward(self, x: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        h = self.up(x)
        if self.noise_strength is not None:
            n, _, hh, ww = h.shape
            h = h + self.noise_strength * torch.randn((n, 1, hh, ww), generator=noise, dtype=h.dtype)
        return self.body(h)


class ProceduralFamily(GeneratorFamily):
    """The network of one :class:`ArchSpec` (built per instance, not per class).

    Args:
        name: the family name (``proc_NNNN``).
        spec: its architecture.
    """

    def __init__(self, name: str, spec: ArchSpec) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]  (per instance: every spec is its own family)
        self.spec = spec
        self.architecture = spec.describe()  # type: ignore[misc]
        self.stride = spec.stride  # type: ignore[misc]
        widths = [min(64, spec.width * 2**i) for i in range(spec.depth + 1)]  # full res first
        enc: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        enc.append(nn.Conv2d(widths[-1], spec.latent, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        self.stem = nn.Sequential(nn.Conv2d(spec.latent, widths[-1], 3, padding=1), _activation(spec.act))
        rev = widths[::-1]
        self.stages = nn.ModuleList(_Stage(spec, cin, cout) for cin, cout in zip(rev[:-1], rev[1:]))
        rgb_from = rev[1:] if spec.skip_rgb else rev[-1:]
        self.to_rgb = nn.ModuleList(
            nn.Conv2d(c, 3, 1 if spec.skip_rgb else 3, padding=0 if spec.skip_rgb else 1) for c in rgb_from
        )

    def _code(self, x: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        z = self.encoder(self.to_net(x))
        if self.spec.mode == "latent_noise":
            a = self.spec.latent_noise
            spread = z.std(dim=(2, 3), keepdim=True).detach()
            eps = torch.randn(z.shape, generator=noise, dtype=z.dtype)
            z = math.sqrt(1 - a * a) * z + a * spread * eps
        return z

    def _decode(self, z: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        h = self.stem(z)
        rgb: torch.Tensor | None = None
        for i, stage in enumerate(self.stages):
            h = stage(h, noise)
            if self.spec.skip_rgb:
                out = self.to_rgb[i](h)
                rgb = (
                    out
                    if rgb is None
                    else F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + out
                )
        if not self.spec.skip_rgb:
            rgb = self.to_rgb[0](h)
        assert rgb is not None
        if self.spec.output == "tanh":
            return torch.tanh(rgb)
        if self.spec.output == "sigmoid":
            return torch.sigmoid(rgb) * 2 - 1
        if self.spec.output == "hardtanh":
            return F.hardtanh(rgb)
        return rgb  # linear: clipped to [0, 1] when written, as some generators' outputs are

    def _denoise(self, noisy: torch.Tensor, sigma: float, noise: torch.Generator | None) -> torch.Tensor:
        # EDM-style skip (Karras et al. 2022): at init the output is mostly the noisy input, so a
        # brief fit learns to remove noise instead of learning the identity first.
        c_skip = 0.25 / (sigma * sigma + 0.25)
        return c_skip * noisy + (1 - c_skip) * self._decode(self._code_of(noisy), noise)

    def _code_of(self, net_image: torch.Tensor) -> torch.Tensor:
        return self.encoder(net_image)

    def fit_loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        if self.spec.mode != "denoise":
            return super().fit_loss(x, noise)
        self.check_input(x)
        clean = self.to_net(x)
        sigma = self.spec.latent_noise * float(torch.rand((), generator=noise)) * 2
        noisy = clean + sigma * torch.randn(clean.shape, generator=noise, dtype=clean.dtype)
        return self.reconstruction_loss(self.from_net(self._denoise(noisy, sigma, noise)), x)

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        if self.spec.mode == "denoise":
            sigma = self.spec.latent_noise
            clean = self.to_net(x)
            noisy = clean + sigma * torch.randn(clean.shape, generator=noise, dtype=clean.dtype)
            return self.from_net(self._denoise(noisy, sigma, noise))
        return self.from_net(self._decode(self._code(x, noise), noise))


def create_procedural(name: str) -> ProceduralFamily:
    """A freshly initialised procedural family (seed torch first for determinism).

    Raises:
        KeyError: if ``name`` is not a procedural name.
    """
    index = procedural_index(name)
    if index is None:
        raise KeyError(f"{name!r} is not a procedural family name ({PROCEDURAL_PREFIX}NNNN)")
    return ProceduralFamily(name, sample_spec(index))
