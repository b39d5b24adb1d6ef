"""The GradCache step gives the full-batch gradient; the LR schedule; class selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthray.config import ExperimentConfig
from synthray.losses import SupConLoss
from synthray.train.experiments import select_classes
from synthray.train.loop import lr_factor
from synthray.train.step import supcon_step


class _Tiny(nn.Module):
    """Conv + BN-free head + dropout: dropout makes RNG replay matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 16)

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))
        return nn.functional.normalize(self.fc(self.drop(h)), dim=1)


@pytest.mark.parametrize("micro", [1, 3, 5, 12])
def test_gradient_caching_equals_full_batch(micro):
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(12, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 0])
    loss_fn = SupConLoss(temperature=0.1)

    torch.manual_seed(123)
    model.zero_grad()
    full = supcon_step(model, loss_fn, x, y)
    g_full = [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(123)
    model.zero_grad()
    cached = supcon_step(model, loss_fn, x, y, micro_batch_size=micro)
    g_cached = [p.grad.clone() for p in model.parameters()]

    if micro == 12:  # one chunk: the plain path, identical RNG use
        assert torch.equal(full, cached)
    # With micro-batches the dropout masks are drawn per chunk, so compare with dropout off.
    model.drop.p = 0.0
    model.zero_grad()
    ref = supcon_step(model, loss_fn, x, y)
    g_ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = supcon_step(model, loss_fn, x, y, micro_batch_size=micro)
    assert torch.allclose(ref, got, atol=1e-6)
    for a, b in zip(g_ref, [p.grad for p in model.parameters()]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert all(torch.isfinite(g).all() for g in g_full + g_cached)


def test_gradient_caching_replays_dropout():
    """With dropout on, the replayed micro-batches must reuse the cached pass's masks: the
    gradient equals plain autograd through the same chunked forward (same RNG order)."""
    torch.manual_seed(0)
    model = _Tiny()
    model.drop.p = 0.5
    x = torch.randn(8, 3, 8, 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss_fn = SupConLoss()
    torch.manual_seed(7)
    model.zero_grad()
    ref_loss = loss_fn(torch.cat([model(x[i : i + 3]) for i in range(0, 8, 3)]), y)
    ref_loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(7)
    model.zero_grad()
    loss = supcon_step(model, loss_fn, x, y, micro_batch_size=3)
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-6)
    for a, p in zip(ref, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5, rtol=1e-4)


def test_mismatched_batch_is_an_error():
    with pytest.raises(ValueError):
        supcon_step(_Tiny(), SupConLoss(), torch.randn(4, 3, 8, 8), torch.tensor([0, 1]))


def test_lr_schedule_warmup_then_cosine():
    vals = [lr_factor(s, warmup_steps=10, total_steps=110, min_ratio=0.01) for s in range(111)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert vals[10] == pytest.approx(1.0) and vals[110] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(vals[10:], vals[11:]))


CLASSES = ["real", "ADM", "BigGAN", "GLIDE", "SD1.4"]


def test_experiment_settings_select_classes():
    assert select_classes(CLASSES, ExperimentConfig("ES1"))[0] == ["ADM", "BigGAN", "GLIDE", "SD1.4"]
    assert select_classes(CLASSES, ExperimentConfig("ES2"))[0] == ["real", "ADM", "BigGAN", "GLIDE", "SD1.4"]
    train, held = select_classes(CLASSES, ExperimentConfig("ES3", generator="SD1.4"))
    assert train == ["real", "SD1.4"] and held == ["ADM", "BigGAN", "GLIDE"]
    train, held = select_classes(CLASSES, ExperimentConfig("ES4.2", held_out=("GLIDE", "ADM")))
    assert train == ["real", "BigGAN", "SD1.4"] and held == ["ADM", "GLIDE"]
    train, held = select_classes(CLASSES, ExperimentConfig("custom", classes=("SD1.4", "real")))
    assert train == ["real", "SD1.4"]


@pytest.mark.parametrize(
    "exp, match",
    [
        (ExperimentConfig("ES9"), "unknown experiment"),
        (ExperimentConfig("ES3"), "needs experiment.generator"),
        (ExperimentConfig("ES3", generator="Midjourney"), "not in the data"),
        (ExperimentConfig("ES4"), "needs experiment.held_out"),
        (ExperimentConfig("ES4", held_out=("real",)), "cannot be held out"),
        (ExperimentConfig("ES4", held_out=("ADM", "BigGAN", "GLIDE", "SD1.4")), "at least two"),
        (ExperimentConfig("custom", classes=("real",)), "at least two"),
    ],
)
def test_experiment_errors(exp, match):
    with pytest.raises(ValueError, match=match):
        select_classes(CLASSES, exp)
