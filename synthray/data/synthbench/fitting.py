"""Brief, deterministic fitting of a family's network on real crops.

A randomly initialised decoder outputs structured noise, which any colour histogram separates
from photographs. A few hundred Adam steps of reconstruction (seconds on a CPU) are enough for
outputs that look like blurred-to-fair copies of their input crops while the architecture's
fingerprint stays; the fit is not meant to converge.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from synthray.data.synthbench.base import GeneratorFamily

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a fit did, for the summary."""

    steps: int
    batch_size: int
    loss_first: float | None  # mean loss over the first 10 steps (None without steps)
    loss_last: float | None  # mean loss over the last 10 steps
    seconds: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready copy, losses rounded."""
        out = dataclasses.asdict(self)
        for key in ("loss_first", "loss_last", "seconds"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        return out


def fit_family(
    model: GeneratorFamily,
    crops: np.ndarray,
    steps: int,
    rng: np.random.Generator,
    noise: torch.Generator,
    batch_size: int = 16,
    window: int | None = None,
) -> FitResult:
    """Fits ``model`` in place to its objective on real crops.

    Args:
        model: a freshly initialised family network.
        crops: ``(N, H, W, 3)`` float32 real crops in ``[0, 1]``, the training pool.
        steps: Adam steps (0 leaves the network at its initialisation).
        rng: draws the batch indices.
        noise: the family's stochastic inputs during training.
        batch_size: crops per step.
        window: side of the random square window of the crops each step trains on (the
            networks are fully convolutional, so fitting on half-side windows at the
            output's own pixel scale costs a quarter and fits the same local statistics);
            ``None`` trains on whole crops. Must be a multiple of the family's stride.
    Returns:
        a :class:`FitResult`.
    """
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be (N, H, W, 3), got {crops.shape}")
    side = crops.shape[1]
    window = side if window is None else int(window)
    if not 0 < window <= side or window % model.stride:
        raise ValueError(f"window {window} must be in (0, {side}] and a multiple of {model.stride}")
    start = time.perf_counter()
    pool = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
    model.train()
    first = pool[torch.from_numpy(rng.choice(len(pool), size=min(len(pool), 64), replace=False))]
    model.prepare(first, noise, steps)
    opt = torch.optim.Adam(model.parameters(), lr=model.learning_rate, betas=(0.9, 0.99), foreach=True)
    losses: list[float] = []
    for _ in range(steps):
        batch = pool[torch.from_numpy(rng.integers(0, len(pool), size=batch_size))]
        if window < side:
            y0, x0 = (int(v) for v in rng.integers(0, side - window + 1, size=2))
            batch = batch[:, :, y0 : y0 + window, x0 : x0 + window]
        loss = model.fit_loss(batch, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    seconds = time.perf_counter() - start
    head = float(np.mean(losses[:10])) if losses else None
    tail = float(np.mean(losses[-10:])) if losses else None
    # Debug: the build logs one line per finished class; the fit's figures are in its summary.
    logger.debug("fitted %s: %d steps, loss %s -> %s (%.1fs)", model.name, steps, head, tail, seconds)
    return FitResult(steps, batch_size, head, tail, seconds)
