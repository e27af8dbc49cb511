"""SISA: sharded, isolated training; a deletion retrains the shards that held the data.

Usage::

    from recircuit.unlearn import get_method, method_config
    sisa = get_method("sisa", method_config("sisa", k=4, partition="random"))
    res = sisa.run(base, request.forget, request.retain)     # fits the K adapters first if needed
    p_yes, loss = res.model.answer_outputs(test)            # mean P(Yes) over the K adapters

Bourtoule et al.'s exact baseline (without the slicing checkpoints): random (or user-hash)
shards, one LoRA adapter per shard, prediction-level aggregation (K forward passes per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from recircuit.data.prompts import Sample
from recircuit.unlearn.ensemble import sisa_outputs
from recircuit.unlearn.methods._exact import ExactConfig, ExactMethod
from recircuit.unlearn.registry import register


@dataclass
class SISAConfig(ExactConfig):
    """SISA's knobs: those of :class:`~recircuit.unlearn.methods._exact.ExactConfig` (random shards by default)."""


@register("sisa", SISAConfig)
class SISA(ExactMethod):
    """Exact unlearning with K shard adapters and the mean of their predictions."""

    def outputs(self, base, samples: Sequence[Sample], batch_size: int = 8,
                progress: bool = False) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
        """Mean P(Yes) over the live adapters and the mixture's answer loss (:func:`sisa_outputs`)."""
        return sisa_outputs(base, self.ensemble, samples, batch_size, progress)
