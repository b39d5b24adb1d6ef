"""A fingerprint probe: the spectrum of the high-pass residual, into a logistic regression.

The counterpart of the colour baseline (:mod:`.baseline`): generator fingerprints live in the
high frequencies (periodic upsampling artefacts show up as peaks in the residual's Fourier
spectrum; Zhang et al. 2019, Durall et al. 2020), so a linear model on this spectrum should
separate the synthbench families far better than colour statistics can. It is a sanity check
that the fakes are learnable, not a detector.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from synthray.data.synthbench.baseline import COLOUR_PROBE, Probe, log_result, probe_tree


#: The spectrum is block-averaged to this many (rows, columns) bins, whatever the crop size.
SPECTRUM_BINS = (16, 8)


def residual_spectrum(img: np.ndarray, size: int = 64) -> np.ndarray | None:
    """Block-averaged log-magnitude spectrum of the Laplacian residual of a centre crop.

    Args:
        img: ``(H, W, 3)`` uint8 RGB.
        size: side of the centre crop analysed (a multiple of 16); smaller images are left out.
    Returns:
        ``(16 * 8,)`` float64: channel-averaged ``log1p |rfft2(residual)|`` averaged over
        ``size/16`` x ``size/16`` frequency blocks (the Nyquist column dropped), or ``None``
        when the image is smaller than ``size``.
    """
    if size % SPECTRUM_BINS[0]:
        raise ValueError(f"size must be a multiple of {SPECTRUM_BINS[0]}, got {size}")
    h, w = img.shape[:2]
    if min(h, w) < size:
        return None
    top, left = (h - size) // 2, (w - size) // 2
    x = img[top : top + size, left : left + size].astype(np.float64) / 255.0
    # Pixel minus the mean of its 4 neighbours: removes content, keeps the generator's
    # pixel-level correlations (circular padding so the FFT sees no artificial edge).
    neighbours = (np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1)) / 4.0
    residual = (x - neighbours).transpose(2, 0, 1)
    spectrum = np.log1p(np.abs(np.fft.rfft2(residual)).mean(axis=0))[:, : size // 2]
    # Averaging blocks keeps periodic peaks (they stay far above their block's neighbours)
    # and makes the regression 16x smaller than on the raw spectrum.
    block = size // SPECTRUM_BINS[0]
    rows, cols = SPECTRUM_BINS
    return spectrum.reshape(rows, block, cols, block).mean(axis=(1, 3)).ravel()


def spectrum_probe(size: int = 64) -> Probe:
    """The residual-spectrum probe for ``size``-pixel centre crops."""
    rows, cols = SPECTRUM_BINS
    return Probe(
        functools.partial(residual_spectrum, size=size),
        c=0.1,
        features=f"log |rfft2| of the 4-neighbour Laplacian residual of a {size}px centre crop, "
        f"channel-averaged, block-averaged to {rows}x{cols}",
    )


def fingerprint_probe(root: str | Path, seed: int = 0, size: int = 64) -> dict[str, object]:
    """Residual-spectrum features + logistic regression on a labelled tree.

    Args:
        root: ``<root>/<label>/<image>`` tree.
        seed: seed of the stratified 70/30 split (the same split as the colour baseline).
        size: centre-crop side analysed, a multiple of 16 (smaller images are left out).
    Returns:
        the same structure as :func:`~synthray.data.synthbench.baseline.trivial_baseline`.
    """
    (result,) = probe_tree(root, [spectrum_probe(size)], seed=seed)
    log_result("fingerprint probe", root, result)
    return result


def baseline_and_probe(
    root: str | Path, seed: int = 0, size: int = 64, max_per_class: int | None = None
) -> tuple[dict, dict]:
    """:func:`trivial_baseline` and :func:`fingerprint_probe` in one pass over the images
    (at most ``max_per_class`` of each label, to bound the time on benchmarks of many families).

    Returns:
        ``(colour baseline, fingerprint probe)``, each exactly what the single function gives.
    """
    colour, spectrum = probe_tree(root, [COLOUR_PROBE, spectrum_probe(size)], seed=seed, max_per_class=max_per_class)
    log_result("colour baseline", root, colour)
    log_result("fingerprint probe", root, spectrum)
    return colour, spectrum
