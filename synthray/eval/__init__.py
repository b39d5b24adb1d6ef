"""Evaluation: protocols (ES1-ES4, sd14, custom), metrics, the reference sample-size sweep,
robustness to degradations, figures and reports.

Public names are re-exported lazily (PEP 562): ``synthray.config`` imports
``synthray.eval.config``, which must not pull in torch, sklearn or matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthray.lazy import lazy_exports

if TYPE_CHECKING:
    from synthray.eval.config import EvalConfig, ProtocolConfig
    from synthray.eval.protocols import CheckpointInfo, Protocol, ProtocolError, list_protocols, resolve_protocol
    from synthray.eval.robustness import Degradation, list_degradations, parse_degradation
    from synthray.eval.run import EvalError, evaluate
    from synthray.eval.sweep import knn_predict, sample_size_sweep

_EXPORTS = {
    "EvalConfig": "synthray.eval.config",
    "ProtocolConfig": "synthray.eval.config",
    **{
        n: "synthray.eval.protocols"
        for n in ("CheckpointInfo", "Protocol", "ProtocolError", "list_protocols", "resolve_protocol")
    },
    **{n: "synthray.eval.robustness" for n in ("Degradation", "list_degradations", "parse_degradation")},
    "EvalError": "synthray.eval.run",
    "evaluate": "synthray.eval.run",
    "knn_predict": "synthray.eval.sweep",
    "sample_size_sweep": "synthray.eval.sweep",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
