"""Explanations: maps of the right shape that find where the evidence is."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synthray.config import TrainConfig, from_dict, to_dict
from synthray.methods.explain import (
    ExplainConfig,
    explain_attribution,
    explain_score,
    explanation_figure,
    lime_map,
    saliency_map,
)

SIZE = 32


def planted_image(seed: int = 0) -> torch.Tensor:
    """Smooth noise everywhere, vertical stripes only in the top-left quadrant."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, 1, 1, generator=g) * 0.4 + 0.3
    img = base + 0.03 * torch.randn(3, SIZE, SIZE, generator=g)
    stripes = 0.25 * torch.sin(torch.arange(SIZE // 2) * (2 * np.pi / 4))  # 4-px period
    img[:, : SIZE // 2, : SIZE // 2] += stripes[None, None, :]
    return img.clamp(0, 1)


def stripe_energy(x: torch.Tensor) -> torch.Tensor:
    """A model that looks at the whole image: the mean energy of a horizontal-frequency filter."""
    gray = x.mean(dim=1, keepdim=True)
    kernel = torch.tensor([[[[1.0, 0.0, -1.0]]]])
    return F.conv2d(gray, kernel).pow(2).mean(dim=(1, 2, 3))


def quadrant_share(m: np.ndarray) -> float:
    """Share of the positive evidence that lies in the top-left quadrant."""
    pos = np.clip(m, 0, None)
    return float(pos[: SIZE // 2, : SIZE // 2].sum() / pos.sum())


def test_saliency_finds_the_planted_quadrant():
    sal = saliency_map(stripe_energy, planted_image())
    assert sal.shape == (SIZE, SIZE) and sal.dtype == np.float32
    assert 0.0 <= sal.min() and sal.max() == pytest.approx(1.0)
    assert quadrant_share(sal) > 0.7


def test_lime_finds_the_planted_quadrant():
    res = lime_map(stripe_energy, planted_image(), ExplainConfig(n_segments=16, n_samples=120))
    assert res.segments.shape == (SIZE, SIZE) and res.map.shape == (SIZE, SIZE)
    assert res.weights.shape == (res.segments.max() + 1,)
    assert quadrant_share(res.map) > 0.7
    # Deterministic for a seed.
    again = lime_map(stripe_energy, planted_image(), ExplainConfig(n_segments=16, n_samples=120))
    assert np.allclose(res.weights, again.weights)


def test_explanation_json_and_figure(tmp_path):
    exp = explain_score(stripe_energy, planted_image(), cfg=ExplainConfig(n_segments=16, n_samples=40))
    assert exp.score == pytest.approx(float(stripe_energy(planted_image()[None])[0]), rel=1e-5)
    d = exp.to_dict()
    sal_png = Image.open(io.BytesIO(base64.b64decode(d["saliency"])))
    assert sal_png.size == (SIZE, SIZE) and d["resolution"] == SIZE
    assert len(d["lime"]["weights"]) == int(exp.lime.segments.max()) + 1
    listed = exp.to_dict("list")
    assert np.array(listed["saliency"]).shape == (SIZE, SIZE) and np.array(listed["lime"]["segments"]).shape == (
        SIZE,
        SIZE,
    )
    with pytest.raises(ValueError, match="encoding"):
        exp.to_dict("jpeg")
    with pytest.raises(ValueError, match="kinds"):
        explain_score(stripe_energy, planted_image(), kinds=("gradcam",))
    img = planted_image().permute(1, 2, 0).numpy()
    path = explanation_figure([img], [("stripe energy", [exp])], ["planted"], tmp_path / "fig.png")
    assert Image.open(path).size[0] > 100


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """An Embedder over a freshly initialised tiny encoder checkpoint (no training needed to
    check what explain_attribution computes)."""
    from synthray.attribution.embedder import Embedder
    from synthray.models import build_encoder
    from synthray.train.checkpoint import save_checkpoint

    cfg = from_dict(
        TrainConfig,
        {
            "encoder": {"backbone": "resnet10t", "embedding_dim": 16},
            "preprocess": {"resolution": SIZE, "device": "cpu"},
        },
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("explain_ckpt") / "epoch_0000"
    save_checkpoint(folder, build_encoder(cfg.encoder), {}, {"config": to_dict(cfg), "classes": ["real", "a"]})
    return Embedder(folder, device="cpu")


def _png(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_explain_attribution_explains_the_similarity_to_the_references(embedder):
    data = _png(planted_image(1))
    refs = embedder.embed_bytes([_png(planted_image(s)) for s in (2, 3, 4)])
    exp = explain_attribution(embedder, data, refs, cfg=ExplainConfig(n_segments=16, n_samples=40))
    target = refs.mean(axis=0) / np.linalg.norm(refs.mean(axis=0))
    query = embedder.embed_bytes([data])[0]
    assert exp.score == pytest.approx(float(query @ target), abs=1e-4)
    assert exp.saliency.shape == (SIZE, SIZE) and exp.lime.map.shape == (SIZE, SIZE)
    only_saliency = explain_attribution(embedder, data, refs[0], kinds=("saliency",))
    assert only_saliency.lime is None and "lime" not in only_saliency.to_dict()
    with pytest.raises(ValueError, match="-d"):
        explain_attribution(embedder, data, np.zeros((2, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="decode"):
        explain_attribution(embedder, b"not an image", refs)
