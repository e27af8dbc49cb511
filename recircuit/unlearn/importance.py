"""Module importance for a sample set: the EAP engine, aggregated per head and MLP (CURE step 1-2).

Usage::

    from recircuit.unlearn.importance import module_importance
    I_f = module_importance(model, forget[:16])      # {"a3.h5": ..., "m7": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

from recircuit.circuits import AttributionConfig, Circuit, attribute, get_corruption
from recircuit.data.prompts import Sample


def module_importance(model, samples: Sequence[Sample], method: str = "eap-ig-inputs", steps: int = 3,
                      corruption: str = "label_flip", batch_size: int = 8, progress: bool = True,
                      corruption_kwargs: dict | None = None) -> dict[str, float]:
    """Sum of |edge scores| into and out of each module (see :meth:`Circuit.module_importance`)."""
    if not samples:
        raise ValueError("No samples to score module importance on.")
    corrupted = get_corruption(corruption, **(corruption_kwargs or {}))(list(samples))
    cfg = AttributionConfig(method=method, steps=steps, batch_size=batch_size, align="left", progress=progress)
    res = attribute(model, list(samples), corrupted, cfg)
    return Circuit(res.graph, res.scores, res.graph.edge_mask.clone(), {}).module_importance()
