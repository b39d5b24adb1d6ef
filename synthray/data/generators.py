"""One spelling per generator across data sets.

The same generator hides behind many folder names: GenImage calls Stable Diffusion 1.4
``stable_diffusion_v_1_4`` at the top level and ``imagenet_ai_0419_sdv4`` one level down,
CIFAKE just calls it ``FAKE``, and other releases write ``sd14`` or ``SD-1.4``. Attribution
compares labels across data sets, so every reader passes folder names through
:func:`normalize_generator` and the whole system sees ``"SD1.4"``.

Folder-name conventions understood:

* **GenImage** top level: ``ADM``, ``BigGAN``, ``glide``, ``Midjourney``, ``VQDM``, ``wukong``,
  ``stable_diffusion_v_1_4``, ``stable_diffusion_v_1_5``; the release's second level:
  ``imagenet_ai_<MMDD>_<name>`` or ``imagenet_<name>`` (``imagenet_ai_0419_sdv4``,
  ``imagenet_ai_0424_sdv5``, ``imagenet_ai_0508_adm``, ``imagenet_glide``,
  ``imagenet_midjourney``, ...), where ``sdv4`` / ``sdv5`` mean SD 1.4 / 1.5; ``nature`` is real.
* **ForenSynths** (CNNDetection) test folders, lower case: ``progan``, ``stylegan``,
  ``stylegan2``, ``biggan``, ``cyclegan``, ``stargan``, ``gaugan``, ``crn``, ``imle``,
  ``seeingdark`` (SITD), ``san``, ``deepfake``, ``whichfaceisreal``; the diffusion extension
  of Ojha et al. 2023: ``dalle``, ``glide_100_10`` / ``glide_100_27`` / ``glide_50_27``
  (all GLIDE), ``guided`` (ADM, i.e. guided diffusion), ``ldm_100`` / ``ldm_200`` /
  ``ldm_200_cfg`` (all LDM); ``0_real`` is real.
* **CIFAKE**: ``REAL`` is real; ``FAKE`` is SD1.4, but only the CIFAKE reader knows that, so
  ``fake`` is *not* an alias here.

Matching ignores case and every character that is not a letter or digit, so ``SD-1.4``,
``sd_1_4`` and ``sd14`` are one key. Names not in the table (a user's own generator, a
synthbench family) keep their own spelling, stripped of surrounding whitespace.
"""

from __future__ import annotations

import re

from synthray.data.schema import REAL

#: Canonical name -> folder spellings seen in the wild (matched after :func:`_key`).
#: The canonical spelling itself always matches, so it need not be repeated.
_ALIASES: dict[str, tuple[str, ...]] = {
    REAL: ("nature", "0_real", "authentic", "genuine", "natural", "pristine"),
    "SD1.4": (
        "sdv4",
        "sd14",
        "sdv14",
        "stable_diffusion_v_1_4",
        "stable_diffusion_1_4",
        "stablediffusion14",
        "stable_diffusion_v1_4",
    ),
    "SD1.5": (
        "sdv5",
        "sd15",
        "sdv15",
        "stable_diffusion_v_1_5",
        "stable_diffusion_1_5",
        "stablediffusion15",
        "stable_diffusion_v1_5",
    ),
    "SD2.1": ("sd21", "sdv21", "stable_diffusion_v_2_1", "stable_diffusion_2_1"),
    "SDXL": ("sd_xl", "stable_diffusion_xl", "sdxl_base"),
    "ADM": ("guided", "guided_diffusion", "adm_guided"),
    "BigGAN": (),
    "GLIDE": ("glide_100_10", "glide_100_27", "glide_50_27"),
    "Midjourney": ("mj", "midjourney_v5", "midjourneyv5"),
    "VQDM": ("vq_diffusion", "vqdiffusion"),
    "Wukong": (),
    "LDM": ("ldm_100", "ldm_200", "ldm_200_cfg", "latent_diffusion"),
    "DALL-E": ("dalle", "dall_e", "dalle1", "dall_e_1"),
    "DALL-E 2": ("dalle2", "dall_e_2"),
    "DALL-E 3": ("dalle3", "dall_e_3"),
    "DALL-E mini": ("dalle_mini", "dallemini", "craiyon"),
    "ProGAN": ("pggan",),
    "StyleGAN": ("stylegan1",),
    "StyleGAN2": (),
    "StyleGAN3": (),
    "CycleGAN": (),
    "StarGAN": (),
    "GauGAN": ("spade",),
    "CRN": (),
    "IMLE": (),
    "SAN": (),
    "SITD": ("seeingdark", "seeing_dark", "seeing_in_the_dark"),
    "Deepfake": ("deepfakes", "faceforensics"),
    "WhichFaceIsReal": ("whichfaceisreal", "which_face_is_real"),
}

# GenImage's second folder level prefixes the generator with "imagenet_" and, for most
# generators, "ai_<MMDD>_" (a release date); the rest of the name is the generator.
_GENIMAGE_PREFIX = re.compile(r"^imagenet_(?:ai_)?(?:\d{4}_)?", re.IGNORECASE)


def _key(name: str) -> str:
    """Lower case, letters and digits only: the form two spellings are compared in."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _build_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical, aliases in _ALIASES.items():
        for spelling in (canonical, *aliases):
            key = _key(spelling)
            if table.get(key, canonical) != canonical:
                raise ValueError(f"alias {spelling!r} maps to both {table[key]!r} and {canonical!r}")
            table[key] = canonical
    return table


_TABLE: dict[str, str] | None = None


def _table() -> dict[str, str]:
    # Built on first use rather than at import (no work at import time).
    global _TABLE
    if _TABLE is None:
        _TABLE = _build_table()
    return _TABLE


def canonical_generators() -> list[str]:
    """Every canonical name the table knows (REAL included), in table order.

    Returns:
        canonical spellings such as ``"SD1.4"``, ``"ProGAN"``, ``"real"``.
    """
    return list(_ALIASES)


def lookup_generator(name: str) -> str | None:
    """The canonical name for a known spelling, or ``None`` when the table does not know it.

    Args:
        name: a folder or label name in any spelling, GenImage's ``imagenet_ai_MMDD_`` prefix
            allowed.
    Returns:
        the canonical name, or ``None``.
    """
    table = _table()
    stripped = name.strip()
    found = table.get(_key(stripped))
    if found is None:
        bare = _GENIMAGE_PREFIX.sub("", stripped)
        if bare != stripped:
            found = table.get(_key(bare))
    return found


def normalize_generator(name: str) -> str:
    """One spelling for a generator (or ``"real"``) across data sets.

    Args:
        name: a folder or label name: ``"sdv4"``, ``"stable_diffusion_v_1_4"``,
            ``"imagenet_ai_0419_sdv4"``, ``"nature"``, ``"0_real"``, ``"my-gan"``.
    Returns:
        the canonical name (``"SD1.4"``, ``"real"``) when the table knows the spelling,
        else ``name`` stripped of surrounding whitespace.
    Raises:
        ValueError: on an empty or whitespace-only name (a label must say something).
    """
    stripped = name.strip()
    if not stripped:
        raise ValueError("generator name is empty")
    return lookup_generator(stripped) or stripped


def is_real_name(name: str) -> bool:
    """Whether a folder or label name means real (camera) images.

    Args:
        name: any spelling (``"nature"``, ``"0_real"``, ``"REAL"``, ``"authentic"``).
    Returns:
        True when it normalises to :data:`~synthray.data.schema.REAL`.
    """
    return bool(name.strip()) and normalize_generator(name) == REAL
