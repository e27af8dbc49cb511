"""Recommendation circuits: edge attribution patching (EAP, EAP-IG), exact patching, faithfulness.

Usage::

    from recircuit.circuits import attribute, AttributionConfig, Circuit, faithfulness_curve
    from recircuit.circuits.corruptions import get_corruption

    corrupted = get_corruption("label_flip")(samples)
    res = attribute(model, samples, corrupted, AttributionConfig(method="eap-ig-inputs", steps=5))
    circuit = Circuit.from_attribution(res, top_n=300)
    circuit.module_importance()          # per head / MLP, used by CURE's grouping
"""

from recircuit.circuits.attribute import (
    METHODS,
    AttributionConfig,
    AttributionMemoryError,
    AttributionResult,
    CorruptionLengthError,
    attribute,
    circuit_metric,
    exact_patch_scores,
    patched_metric,
)
from recircuit.circuits.circuit import (
    MIB_SIZES,
    Circuit,
    FaithfulnessCurve,
    faithfulness_curve,
    prune,
    select_edges,
)
from recircuit.circuits.corruptions import CORRUPTIONS, get_corruption
from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import METRICS, get_metric

__all__ = [
    "CORRUPTIONS",
    "METHODS",
    "METRICS",
    "MIB_SIZES",
    "AttributionConfig",
    "AttributionMemoryError",
    "AttributionResult",
    "Circuit",
    "CorruptionLengthError",
    "FaithfulnessCurve",
    "Graph",
    "attribute",
    "circuit_metric",
    "exact_patch_scores",
    "faithfulness_curve",
    "get_corruption",
    "get_metric",
    "patched_metric",
    "prune",
    "select_edges",
]
