"""The registered generator families; importing this package registers all of them."""

from synthray.data.synthbench.families import (  # noqa: F401  (imported to register)
    implicit,
    latent,
    modulated,
    sdedit,
    transformer,
    upsampling,
)
