"""Every registered method trains a few steps and evaluates (the registry drives the list)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthray.data.schema import REAL
from synthray.methods import build_method, list_methods, method_config, register_method
from synthray.methods.base import AI, count_parameters
from synthray.methods.compare import load_test_set
from synthray.methods.explain import saliency_map
from synthray.methods.scoring import score_predictions
from tests.methods.conftest import HELD_OUT, SEEN, TINY


@pytest.fixture(scope="module")
def test_set(fit_context):
    test = load_test_set(
        fit_context.shards,
        fit_context.reference_classes,
        fit_context.preprocess,
        fit_context.pipeline,
        per_class=4,
        seed=0,
    )
    return test, torch.as_tensor(test.pixels).float() / 255.0


def test_registry_lists_every_paper_method():
    expected = {
        "small_cnn",
        "cnn_003",
        "cnn_perturb",
        "cnn_autoencoder",
        "cnn_perturb_autoencoder",
        "resnet50_sigmoid",
        "resnet50_transfer",
        "resnet50_fractal",
        "resnet50_fractal_combined",
        "resnet50_rotation",
        "supcon_knn",
        "supcon_centroid",
        "supcon_comparator",
        "supcon_mlp",
        "supcon_mlp_nohead",
        "euclidean_knn",
    }
    assert expected <= set(list_methods())


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_and_evaluates(name, fit_context, test_set):
    test, x = test_set
    method = build_method(name, overrides=TINY)
    info = method.fit(fit_context)
    assert isinstance(info, dict)
    pred = method.predict(x)
    assert pred.is_ai.shape == pred.labels.shape == (len(x),)
    assert np.isfinite(pred.is_ai).all()
    allowed = set(fit_context.reference_classes) if method.attributes else {REAL, AI}
    assert set(pred.labels) <= allowed, set(pred.labels) - allowed
    row = score_predictions(test.labels, pred, SEEN, HELD_OUT, method.attributes)
    assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["auc"] <= 1.0
    assert (row["f1_zero_shot"] is not None) == method.attributes
    assert count_parameters(method.modules()) > 0
    # Every method explains its prediction through a differentiable score.
    sal = saliency_map(method.score_fn(str(pred.labels[0])), x[0])
    assert sal.shape == (32, 32) and np.isfinite(sal).all() and sal.max() == pytest.approx(1.0)


def test_paper_defaults_and_shared_overrides():
    # Defaults follow the papers; shared overrides reach only methods that have the field.
    assert method_config("resnet50_sigmoid").backbone == "resnet50"
    assert method_config("supcon_knn").backbone == "efficientnet_b0"
    assert method_config("supcon_mlp").temperature == 0.05 and method_config("supcon_mlp_nohead").head_layers == 0
    assert method_config("cnn_003").pool_stride == 1 and method_config("small_cnn").pool_stride == 2
    cfg = method_config("small_cnn", params={"head": "multiclass"}, overrides={"backbone": "resnet10t", "steps": 7})
    assert cfg.steps == 7 and cfg.head == "multiclass" and not hasattr(cfg, "backbone")
    with pytest.raises(TypeError, match="unknown config keys"):
        method_config("small_cnn", params={"no_such_field": 1})
    with pytest.raises(ValueError, match="unknown method"):
        method_config("no_such_method")
    with pytest.raises(ValueError, match="registered twice"):
        register_method("small_cnn")(type(build_method("small_cnn")))


def test_multiclass_classifier_cannot_name_a_held_out_class(fit_context, test_set):
    test, x = test_set
    method = build_method("small_cnn", {"head": "multiclass"}, TINY)
    method.fit(fit_context)
    pred = method.predict(x)
    assert method.attributes and set(pred.labels) <= set(SEEN)
    # A closed-set head never predicts the zero-shot class: its F1 there is 0 by construction.
    assert score_predictions(test.labels, pred, SEEN, HELD_OUT, True)["f1_zero_shot"] == 0.0


def test_binary_head_needs_real_images(fit_context):
    import dataclasses

    no_real = dataclasses.replace(fit_context, classes=["checks", "rings"], held_out=[])
    with pytest.raises(ValueError, match="binary head needs 'real'"):
        build_method("small_cnn", overrides=TINY).fit(no_real)
    with pytest.raises(ValueError, match="unknown head"):
        build_method("small_cnn", {"head": "ternary"})
