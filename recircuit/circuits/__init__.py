"""Recommendation circuits: edge attribution patching (EAP, EAP-IG), exact patching, faithfulness.

Usage::

    from recircuit.circuits import attribute, AttributionConfig, Circuit, faithfulness_curve
    from recircuit.circuits.corruptions import get_corruption

    corrupted = get_corruption("label_flip")(samples)
    res = attribute(model, samples, corrupted, AttributionConfig(method="eap-ig-inputs", steps=5))
    circuit = Circuit.from_attribution(res, top_n=300)
    circuit.module_importance()          # per head / MLP, used by CURE's grouping

Layout (along hannamw/EAP-IG's lines):

- :mod:`~recircuit.nodes`: node names (``a{L}.h{H}``, ``m{L}``, ``input``, ``logits``,
  reader suffixes ``<q>``/``<k>``/``<v>``), built and parsed in one place (:func:`parse_node`).
- :mod:`~recircuit.circuits.graph`: the head/MLP graph of a model and its hooks.
- :mod:`~recircuit.circuits.engine`: the hook machinery (writer buffers, score hooks, patched
  forward, memory budget).
- :mod:`~recircuit.circuits.attribute`: :func:`attribute` and one function per method
  (``METHOD_FUNCTIONS``: eap, eap-ig-inputs, eap-ig-activations, exact).
- :mod:`~recircuit.circuits.metrics`: the differentiated metrics; :mod:`~recircuit.circuits.faithfulness`:
  MIB faithfulness (f, CPR, CMD) and :func:`circuit_metric`.
- :mod:`~recircuit.circuits.circuit`: edge selection, pruning, module importance, files.
- :mod:`~recircuit.circuits.corruptions`: the corruption registry.

**Adding a corruption** is one function in :mod:`recircuit.circuits.corruptions` (or in your own
module, imported before use), decorated with :func:`register_corruption`::

    @register_corruption("shuffle_history")
    def shuffle_history(seed: int = 0):            # parameters from CONTEXT: titles, tokenizer,
        def corrupt(samples):                      # interactions, seed; plus your own knobs
            rng = np.random.default_rng(seed)
            return [s.with_history(list(rng.permutation(s.liked)), list(s.disliked)) for s in samples]
        return corrupt

It edits the samples' structured fields (:meth:`Sample.with_history`, :meth:`Sample.with_target`),
never the prompt text. ``get_corruption``, ``corruption_for`` and ``recircuit circuit --corruption``
pick it up from the registry. A function that is itself ``samples -> samples`` registers with
``factory=False``.

**Adding an attribution method** is one function with the :data:`~recircuit.circuits.attribute.BatchMethod`
signature, added to ``METHOD_FUNCTIONS`` and ``METHOD_BUFFERS`` in :mod:`~recircuit.circuits.attribute`.
"""

from recircuit.circuits.attribute import (
    METHODS,
    AttributionConfig,
    AttributionMemoryError,
    AttributionResult,
    CorruptionLengthError,
    attribute,
    exact_patch_scores,
    patched_metric,
)
from recircuit.circuits.circuit import (
    Circuit,
    prune,
    select_edges,
)
from recircuit.circuits.corruptions import (
    CORRUPTIONS,
    corruption_names,
    get_corruption,
    register_corruption,
)
from recircuit.circuits.engine import WriterSumError, check_writer_sum
from recircuit.circuits.faithfulness import (
    MIB_SIZES,
    MIN_METRIC_GAP,
    CorruptionCheck,
    FaithfulnessCurve,
    UnreliableFaithfulness,
    check_corruption,
    circuit_metric,
    corruption_effect,
    faithfulness_curve,
)
from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import METRICS, get_metric
from recircuit.nodes import Node, head_name, mlp_name, parse_node

__all__ = [
    "CORRUPTIONS",
    "METHODS",
    "METRICS",
    "MIB_SIZES",
    "MIN_METRIC_GAP",
    "AttributionConfig",
    "AttributionMemoryError",
    "AttributionResult",
    "Circuit",
    "CorruptionCheck",
    "CorruptionLengthError",
    "FaithfulnessCurve",
    "Graph",
    "Node",
    "UnreliableFaithfulness",
    "WriterSumError",
    "attribute",
    "check_corruption",
    "check_writer_sum",
    "circuit_metric",
    "corruption_effect",
    "corruption_names",
    "exact_patch_scores",
    "faithfulness_curve",
    "get_corruption",
    "get_metric",
    "head_name",
    "mlp_name",
    "parse_node",
    "patched_metric",
    "prune",
    "register_corruption",
    "select_edges",
]
