"""Detector methods from the seed papers, side by side: one registry, one harness.

Every method (``list_methods()``) trains from a :class:`FitContext` and predicts an is-AI
score and a label, so ``compare`` (:func:`run_compare`) trains and scores them all the same way:

- image classifiers (binary or multiclass head): the small CIFAKE CNN (002/003) and 003's
  perturbation / autoencoder conditions (``cnn.py``); ResNet-50 with a sigmoid head (002),
  frozen-backbone transfer, the fractal-dimension layer, the combined loss and rotation
  pre-training (004, ``resnet.py``);
- contrastive encoders + classifiers on embeddings: SupCon + kNN (001), nearest centroid and
  the centroid comparator (001's ablations), the Euclidean-loss siamese encoder (001's
  ablation), SupCon + MLP with and without projection head (000) (``embedding.py``);
- explanations (``explain.py``): gradient saliency and LIME-style superpixel occlusion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthray.lazy import lazy_exports

if TYPE_CHECKING:
    from synthray.methods.base import AI, FitContext, Method, MethodConfig, Prediction
    from synthray.methods.compare import CompareConfig, run_compare
    from synthray.methods.explain import ExplainConfig, Explanation, explain_attribution, lime_map, saliency_map
    from synthray.methods.fractal import FractalDimension, box_counting_dimension
    from synthray.methods.registry import build_method, list_methods, method_config, register_method

_EXPORTS = {
    "AI": "synthray.methods.base",
    "CompareConfig": "synthray.methods.compare",
    "ExplainConfig": "synthray.methods.explain",
    "Explanation": "synthray.methods.explain",
    "FitContext": "synthray.methods.base",
    "FractalDimension": "synthray.methods.fractal",
    "Method": "synthray.methods.base",
    "MethodConfig": "synthray.methods.base",
    "Prediction": "synthray.methods.base",
    "box_counting_dimension": "synthray.methods.fractal",
    "build_method": "synthray.methods.registry",
    "explain_attribution": "synthray.methods.explain",
    "lime_map": "synthray.methods.explain",
    "list_methods": "synthray.methods.registry",
    "method_config": "synthray.methods.registry",
    "register_method": "synthray.methods.registry",
    "run_compare": "synthray.methods.compare",
    "saliency_map": "synthray.methods.explain",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
