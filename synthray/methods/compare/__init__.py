"""Train and score a list of detector methods on one data set and protocol, side by side.

For a shard folder and an experiment setting (which classes train, which are held out as
zero-shot; :func:`synthray.train.experiments.select_classes`), every chosen method is built
from the registry, trained by its ``fit`` on the same :class:`FitContext` and scored on the
same test images by ``scoring.py``. Written to ``out``:

- ``compare.json``: the resolved config, the classes, one row per method (every metric,
  training facts, the method's config), and the explanation scores;
- ``compare.md``: the table (accuracy, AUC, in-sample / zero-shot detection accuracy,
  F1 seen / zero-shot, training seconds, inference images/s, parameters);
- ``compare.png``: a bar chart of the metrics; ``explanations.png``: saliency and LIME maps
  of a few test images for every method that can explain its prediction.

A method that fails (bad settings, a binary head without real images, ...) is reported
with its error and the others still run.

Modules: ``settings`` (:class:`CompareConfig`, :class:`MethodSpec`), ``testset`` (the test
images), ``predict`` (a method's predictions and explanations), ``run`` (:func:`run_compare`),
``resume`` (reusing an earlier run's rows), ``table`` (``compare.md``), ``chart`` (``compare.png``).
"""

from synthray.methods.compare.chart import bar_chart
from synthray.methods.compare.predict import explain_method, pick_explained, predict_all
from synthray.methods.compare.run import run_compare
from synthray.methods.compare.settings import (
    DEFAULT_METHODS,
    CompareConfig,
    ExplainFigureConfig,
    MethodSpec,
    load_compare_config,
)
from synthray.methods.compare.table import COLUMNS, markdown_table
from synthray.methods.compare.testset import TestSet, load_test_set

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "CompareConfig",
    "ExplainFigureConfig",
    "MethodSpec",
    "TestSet",
    "bar_chart",
    "explain_method",
    "load_compare_config",
    "load_test_set",
    "markdown_table",
    "pick_explained",
    "predict_all",
    "run_compare",
]
