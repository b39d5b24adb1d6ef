"""The loss's typed config (to be re-exported by ``synthray.config``)."""

from __future__ import annotations


from synthray.typed_config import config_dataclass


@config_dataclass
class LossConfig:
    """Which contrastive loss to train with; ``name`` picks it from the loss registry."""

    name: str = "supcon"
    """registered loss (see synthray.losses.list_losses()): "supcon" | "euclidean" """
    temperature: float = 0.1
    """SupCon softmax temperature: 0.1 in the thesis (001); 000 used 0.05. Lower = sharper."""
    base_temperature: float | None = None
    """SupCon scales the loss by temperature / base_temperature (Khosla et al. 2020 keep the gradient scale comparable
    across temperatures); None = temperature, i.e. no scaling.
    """
    margin: float = 1.0
    """Euclidean contrastive loss: negatives closer than this are pushed apart. On unit vectors distances lie in [0, 2];
    the thesis saw no difference between 1 and 100 and kept 1.
    """
    normalize: bool = True
    """L2-normalise the features inside the loss. The encoder already emits unit vectors (then this is a no-op,
    gradients included); it keeps the temperature/margin meaningful for any other input.
    """
