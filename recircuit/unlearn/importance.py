"""Module importance for a sample set: the EAP engine, aggregated per head and MLP (CURE step 1-2).

Usage::

    from recircuit.unlearn.importance import module_importance, per_sample_module_importance
    I_f = module_importance(model, forget[:16])                    # {"a3.h5": ..., "m7": ...}
    I_f = module_importance(model, forget[:16], metric="logprob")  # what the model memorized
    names, rows = per_sample_module_importance(model, forget[:16])  # rows: [16, n_modules]

**Metric.** ``logit_diff`` (default) scores what carries the label-signed Yes-No logit gap, the
task's decision; ``logprob`` scores what carries the log-probability of the true answer token
(`` Yes``/`` No`` at the last prompt position, full vocabulary), i.e. minus that token's
cross-entropy, the quantity fine-tuning drove up (what the model memorized). Both are in :data:`recircuit.circuits.metrics.METRICS`.

**Per-sample importance** is the same aggregation (:meth:`Circuit.module_importance`: the sum of
absolute edge scores into and out of each module) applied to each sample's own edge scores
(``AttributionConfig(per_sample=True)``: the engine keeps the batch axis, same passes). CURE's
contrast grouping (:func:`recircuit.unlearn.grouping.contrast_grouping`) bootstraps over these rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from jaxtyping import Float

from recircuit.circuits import (
    AttributionConfig,
    AttributionResult,
    Circuit,
    attribute,
    get_corruption,
)
from recircuit.data.prompts import Sample

CorruptionArg = str | Callable[[list[Sample]], list[Sample]]


def _attribute(model, samples: Sequence[Sample], method: str, steps: int, corruption: CorruptionArg,
               metric: str, batch_size: int, progress: bool, corruption_kwargs: dict | None,
               per_sample: bool) -> AttributionResult:
    if not samples:
        raise ValueError("No samples to score module importance on.")
    corrupt = corruption if callable(corruption) else get_corruption(corruption, **(corruption_kwargs or {}))
    corrupted = corrupt(list(samples))
    cfg = AttributionConfig(method=method, steps=steps, metric=metric, batch_size=batch_size, align="left",
                            progress=progress, per_sample=per_sample)
    return attribute(model, list(samples), corrupted, cfg)


def module_importance(model, samples: Sequence[Sample], method: str = "eap-ig-inputs", steps: int = 3,
                      corruption: CorruptionArg = "label_flip", batch_size: int = 8, progress: bool = True,
                      corruption_kwargs: dict | None = None, metric: str = "logit_diff") -> dict[str, float]:
    """Sum of |edge scores| into and out of each module (see :meth:`Circuit.module_importance`).

    ``corruption`` is a registered strategy's name (built with ``corruption_kwargs``) or a ready
    corruption function, e.g. from :func:`recircuit.circuits.corruptions.corruption_for`.
    ``metric`` is the differentiated metric (``logit_diff``, ``logprob``; see the module docstring).
    """
    res = _attribute(model, samples, method, steps, corruption, metric, batch_size, progress,
                     corruption_kwargs, per_sample=False)
    return Circuit(res.graph, res.scores, res.graph.edge_mask.clone(), {}).module_importance()


def per_sample_module_importance(model, samples: Sequence[Sample], method: str = "eap-ig-inputs", steps: int = 3,
                                 corruption: CorruptionArg = "label_flip", metric: str = "logit_diff",
                                 batch_size: int = 8, progress: bool = False,
                                 corruption_kwargs: dict | None = None,
                                 ) -> tuple[list[str], Float[np.ndarray, "n modules"]]:
    """:func:`module_importance` of each sample on its own: one row per sample, one column per module.

    The same aggregation as :meth:`Circuit.module_importance` (sum of absolute edge scores into and
    out of each module), applied to each sample's own edge scores from one attribution run with
    ``AttributionConfig(per_sample=True)``. Because of the absolute values, the mean of the rows
    is not :func:`module_importance` of the set (which takes |mean score|); it is at least as large.

    Returns:
        ``(names, rows)``: module names (``a{L}.h{H}``, ``m{L}``, in graph order) and a float64
        array ``[len(samples), len(names)]``.
    """
    res = _attribute(model, samples, method, steps, corruption, metric, batch_size, progress,
                     corruption_kwargs, per_sample=True)
    mask = res.graph.edge_mask.clone()
    per = [Circuit(res.graph, row, mask, {}).module_importance() for row in res.per_sample_scores]
    names = list(per[0])
    return names, np.array([[p[m] for m in names] for p in per], dtype=np.float64)
