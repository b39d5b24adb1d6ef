"""Losses against brute-force double-loop references, and the contract every loss keeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthray.losses import (
    EuclideanContrastiveLoss,
    LossConfig,
    SupConLoss,
    build_loss,
    list_losses,
    register_loss,
)


# ---------------------------------------------------------------- references (float64 loops)
def _flatten(feats: np.ndarray, labels: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim == 3:  # view-major, as the loss documents
        n, v, d = f.shape
        f = f.transpose(1, 0, 2).reshape(v * n, d)
        y = np.tile(y, v)
    if normalize:
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return f, y


def ref_supcon(feats, labels, tau: float, base_tau: float | None = None, normalize: bool = True) -> float:
    f, y = _flatten(feats, labels, normalize)
    base_tau = tau if base_tau is None else base_tau
    m = len(f)
    per_anchor = []
    for i in range(m):
        pos = [p for p in range(m) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(f[i] @ f[a] / tau) for a in range(m) if a != i)
        terms = [math.log(math.exp(f[i] @ f[p] / tau) / denom) for p in pos]
        per_anchor.append(-(tau / base_tau) * sum(terms) / len(pos))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def ref_euclidean(feats, labels, margin: float, pairs=None, normalize: bool = True) -> float:
    f, y = _flatten(feats, labels, normalize)
    m = len(f)
    if pairs is None:
        pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    else:
        pairs = list(zip(*(np.asarray(p).tolist() for p in pairs)))
    if not pairs or not any(y[a] == y[b] for a, b in pairs):
        return 0.0
    total = 0.0
    for a, b in pairs:
        d = float(np.linalg.norm(f[a] - f[b]))
        total += d * d if y[a] == y[b] else max(0.0, margin - d) ** 2
    return total / len(pairs)


def _batch(n: int = 10, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 0])  # classes 2 and 4 are singletons: no positives


# ---------------------------------------------------------------- SupCon
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,base", [(0.1, None), (0.05, None), (0.5, 0.07)])
def test_supcon_matches_reference(dtype, tau, base):
    x = _batch()
    got = SupConLoss(temperature=tau, base_temperature=base)(x.to(dtype), LABELS)
    assert got.dtype == dtype
    want = ref_supcon(x.numpy(), LABELS.numpy(), tau, base)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert got.item() == pytest.approx(want, rel=tol, abs=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_supcon_low_precision_inputs_computed_in_float32(dtype):
    x = _batch().to(dtype)
    got = SupConLoss(temperature=0.1)(x, LABELS)
    assert got.dtype == torch.float32
    # Same rounded inputs, float64 reference: only the float32 arithmetic differs.
    want = ref_supcon(x.double().numpy(), LABELS.numpy(), 0.1)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # And close to the full-precision loss, within what the input rounding costs.
    full = ref_supcon(_batch().numpy(), LABELS.numpy(), 0.1)
    assert got.item() == pytest.approx(full, rel=0.05)


def test_supcon_under_autocast_matches_float32():
    x = _batch().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = SupConLoss(temperature=0.1)(x, LABELS)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_supcon(x.detach().numpy(), LABELS.numpy(), 0.1), rel=1e-5)
    got.backward()
    assert torch.isfinite(x.grad).all()


def test_supcon_multiview_matches_reference():
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(5, 2, 6, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 1, 2, 3])
    got = SupConLoss(temperature=0.1)(x, labels)
    assert got.item() == pytest.approx(ref_supcon(x.numpy(), labels.numpy(), 0.1), rel=1e-10)
    # Without labels only the other views of a sample are positives (SimCLR-style).
    got = SupConLoss(temperature=0.1)(x)
    assert got.item() == pytest.approx(ref_supcon(x.numpy(), np.arange(5), 0.1), rel=1e-10)


def test_supcon_normalizes_inside_only_when_asked():
    x = _batch() * 3.0
    assert SupConLoss(temperature=0.1)(x, LABELS).item() == pytest.approx(
        ref_supcon(x.numpy(), LABELS.numpy(), 0.1), rel=1e-10
    )
    raw = SupConLoss(temperature=0.1, normalize=False)(x, LABELS).item()
    assert raw == pytest.approx(ref_supcon(x.numpy(), LABELS.numpy(), 0.1, normalize=False), rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_supcon_stable_at_low_temperature_with_near_identical_vectors(dtype):
    base = F.normalize(torch.randn(1, 16), dim=1)
    x = F.normalize(base + 1e-4 * torch.randn(12, 16), dim=1).to(dtype).requires_grad_()
    labels = torch.arange(12) % 3
    loss = SupConLoss(temperature=0.01)(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # All logits are ~equal: each positive gets ~1/11 of the softmax mass.
    assert loss.item() == pytest.approx(math.log(11), rel=0.05)
    # Far apart and with huge logits (1/0.01 = 100) it must stay finite too.
    y = torch.eye(12, 16, requires_grad=True)
    loss = SupConLoss(temperature=0.01)(y, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(y.grad).all()


def test_supcon_rejects_bad_temperature():
    with pytest.raises(ValueError):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError):
        SupConLoss(temperature=0.1, base_temperature=-1.0)


# ---------------------------------------------------------------- Euclidean contrastive
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_euclidean_matches_reference(dtype, margin):
    x = _batch()
    got = EuclideanContrastiveLoss(margin=margin)(x.to(dtype), LABELS)
    want = ref_euclidean(x.numpy(), LABELS.numpy(), margin)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert got.item() == pytest.approx(want, rel=tol, abs=tol)


def test_euclidean_given_pairs_and_multiview_match_reference():
    x = _batch()
    pairs = (torch.tensor([0, 2, 5, 6, 1]), torch.tensor([1, 3, 6, 7, 9]))
    got = EuclideanContrastiveLoss(margin=1.0)(x, LABELS, pairs=pairs)
    assert got.item() == pytest.approx(ref_euclidean(x.numpy(), LABELS.numpy(), 1.0, pairs), rel=1e-10)
    mv = x.reshape(5, 2, 8)
    labels = torch.tensor([0, 1, 1, 2, 0])
    got = EuclideanContrastiveLoss(margin=1.0)(mv, labels)
    assert got.item() == pytest.approx(ref_euclidean(mv.numpy(), labels.numpy(), 1.0), rel=1e-10)
    with pytest.raises(ValueError):
        EuclideanContrastiveLoss()(mv, labels, pairs=pairs)


def test_euclidean_margin_behaviour():
    # Orthonormal vectors are sqrt(2) apart: beyond margin 1 (no push), inside margin 2.
    x = torch.eye(4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # 1 positive pair, 5 negative pairs
    d = math.sqrt(2.0)
    assert EuclideanContrastiveLoss(margin=1.0)(x, labels).item() == pytest.approx(d * d / 6)
    assert EuclideanContrastiveLoss(margin=2.0)(x, labels).item() == pytest.approx((d * d + 5 * (2 - d) ** 2) / 6)


def test_euclidean_no_negatives_is_mean_squared_distance():
    x = _batch(6)
    labels = torch.zeros(6, dtype=torch.long)
    d2 = torch.cdist(x, x).pow(2)
    want = d2[torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)].mean()
    assert EuclideanContrastiveLoss()(x, labels).item() == pytest.approx(want.item(), rel=1e-10)


def test_euclidean_bad_pairs_and_margin():
    x = _batch(4)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError):
        EuclideanContrastiveLoss()(x, labels, pairs=(torch.tensor([0]), torch.tensor([4])))
    with pytest.raises(ValueError):
        EuclideanContrastiveLoss()(x, labels, pairs=(torch.tensor([0, 1]), torch.tensor([2])))
    with pytest.raises(ValueError):
        EuclideanContrastiveLoss(margin=0.0)
    empty = (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    x.requires_grad_()
    loss = EuclideanContrastiveLoss()(x, labels, pairs=empty)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------- the contract of every registered loss
def test_registry_lists_the_builtin_losses():
    assert {"supcon", "euclidean"} <= set(list_losses())
    with pytest.raises(ValueError, match="supcon"):
        build_loss(LossConfig(name="no-such-loss"))
    with pytest.raises(ValueError):
        register_loss("supcon")(lambda cfg: None)


@pytest.fixture(params=list_losses())
def loss_fn(request):
    return build_loss(LossConfig(name=request.param))


@pytest.mark.parametrize("labels", [torch.arange(6), torch.tensor([7])], ids=["all-distinct", "single-sample"])
def test_no_positive_gives_zero_loss_that_backpropagates(loss_fn, labels):
    x = _batch(len(labels)).float().requires_grad_()
    loss = loss_fn(x, labels)
    assert loss.ndim == 0 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


def test_gradients_flow_when_positives_exist(loss_fn):
    x = torch.randn(10, 8, requires_grad=True)
    loss = loss_fn(F.normalize(x, dim=1), LABELS)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_clustered_embeddings_score_lower_than_random(loss_fn):
    labels = torch.arange(16) % 4
    centers = torch.eye(4, 8)
    clustered = F.normalize(centers[labels] + 0.01 * torch.randn(16, 8), dim=1)
    random = F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert loss_fn(clustered, labels).item() < loss_fn(random, labels).item()


def test_half_precision_input_gives_float32_loss(loss_fn):
    x = _batch().to(torch.bfloat16).requires_grad_()
    loss = loss_fn(x, LABELS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize(
    "features,labels",
    [
        (torch.randn(4, 8), torch.arange(3)),  # label count
        (torch.randn(4, 8), torch.zeros(4, 1)),  # label rank
        (torch.randn(8), torch.arange(8)),  # features rank
        (torch.randn(2, 2, 2, 2), torch.arange(2)),
        (torch.randn(0, 8), torch.arange(0)),  # empty batch
        (torch.ones(4, 8, dtype=torch.long), torch.arange(4)),  # integer features
    ],
)
def test_shape_and_dtype_mismatch_is_value_error(loss_fn, features, labels):
    with pytest.raises(ValueError):
        loss_fn(features, labels)


def test_unknown_keyword_is_type_error(loss_fn):
    with pytest.raises(TypeError):
        loss_fn(_batch(), LABELS, bogus=1)
    with pytest.raises(TypeError):
        type(loss_fn)(bogus=1)
