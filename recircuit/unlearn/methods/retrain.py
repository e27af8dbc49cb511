"""Retrain: the gold standard, behind the same interface (exact unlearning by training from scratch on retain).

Usage::

    from recircuit.train import TrainConfig
    from recircuit.unlearn import get_method
    res = get_method("retrain", model_spec="smollm2-135m-instruct",
                     train_config=TrainConfig(mode="full", lr=5e-5)).run(model, forget, retain)
    # model's weights are replaced by the retrained ones

It calls :func:`recircuit.train.retrain` (same config and seed handling as the original
fine-tuning) and copies the retrained weights into ``model``, so the caller holds the unlearned
model in the same object as with every approximate method. The loop's ``steps`` and ``lr`` do
not apply: the budget is the original training run's. ``get_method("retrain")`` with no
arguments retrains from the name the model was loaded under, with ``TrainConfig(mode="full",
seed=loop.seed)``; pass the original's config to make the comparison exact. Its
:class:`RetrainConfig` has no knobs: the training config is a constructor argument.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from recircuit.data.requests import check_request
from recircuit.unlearn.base import UnlearnMethod, UnlearnResult
from recircuit.unlearn.config import LoopConfig, MethodConfig
from recircuit.unlearn.registry import register


@dataclass
class RetrainConfig(MethodConfig):
    """Retrain has no knobs of its own (pass ``train_config=`` to the constructor)."""


@register("retrain", RetrainConfig)
class Retrain(UnlearnMethod):
    """Train a fresh base model on the retain set only and load its weights into ``model``."""

    def __init__(self, config: RetrainConfig | None = None, model_spec: str | Callable[[], torch.nn.Module] | None = None,
                 train_config=None, valid=None) -> None:
        super().__init__(config)
        self.model_spec = model_spec
        self.train_config = train_config
        self.valid = valid

    def run(self, model, forget, retain, loop: LoopConfig | None = None, reference=None, heldout=None,
            original=None, progress: bool = True) -> UnlearnResult:
        """Retrain on ``retain`` and copy the weights into ``model`` (see the module docstring)."""
        from recircuit.models.loading import model_name, tiny_family, tiny_model
        from recircuit.train import TrainConfig, retrain

        loop = loop if loop is not None else LoopConfig()
        self.loop = loop
        check_request(forget, retain)
        spec = self.model_spec
        if spec is None:
            name, seed = model_name(model), getattr(model, "recircuit_seed", None)
            family = tiny_family(name) or "llama"
            spec = (lambda: tiny_model(seed, family=family)) if seed is not None else name
        tcfg = self.train_config or TrainConfig(mode="full", seed=loop.seed)
        t0 = time.perf_counter()
        fresh, res = retrain(spec, list(retain), tcfg, self.valid)
        from recircuit.train.lora import merge_lora

        merge_lora(fresh)  # LoRA runs: fold the adapters in, so the weights are plain bridge weights
        missing = model.load_state_dict(fresh.state_dict(), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise ValueError(f"The retrained model does not match the model being unlearned "
                             f"(missing {missing.missing_keys[:3]}, unexpected {missing.unexpected_keys[:3]}); "
                             "pass the base model it was fine-tuned from as model_spec.")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return UnlearnResult(self.name, int(res.metrics.get("steps", len(res.history))), time.perf_counter() - t0,
                             res.history, "retrained on retain",
                             {"train_metrics": res.metrics, "train_config": tcfg.to_dict()}, model, "ok")
