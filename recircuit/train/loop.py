"""TALLRec instruction tuning on a bridge: LoRA or full fine-tuning, with early stopping.

Usage::

    from recircuit.train import TrainConfig, train
    result = train(model, split.train[:512], split.valid[:200],
                   TrainConfig(mode="full", lr=5e-5, epochs=1, batch_size=8), out_dir="runs/ft")
    result.metrics        # best validation AUC, test metrics if given, seconds
    result.history        # the learning curve: step, loss, lr, (valid auc)

Loss: cross-entropy on the answer tokens (``" Yes."``/``" No."`` after the prompt), as TALLRec.
AdamW with linear warmup then cosine decay; gradient accumulation; bf16 autocast on CUDA (and on
CPU with ``cpu_bf16=True``, for AMX); seeded and deterministic on CPU. The per-head hooks are
switched off while training (same maths, faster; see :func:`recircuit.models.plain_forward`).
A NaN or infinite loss stops training with :class:`NonFiniteLossError`, after restoring the last
good weights (and saving them, when ``out_dir`` is given).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.metrics import classification_metrics
from recircuit.models.loading import plain_forward
from recircuit.models.scoring import score
from recircuit.train.checkpoint import save_checkpoint
from recircuit.train.lora import LoraConfig, attach_lora, lora_modules
from recircuit.train.losses import answer_loss, yes_no_loss

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last good weights were restored."""


@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters.

    Attributes:
        mode: ``"lora"`` or ``"full"``.
        lr: peak learning rate.
        epochs: passes over the training samples.
        batch_size: samples per forward pass; ``grad_accum`` passes make one optimizer step.
        warmup_ratio: share of steps with linear warmup; then the ``schedule``.
        schedule: after warmup, ``"cosine"`` (decay to 0, TALLRec/APA) or ``"constant"``.
        weight_decay: AdamW weight decay.
        max_steps: stop after this many optimizer steps (None: no cap).
        eval_every: validate every this many optimizer steps (None: once per epoch).
        patience: stop after this many validations without a better AUC.
        eval_samples: cap on validation samples (None: all).
        seed: seed for data order, dropout and adapter initialisation.
        lora: adapter settings for ``mode="lora"``.
        bf16: autocast to bfloat16 on CUDA (weights and optimizer stay fp32).
        cpu_bf16: also autocast to bfloat16 on CPU (AMX); off by default because on CPU the
            default is exact fp32, and bf16 changes the numbers (it stays deterministic).
        loss: ``"answer"`` (TALLRec: cross-entropy over the answer tokens ``" Yes."``/``" No."``)
            or ``"yes_no"`` (2-way cross-entropy of the Yes/No logits at the last prompt position).
    """

    mode: str = "lora"
    lr: float = 3e-4
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    schedule: str = "cosine"
    weight_decay: float = 0.0
    max_steps: int | None = None
    eval_every: int | None = None
    patience: int = 2
    eval_samples: int | None = None
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    bf16: bool = True
    cpu_bf16: bool = False
    loss: str = "answer"

    def __post_init__(self) -> None:
        if self.mode not in ("lora", "full"):
            raise ValueError(f"mode must be 'lora' or 'full', got {self.mode!r}")
        if self.loss not in ("answer", "yes_no"):
            raise ValueError(f"loss must be 'answer' or 'yes_no', got {self.loss!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)

    def to_dict(self) -> dict:
        """JSON-able form.

        ``loss`` and ``schedule`` are left out at their defaults, so configs (and the cache keys
        hashed from them) written before the options existed stay the same.
        """
        d = asdict(self)
        d["lora"] = self.lora.to_dict()
        if d["loss"] == "answer":
            del d["loss"]
        if d["schedule"] == "cosine":
            del d["schedule"]
        return d


@dataclass
class TrainResult:
    """Outcome of a training run."""

    metrics: dict
    history: list[dict]
    checkpoint: Path | None
    seconds: float

    @property
    def checkpoint_path(self) -> Path | None:
        """Alias of ``checkpoint``: the ``.safetensors`` file written (None without ``out_dir``)."""
        return self.checkpoint


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(total: int, warmup: int, schedule: str = "cosine") -> Callable[[int], float]:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to 0 (or constant 1)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _trainable(model, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    if cfg.mode == "lora":
        if not lora_modules(model):
            attach_lora(model, cfg.lora)
        return [p for d in lora_modules(model).values() for p in d.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def evaluate(model, samples: Sequence[Sample], batch_size: int = 8, progress: bool = False) -> dict:
    """AUC / ACC / LogLoss of ``model`` on ``samples``."""
    p = score(model, samples, batch_size=batch_size, progress=progress, desc="eval")
    return classification_metrics([s.label for s in samples], p)


def _state(model, params_only: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params_only]


def train(
    model,
    train_samples: Sequence[Sample],
    valid_samples: Sequence[Sample] | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    meta: dict | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train_samples``; early-stop on validation AUC.

    Returns:
        :class:`TrainResult`; the model holds the best weights (by validation AUC when given).

    Raises:
        ValueError: no training samples.
        NonFiniteLossError: NaN/inf loss (the last good weights are restored first).
    """
    cfg = config or TrainConfig()
    if len(train_samples) == 0:
        raise ValueError("No training samples; pass a non-empty training set.")
    seed_everything(cfg.seed)
    device = next(model.parameters()).device
    params = _trainable(model, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_samples) / (cfg.batch_size * cfg.grad_accum))
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(cfg.warmup_ratio * total), cfg.schedule))
    eval_every = cfg.eval_every or steps_per_epoch
    valid = list(valid_samples or [])[: cfg.eval_samples] if valid_samples else []
    history: list[dict] = []
    best = {"auc": -1.0, "step": 0}
    best_state = _state(model, params)
    last_good = best_state
    bad_evals = 0
    loss_fn = answer_loss if cfg.loss == "answer" else yes_no_loss
    use_bf16 = (cfg.bf16 and device.type == "cuda") or (cfg.cpu_bf16 and device.type == "cpu")
    t0 = time.perf_counter()
    step = 0
    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(total=total, desc=f"train ({cfg.mode})", unit="step", disable=not progress)
    stop = False
    with plain_forward(model):
        for _epoch in range(cfg.epochs):
            order = rng.permutation(len(train_samples))
            for i in range(0, len(order), cfg.batch_size * cfg.grad_accum):
                model.train()
                chunk = [train_samples[j] for j in order[i : i + cfg.batch_size * cfg.grad_accum]]
                opt.zero_grad(set_to_none=True)
                loss_val = 0.0
                for k in range(0, len(chunk), cfg.batch_size):
                    part = chunk[k : k + cfg.batch_size]
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        loss = loss_fn(model, part, reduction="sum") / len(chunk)
                    if not torch.isfinite(loss):
                        with torch.no_grad():
                            for p, s in zip(params, last_good):
                                p.copy_(s)
                        bar.close()
                        where = ""
                        if out_dir is not None:
                            st, _ = save_checkpoint(model, Path(out_dir) / "model", {
                                "train_config": cfg.to_dict(), "history": history, **(meta or {}),
                                "metrics": {"stopped": "non-finite loss", "steps": step}})
                            where = f" and saved to {st}"
                        raise NonFiniteLossError(
                            f"Loss became {loss.item()} at step {step}; the last good weights were restored{where}. "
                            "Lower the learning rate (TrainConfig.lr) or check the data."
                        )
                    loss.backward()
                    loss_val += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                last_good = _state(model, params)
                opt.step()
                sched.step()
                step += 1
                rec = {"step": step, "loss": loss_val, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
                bar.set_postfix(loss=f"{loss_val:.4f}")
                bar.update(1)
                if valid and (step % eval_every == 0 or step == total):
                    m = evaluate(model, valid, cfg.batch_size)
                    rec["valid_auc"] = m["auc"]
                    if m["auc"] > best["auc"]:
                        best = {"auc": m["auc"], "step": step}
                        best_state = _state(model, params)
                        bad_evals = 0
                    else:
                        bad_evals += 1
                        if bad_evals >= cfg.patience:
                            stop = True
                history.append(rec)
                if stop or step >= total:
                    break
            if stop or step >= total:
                break
    bar.close()
    if valid and best["step"] != step:
        with torch.no_grad():
            for p, s in zip(params, best_state):
                p.copy_(s)
    model.eval()
    seconds = time.perf_counter() - t0
    metrics = {"best_valid_auc": best["auc"] if valid else None, "best_step": best["step"], "steps": step,
               "train_samples": len(train_samples), "seconds": seconds}
    ckpt = None
    if out_dir is not None:
        st, _ = save_checkpoint(model, Path(out_dir) / "model",
                                {"train_config": cfg.to_dict(), "metrics": metrics, "history": history, **(meta or {})})
        ckpt = st
    return TrainResult(metrics, history, ckpt, seconds)


def retrain(
    model_spec: str | Callable[[], torch.nn.Module],
    retain_samples: Sequence[Sample],
    config: TrainConfig,
    valid_samples: Sequence[Sample] | None = None,
    out_dir: str | Path | None = None,
    meta: dict | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train a fresh base model on the retain set only: the gold standard for unlearning.

    Uses exactly the same config and seed handling as :func:`train`, so the only difference from
    the original model is the data.
    """
    from recircuit.models import load_model

    model = load_model(model_spec) if isinstance(model_spec, str) else model_spec()
    res = train(model, retain_samples, valid_samples, copy.deepcopy(config), out_dir, meta)
    return model, res
