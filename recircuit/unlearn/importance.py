"""Module importance for a sample set: the EAP engine, aggregated per head and MLP (CURE step 1-2).

Usage::

    from recircuit.unlearn.importance import module_importance
    I_f = module_importance(model, forget[:16])      # {"a3.h5": ..., "m7": ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from recircuit.circuits import AttributionConfig, Circuit, attribute, get_corruption
from recircuit.data.prompts import Sample


def module_importance(model, samples: Sequence[Sample], method: str = "eap-ig-inputs", steps: int = 3,
                      corruption: str | Callable[[list[Sample]], list[Sample]] = "label_flip", batch_size: int = 8, progress: bool = True,
                      corruption_kwargs: dict | None = None) -> dict[str, float]:
    """Sum of |edge scores| into and out of each module (see :meth:`Circuit.module_importance`).

    ``corruption`` is a registered strategy's name (built with ``corruption_kwargs``) or a ready
    corruption function, e.g. from :func:`recircuit.circuits.corruptions.corruption_for`.
    """
    if not samples:
        raise ValueError("No samples to score module importance on.")
    corrupt = corruption if callable(corruption) else get_corruption(corruption, **(corruption_kwargs or {}))
    corrupted = corrupt(list(samples))
    cfg = AttributionConfig(method=method, steps=steps, batch_size=batch_size, align="left", progress=progress)
    res = attribute(model, list(samples), corrupted, cfg)
    return Circuit(res.graph, res.scores, res.graph.edge_mask.clone(), {}).module_importance()
