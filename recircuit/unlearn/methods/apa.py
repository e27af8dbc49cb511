"""APA: exact unlearning with shard adapters merged per sample at the parameter level (Hu et al.).

Usage::

    from recircuit.unlearn import get_method, method_config
    apa = get_method("apa", method_config("apa", k=4, tau=1000, n_neighbors=20, level="ab"),
                     valid=split.valid[:100])
    res = apa.run(base, request.forget, request.retain)   # fits the K adapters first if needed
    p_yes, loss = res.model.answer_outputs(test)          # one pass per sample, merged adapter

Balanced semantic partition (:func:`recircuit.unlearn.shards.semantic_partition`), one LoRA
adapter per shard, and per test sample a merge of the adapters weighted by their error on the
sample's most similar validation samples (:func:`recircuit.unlearn.ensemble.apa_weights`), at the
decomposition (``level="ab"``, APA(D)) or non-decomposition level (``"ba"``, APA(ND)). The
validation samples' embeddings and every adapter's errors on them are computed after fitting
and, after a deletion, for the retrained adapters only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.unlearn.ensemble import (
    LEVELS,
    WEIGHT_SCHEMES,
    adapter_outputs,
    apa_outputs,
    apa_weights,
)
from recircuit.unlearn.methods._exact import ExactConfig, ExactMethod
from recircuit.unlearn.registry import register
from recircuit.unlearn.shards import prompt_embeddings


@dataclass
class APAConfig(ExactConfig):
    """APA's knobs, over those of :class:`~recircuit.unlearn.methods._exact.ExactConfig`.

    Attributes:
        partition: ``semantic`` (APA's balanced K-means), ``random`` or ``user`` (the ablations).
        level: ``ab`` (decomposition level, APA(D)) or ``ba`` (non-decomposition level, APA(ND)).
        weights: ``adaptive`` (APA), ``average`` or ``major`` (the paper's ablations).
        tau: the softmax temperature of the adaptive weights (0: uniform).
        n_neighbors: validation samples whose errors weight each test sample's adapters.
    """

    partition: str = "semantic"
    level: str = "ab"
    weights: str = "adaptive"
    tau: float = 1000.0
    n_neighbors: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.level not in LEVELS:
            raise InputError(f"unknown level {self.level!r}", field="level",
                             fix="use 'ab' (decomposition, APA(D)) or 'ba' (non-decomposition, APA(ND))")
        if self.weights not in WEIGHT_SCHEMES:
            raise InputError(f"unknown weights {self.weights!r}", field="weights", fix=f"choose from {list(WEIGHT_SCHEMES)}")
        if self.tau < 0:
            raise InputError(f"tau={self.tau}", field="tau", fix="use tau >= 0 (0 gives uniform weights)")
        if self.n_neighbors < 1:
            raise InputError(f"n_neighbors={self.n_neighbors}", field="n_neighbors", fix="use at least 1")


@register("apa", APAConfig)
class APA(ExactMethod):
    """Exact unlearning with sample-adaptive, parameter-level aggregation of shard adapters."""

    config: APAConfig

    def after_fit(self, base, shards: Sequence[int] | None = None) -> None:
        """Embed the validation samples (once) and compute the adapters' errors on them (``shards`` only)."""
        if self.config.weights == "average":
            return
        if not self.valid:
            raise InputError("APA's sample-adaptive weights need validation samples", field="valid",
                             fix="pass valid=... to get_method('apa', ...), or use weights='average'")
        if getattr(self, "valid_embeddings", None) is None:
            self.valid_embeddings = prompt_embeddings(base, self.valid, progress=False)
        ens = self.ensemble
        if shards is None or getattr(self, "valid_errors", None) is None:
            shards = range(ens.k)
            self.valid_errors = np.full((len(self.valid), ens.k), np.nan)
        y = np.array([s.label for s in self.valid], dtype=np.float64)
        sub = ens.copy()
        for k in range(ens.k):                       # score only the asked shards' adapters
            if k not in shards:
                sub.adapters[k] = None
        p, _ = adapter_outputs(base, sub, self.valid, progress=False)
        for k in shards:
            self.valid_errors[:, k] = np.abs(y - p[:, k]) if ens.adapters[k] is not None else np.nan

    def weights_for(self, base, samples: Sequence[Sample], batch_size: int = 8) -> Float[np.ndarray, "n k"]:
        """Each sample's aggregation weights over the K adapters."""
        c = self.config
        if c.weights == "average":
            live = np.array([a is not None for a in self.ensemble.adapters], dtype=np.float64)
            return np.tile(live / live.sum(), (len(samples), 1))
        return apa_weights(prompt_embeddings(base, samples, batch_size=batch_size, progress=False),
                           self.valid_embeddings, self.valid_errors, c.n_neighbors, c.tau, c.weights)

    def outputs(self, base, samples: Sequence[Sample], batch_size: int = 8,
                progress: bool = False) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
        """P(Yes) and answer loss of each sample under its merged adapter (:func:`apa_outputs`)."""
        return apa_outputs(base, self.ensemble, samples, self.weights_for(base, samples, batch_size), self.config.level,
                           batch_size, progress)
