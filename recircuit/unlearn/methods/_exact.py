"""What SISA and APA share: shard-training knobs, the fit-then-delete run, and the predictor they return.

Usage::

    from recircuit.unlearn import get_method, method_config
    apa = get_method("apa", method_config("apa", k=4, tau=1000), valid=split.valid[:100])
    apa.fit(base, pool)                      # the K shard adapters (APA's "original"), timed apart
    res = apa.run(base, request.forget, request.retain)   # retrains only the shards that held them
    p_yes, loss = res.model.answer_outputs(split.test)   # the unlearned predictor
    res.extra["audit"]                       # the deletion's record, chained to the previous one
    apa.run(base, request2.forget, request2.retain)       # a stream: the next request on the last state

``model`` is the **base** the adapters sit on (in the two-stage protocol, the base recommender),
not a fine-tuned Original: an exact method's "original" is its ensemble. ``run`` fits the
ensemble on ``forget + retain`` first if :meth:`ExactMethod.fit` was not called (that time is
``extra["fit_seconds"]``, not ``seconds``, which is the deletion's retraining plus refreshing
what serving needs for the retrained shards: APA's validation errors). The ensemble is exact
given its partition (see :mod:`recircuit.unlearn.ensemble`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from recircuit.data.prompts import Sample
from recircuit.data.requests import check_request, sample_key
from recircuit.errors import InputError
from recircuit.train import TrainConfig
from recircuit.train.lora import LoraConfig
from recircuit.unlearn.base import UnlearnMethod, UnlearnResult
from recircuit.unlearn.config import LoopConfig, MethodConfig
from recircuit.unlearn.ensemble import ShardEnsemble
from recircuit.unlearn.shards import (
    PARTITIONS,
    prompt_embeddings,
    random_partition,
    semantic_partition,
    user_partition,
)

logger = logging.getLogger(__name__)

@dataclass
class ExactConfig(MethodConfig):
    """Shard-training knobs of an exact method.

    Attributes:
        k: number of shards (one LoRA adapter each).
        partition: ``semantic`` (APA's balanced K-means on prompt embeddings), ``random`` or ``user`` (by user id hash).
        max_size: the most samples a shard may hold (APA's t; None: ceil(n / k)).
        shard_lr: the shard adapters' learning rate.
        shard_epochs: passes over each shard.
        shard_batch_size: samples per optimizer step of a shard.
        lora_rank: adapter rank.
        lora_alpha: adapter alpha (the delta is scaled by alpha / rank).
        shard_seed: the ensemble's seed (partition and every shard's training seed).
        workers: shards trained in parallel as Ray tasks of one core each (1: one after another, in this process).
    """

    k: int = 4
    partition: str = "random"
    max_size: int | None = None
    shard_lr: float = 1e-3
    shard_epochs: int = 1
    shard_batch_size: int = 8
    lora_rank: int = 8
    lora_alpha: float = 16.0
    shard_seed: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise InputError(f"unknown partition {self.partition!r}", field="partition", fix=f"choose from {list(PARTITIONS)}")
        if self.k < 1:
            raise InputError(f"k={self.k}", field="k", fix="use at least 1 shard")
        if self.max_size is not None and self.max_size < 1:
            raise InputError(f"max_size={self.max_size}", field="max_size", fix="use at least 1, or None")

    def fit_settings(self) -> dict:
        """The settings the shard adapters depend on (ExactConfig's own fields): two configs with
        the same ones (APA's level, weight and tau variants; SISA and APA on one partition) share a fit."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ExactConfig)}

    def train_config(self) -> TrainConfig:
        """The shard adapters' :class:`TrainConfig` (LoRA on q and v, cosine schedule, as TALLRec)."""
        return TrainConfig(mode="lora", lr=self.shard_lr, epochs=self.shard_epochs, batch_size=self.shard_batch_size,
                           seed=self.shard_seed, lora=LoraConfig(rank=self.lora_rank, alpha=self.lora_alpha))


class ExactPredictor:
    """An unlearned exact model: the base with its ensemble, scored by the method's aggregation."""

    def __init__(self, method: ExactMethod, base) -> None:
        self.method, self.base = method, base

    def answer_outputs(self, samples: Sequence[Sample], batch_size: int = 8,
                       progress: bool = False) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
        """P(Yes) and the answer loss of each sample under the aggregation."""
        return self.method.outputs(self.base, list(samples), batch_size, progress)


class ExactMethod(UnlearnMethod):
    """Base of SISA and APA: a shard ensemble, fitted once, then deletions that retrain shards."""

    config: ExactConfig
    #: Marks an exact method (the unlearned model is a predictor over the base, not changed weights).
    exact = True

    def __init__(self, config: ExactConfig | None = None, valid: Sequence[Sample] | None = None) -> None:
        super().__init__(config)
        self.valid = list(valid) if valid else None
        self.ensemble: ShardEnsemble | None = None
        self.fit_seconds = 0.0

    def partition(self, base, samples: Sequence[Sample]) -> list[list[int]]:
        """The shards of ``samples`` by ``config.partition``."""
        c = self.config
        if c.partition == "random":
            return random_partition(len(samples), c.k, c.shard_seed)
        if c.partition == "user":
            return user_partition([s.user_id for s in samples], c.k)
        return semantic_partition(prompt_embeddings(base, samples, progress=False), c.k, c.max_size, c.shard_seed)

    def fit(self, base, samples: Sequence[Sample], progress: bool = True) -> ShardEnsemble:
        """Partition ``samples`` and train one adapter per shard over ``base``."""
        t0 = time.perf_counter()
        samples = list(samples)
        self.ensemble = ShardEnsemble.fit(base, samples, self.partition(base, samples), self.config.train_config(),
                                          seed=self.config.shard_seed, max_size=self.config.max_size,
                                          workers=self.config.workers, progress=progress)
        self.samples = {sample_key(s): s for s in samples}
        self.after_fit(base)
        self.fit_seconds = time.perf_counter() - t0
        return self.ensemble

    def after_fit(self, base, shards: Sequence[int] | None = None) -> None:
        """Precompute what serving needs (APA: validation errors) for ``shards`` (None: all)."""

    def outputs(self, base, samples: Sequence[Sample], batch_size: int = 8,
                progress: bool = False) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
        """P(Yes) and answer loss of ``samples`` under this method's aggregation."""
        raise NotImplementedError

    def run(self, model, forget: Sequence[Sample], retain: Sequence[Sample], loop: LoopConfig | None = None,
            reference=None, heldout: Sequence[Sample] | None = None, original=None,
            progress: bool = True) -> UnlearnResult:
        """Delete ``forget`` from the ensemble by retraining the shards that held it (see the module docstring).

        ``model`` is the base the adapters sit on; it is left bit-identical. The loop's budget
        does not apply (an exact method's cost is its retraining).
        """
        check_request(forget, retain)
        self.loop = loop if loop is not None else LoopConfig()
        if self.ensemble is None:
            self.fit(model, list(forget) + list(retain), progress)
        gone = {sample_key(s) for s in forget}
        held = {u for shard in self.ensemble.shards for u in shard}
        if not gone & held:
            raise InputError(f"none of the {len(gone)} forget samples is in the ensemble's shards, so there is "
                             "nothing to delete", field="forget",
                             fix="pass samples the ensemble was fitted on (same uid, or same prompt when uid is empty)")
        record = dict(self.ensemble.delete(model, gone, self.samples, progress=progress))   # the chained one stays
        t0 = time.perf_counter()
        self.after_fit(model, record["affected"])
        record["serving_prep_seconds"] = time.perf_counter() - t0
        steps = len(record["affected"])
        stopped = f"retrained {steps} of {self.ensemble.k} shards"
        if record["deleted"] < record["requested"]:
            stopped += (f"; {record['requested'] - record['deleted']} of {record['requested']} forget samples "
                        "were in no shard (never trained on, or deleted by an earlier request; nothing to remove)")
            logger.warning("%s: %s", self.name, stopped)
        return UnlearnResult(self.name, steps, record["seconds"] + record["serving_prep_seconds"], [],
                             stopped,
                             {"audit": record, "fit_seconds": self.fit_seconds, "shard_sizes":
                              [len(s) for s in self.ensemble.shards], "affected": record["affected"]},
                             ExactPredictor(self, model), "ok")
