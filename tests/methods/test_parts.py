"""The methods' parts: 004's combined loss and rotation task, 003's perturbation and autoencoder, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from synthray.methods.autoencoder import ConvAutoencoder, train_autoencoder
from synthray.methods.base import Prediction
from synthray.methods.combined_loss import CombinedLoss, confidence_penalty, feature_similarity
from synthray.methods.perturb import Perturb, PerturbConfig
from synthray.methods.rotation import rotate_batch
from synthray.methods.scoring import score_predictions


def test_confidence_penalty_is_zero_when_uniform_and_log_c_when_certain():
    assert confidence_penalty(torch.zeros(4, 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert confidence_penalty(torch.zeros(4, 1)).item() == pytest.approx(0.0, abs=1e-6)  # binary logit 0 = 50/50
    certain = torch.tensor([[50.0, 0.0, 0.0]])
    assert confidence_penalty(certain).item() == pytest.approx(math.log(3), abs=1e-4)


def test_feature_similarity_of_class_centroids():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    is_ai = torch.tensor([False, False, True])
    assert feature_similarity(feats, is_ai).item() == pytest.approx(0.5)  # orthogonal: (1 + 0) / 2
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    assert feature_similarity(same, torch.tensor([False, True])).item() == pytest.approx(1.0)
    one_side = feature_similarity(same, torch.tensor([True, True]))
    one_side.backward()  # no real row: zero, still in the graph
    assert one_side.item() == 0.0 and same.grad is not None


def test_combined_loss_weights_are_learned_and_stay_positive():
    torch.manual_seed(0)
    loss_fn = CombinedLoss()
    logits = torch.randn(8, 1, requires_grad=True)
    feats = torch.randn(8, 5, requires_grad=True)
    is_ai = torch.tensor([0, 1] * 4, dtype=torch.bool)
    total, parts = loss_fn(logits, feats, is_ai.long(), is_ai)
    total.backward()
    assert logits.grad is not None and feats.grad is not None
    assert loss_fn.log_vars.grad is not None and loss_fn.log_vars.grad.abs().sum() > 0
    assert set(parts) >= {"ce", "feature_similarity", "confidence_penalty", "ce_weight"}
    assert all(parts[f"{t}_weight"] > 0 for t in ("ce", "feature_similarity", "confidence_penalty"))
    with pytest.raises(ValueError, match="expected"):
        loss_fn(torch.randn(8), feats, is_ai.long(), is_ai)


def test_rotation_labels_match_the_rotation():
    img = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    rotated, k = rotate_batch(img, torch.Generator().manual_seed(0))
    for r, q in zip(rotated, k):
        assert torch.equal(r, torch.rot90(img[0], int(q), dims=(-2, -1)))
    assert set(k.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 3, 4, 5))


def test_perturbation_changes_images_with_its_probability():
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(Perturb(PerturbConfig(p=0.0), 32)(x), x)
    torch.manual_seed(0)
    y = Perturb(PerturbConfig(p=1.0), 32)(x)
    assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
    assert all(not torch.allclose(a, b) for a, b in zip(x, y))
    with pytest.raises(ValueError, match="probability"):
        Perturb(PerturbConfig(p=1.5), 32)


def _two_colour_checks(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) checkerboards of 4-px cells in two random colours per image: sharp
    edges a blur smears, and a structure an autoencoder can learn in a few CPU steps."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy // 4 + xx // 4) % 2).float()
    a, b = (torch.rand(n, 3, 1, 1, generator=g) * 0.8 + 0.1 for _ in range(2))
    return a * mask + b * (1 - mask)


def test_autoencoder_reconstructs_better_than_a_blur():
    g = torch.Generator().manual_seed(0)
    size = 16  # 003's layer shapes; 16 px keeps the test to seconds (the flatten is 64 * 4 * 4)
    train, held_out = _two_colour_checks(256, size, g), _two_colour_checks(32, size, g)  # unseen colour pairs
    torch.manual_seed(0)
    ae = ConvAutoencoder(size)

    def batches():
        while True:
            yield {"image": train[torch.randint(0, len(train), (16,), generator=g)]}

    losses = train_autoencoder(ae, batches(), steps=180, lr=1e-3, log_every=0)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    with torch.no_grad():
        mse_ae = torch.mean((ae(held_out) - held_out) ** 2).item()
    blurred = TF.gaussian_blur(held_out, kernel_size=[5, 5], sigma=[1.0, 1.0])
    mse_blur = torch.mean((blurred - held_out) ** 2).item()
    assert mse_ae < mse_blur, (mse_ae, mse_blur)
    with pytest.raises(ValueError, match="expected"):
        ae(torch.rand(1, 3, 32, 32))


def test_scores_against_a_hand_count():
    def approx(x: float):  # rows are rounded to 4 decimals
        return pytest.approx(x, abs=1e-4)

    y = ["real", "real", "a", "a", "b", "z"]  # z is held out
    pred = Prediction(np.array([0.1, 0.7, 0.9, 0.8, 0.2, 0.6]), np.array(["real", "a", "a", "a", "real", "b"]))
    row = score_predictions(y, pred, seen=["real", "a", "b"], held_out=["z"], attributes=True)
    assert row["acc"] == approx(4 / 6)  # wrong: real->a, b->real
    assert row["auc"] == approx(6 / 8)  # AI scores 0.9 0.8 0.2 0.6 vs real 0.1 0.7: 6 of 8 pairs ordered
    assert row["acc_seen"] == approx(3 / 5) and row["acc_zero_shot"] == approx(2 / 3)
    assert row["attr_acc"] == approx(3 / 6)
    # F1: real 2*(1/2*1/2)/(1)=0.5; a: p=2/3 r=1 -> 0.8; b: p=0 r=0 -> 0; z: 0.
    assert row["f1_seen"] == approx((0.5 + 0.8 + 0.0) / 3) and row["f1_zero_shot"] == 0.0
    binary = score_predictions(
        y,
        Prediction(pred.is_ai, np.where(pred.is_ai >= 0.5, "ai", "real")),
        ["real", "a", "b"],
        ["z"],
        attributes=False,
    )
    assert binary["f1_seen"] is None and binary["acc"] == approx(4 / 6)
