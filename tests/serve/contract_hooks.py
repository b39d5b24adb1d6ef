"""Schemathesis hooks for the contract test (loaded by the CLI via SCHEMATHESIS_HOOKS).

Images in generated requests are real 16x16 PNGs, so requests meant to be valid are valid:
schemathesis's own binary samples are a byte or two, and an image's decodability and the
server's 8 px minimum side are beyond what a schema can say. Requests meant to be invalid are
still generated around them.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import schemathesis
from hypothesis import strategies as st


def png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


_IMAGES = st.integers(0, 500).map(png)
schemathesis.openapi.format("binary", _IMAGES)
schemathesis.openapi.format("byte", _IMAGES.map(lambda b: base64.b64encode(b).decode()))
schemathesis.openapi.media_type("image/png", _IMAGES, aliases=("image/*", "image/jpeg", "image/webp", "image/gif"))
