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

Guards: a run whose result must not be trusted raises :class:`TrainingFailed` (a
:class:`recircuit.errors.RunFailed`; the CLI turns it into one line and exit status 2), and
**nothing is written to** ``out_dir``, so a good checkpoint already there stays byte-identical
(a successful run replaces it atomically, sidecar last; see :mod:`recircuit.train.checkpoint`):

* **non-finite loss** (:class:`NonFiniteLossError`): a NaN or infinite loss stops training at
  once; the model gets back the weights from before the last update (in memory only).
* **divergence**: the mean loss of the last :data:`DIVERGENCE_WINDOW` optimizer steps exceeds
  :data:`DIVERGENCE_FACTOR` times the first step's loss, or times ln 2 if that is larger. The
  first step's loss is measured on the starting weights, so this reads "the loss got ten times
  worse than the untrained model's"; ln 2 (a Yes/No coin flip) is the floor, so a run that
  starts from an already fine-tuned model (``--init``) is not stopped by a small absolute rise.
  Checked after every step once the window is full, and over the steps there are at the end.
* **collapse to chance**: after training (best weights restored), the model's P(Yes) on the
  validation samples of its best evaluation (or, without validation samples, on the first
  :data:`PROBE_SAMPLES` training samples, scored once) spans less than :data:`COLLAPSE_SPREAD`
  and their AUC is within :data:`CHANCE_MARGIN` of 0.5: the model answers the same for every
  prompt (``recircuit train --lr 1e6`` ends there, with its loss stuck).

**One answer is never the best checkpoint.** Early stopping keeps the evaluation with the best
validation AUC among those whose answers are not nearly all the same: a model that answers
"Yes." (P(Yes) > 0.5) or "No." on more than :data:`ONE_ANSWER_SHARE` of the validation samples
has collapsed to one answer even if its ranking (AUC) still looks good, so its weights are not
kept (the history marks that evaluation ``one_answer``). When every evaluation is such, the best
AUC is kept and ``metrics["one_answer"]`` says so.

None of them fires on normal runs: random or fine-tuned models spread P(Yes) by far more than
1e-4 across prompts (the random tiny model by about 1e-2), and a healthy loss falls from its start.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.errors import InputError, RunFailed
from recircuit.metrics import auc as roc_auc
from recircuit.metrics import classification_metrics
from recircuit.models.loading import plain_forward
from recircuit.models.scoring import score
from recircuit.train.checkpoint import save_checkpoint
from recircuit.train.lora import LoraConfig, attach_lora, lora_modules
from recircuit.train.losses import answer_loss, yes_no_loss

logger = logging.getLogger(__name__)


#: Divergence guard: the mean loss over this many recent steps ...
DIVERGENCE_WINDOW = 4
#: ... may not exceed this many times max(first step's loss, ln 2).
DIVERGENCE_FACTOR = 10.0
#: Collapse guard: P(Yes) spanning less than this over the evaluated samples counts as constant ...
COLLAPSE_SPREAD = 1e-4
#: ... and, with the AUC within this of 0.5, as a model destroyed to chance level.
CHANCE_MARGIN = 0.05
#: Samples scored by the collapse guard when there are no validation samples.
PROBE_SAMPLES = 16
#: A validation evaluation whose answers are this share (or more) one answer is not kept as the best.
ONE_ANSWER_SHARE = 0.95


def one_answer(p_yes: Float[np.ndarray, "n"], labels: Sequence[int] | None = None) -> bool:
    """Whether the answers (P(Yes) > 0.5) are at least :data:`ONE_ANSWER_SHARE` one answer while the
    ``labels`` (when given) are mixed (their majority below ``ONE_ANSWER_SHARE``): on a set that is
    itself nearly all one label, answering that label is no collapse."""
    p = np.asarray(p_yes, dtype=np.float64)
    if p.size == 0:
        return False
    share = float((p > 0.5).mean())
    if labels is not None and len(labels):
        pos = float(np.mean(np.asarray(list(labels)) == 1))
        if max(pos, 1 - pos) >= ONE_ANSWER_SHARE:
            return False
    return max(share, 1 - share) >= ONE_ANSWER_SHARE


class TrainingFailed(RunFailed):
    """Training ran but its model must not be used (non-finite loss, divergence, collapse to chance).

    Nothing was written to ``out_dir``. Attributes: ``reason`` (``"non-finite loss"``,
    ``"diverged"`` or ``"collapsed"``), ``step`` (optimizer steps done) and ``history``.
    """

    def __init__(self, message: str, *, reason: str, step: int, history: list[dict]) -> None:
        super().__init__(message)
        self.reason, self.step, self.history = reason, step, history


class NonFiniteLossError(TrainingFailed, FloatingPointError):
    """Training produced a NaN or infinite loss; the last good weights were restored in memory."""


def divergence(losses: Sequence[float], final: bool = False) -> tuple[float, float] | None:
    """The divergence guard: ``(recent mean loss, limit)`` when training diverged, else None.

    ``losses[0]`` (the first step's loss, on the starting weights) sets the limit
    ``DIVERGENCE_FACTOR * max(losses[0], ln 2)``; the mean of the last ``DIVERGENCE_WINDOW``
    later losses is compared with it, or, with ``final=True``, of the later losses there are.
    """
    later = list(losses[1:])
    if not later or (len(later) < DIVERGENCE_WINDOW and not final):
        return None
    recent = float(np.mean(later[-DIVERGENCE_WINDOW:]))
    limit = DIVERGENCE_FACTOR * max(float(losses[0]), math.log(2))
    return (recent, limit) if recent > limit else None


def collapsed(labels: Sequence[int], p_yes: Float[np.ndarray, "n"]) -> dict | None:
    """The collapse guard: ``{"spread", "auc", "mean"}`` when P(Yes) is constant at chance, else None.

    Constant: ``max - min`` of ``p_yes`` below ``COLLAPSE_SPREAD``; chance: AUC within
    ``CHANCE_MARGIN`` of 0.5 (a single-class sample set, whose AUC is undefined, counts as chance).
    """
    p = np.asarray(p_yes, dtype=np.float64)
    if p.size == 0:
        return None
    spread = float(np.nanmax(p) - np.nanmin(p)) if np.isfinite(p).any() else 0.0
    auc = roc_auc(list(labels), p) if np.isfinite(p).all() else float("nan")
    at_chance = not math.isfinite(auc) or abs(auc - 0.5) <= CHANCE_MARGIN
    if (spread < COLLAPSE_SPREAD or not np.isfinite(p).all()) and at_chance:
        return {"spread": spread, "auc": auc, "mean": float(np.nanmean(p)) if np.isfinite(p).any() else float("nan")}
    return None


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

    Raises:
        InputError: a non-positive or non-finite ``lr``, a count below 1, ``warmup_ratio``
            outside [0, 1] (the field is named in the message).
        ValueError: an unknown ``mode``, ``loss`` or ``schedule``.
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
        if not (isinstance(self.lr, numbers.Real) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"must be a positive finite number, got {self.lr!r}", field="lr",
                             fix="pass e.g. 5e-5 (full) or 3e-4 (lora)")
        for name in ("epochs", "batch_size", "grad_accum", "patience"):
            if not (isinstance(getattr(self, name), numbers.Integral) and getattr(self, name) >= 1):
                raise InputError(f"must be an integer >= 1, got {getattr(self, name)!r}", field=name,
                                 fix=f"pass a positive {name}")
        for name in ("max_steps", "eval_every", "eval_samples"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, numbers.Integral) and v >= 1):
                raise InputError(f"must be None or an integer >= 1, got {v!r}", field=name, fix=f"pass a positive {name}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.warmup_ratio!r}", field="warmup_ratio", fix="pass e.g. 0.1")
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


def _restore(params: list[torch.nn.Parameter] | list[torch.Tensor], state: list[torch.Tensor]) -> None:
    """Copy ``state`` into ``params`` in place (also used the other way round, to refresh a snapshot)."""
    with torch.no_grad():
        for p, s in zip(params, state):
            p.copy_(s)


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

    The checkpoint (``out_dir/model.{safetensors,json}``) is written only once training has
    passed the guards of the module docstring, and replaces an existing one atomically.

    Returns:
        :class:`TrainResult`; the model holds the best weights (by validation AUC when given).

    Raises:
        ValueError: no training samples.
        NonFiniteLossError: NaN/inf loss (the last good weights are restored in memory first).
        TrainingFailed: the loss diverged, or the model collapsed to chance level (the model
            keeps the failed weights). Nothing is written to ``out_dir`` in either case.
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
    losses: list[float] = []
    best = {"auc": -1.0, "step": 0}
    fallback: dict = {"auc": -1.0}     # the best evaluation that collapsed to one answer (used if all did)
    best_state = _state(model, params)
    best_p: np.ndarray | None = None
    last_good = _state(model, params)      # buffers refreshed in place before every step (no allocation)
    bad_evals = 0
    loss_fn = answer_loss if cfg.loss == "answer" else yes_no_loss
    use_bf16 = (cfg.bf16 and device.type == "cuda") or (cfg.cpu_bf16 and device.type == "cpu")
    kept = (f" nothing was written to {out_dir}, so a checkpoint already there is unchanged"
            if out_dir is not None else " nothing was saved")
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
                        _restore(params, last_good)
                        bar.close()
                        raise NonFiniteLossError(
                            f"training failed: the loss became {loss.item()} at step {step + 1}; the last good "
                            f"weights were restored in memory and{kept}; lower the learning rate "
                            f"(lr {cfg.lr:g}; TrainConfig.lr / --lr) or check the data",
                            reason="non-finite loss", step=step, history=history)
                    loss.backward()
                    loss_val += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                _restore(last_good, params)        # last_good <- the weights before this step
                opt.step()
                sched.step()
                step += 1
                losses.append(loss_val)
                rec = {"step": step, "loss": loss_val, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
                bar.set_postfix(loss=f"{loss_val:.4f}")
                bar.update(1)
                history.append(rec)
                _check_divergence(losses, False, cfg, step, history, kept, bar)
                if valid and (step % eval_every == 0 or step == total):
                    p_valid = score(model, valid, batch_size=cfg.batch_size, progress=False, desc="eval")
                    if not np.isfinite(p_valid).all():
                        bar.close()
                        raise TrainingFailed(
                            f"training destroyed the model: its P(Yes) is NaN or infinite on "
                            f"{int((~np.isfinite(p_valid)).sum())} of {len(valid)} validation samples at step {step}; "
                            f"{kept.strip()}; lower the learning rate (lr {cfg.lr:g}; TrainConfig.lr / --lr)",
                            reason="collapsed", step=step, history=history)
                    m = classification_metrics([s.label for s in valid], p_valid)
                    rec["valid_auc"] = m["auc"]
                    single = one_answer(p_valid, [s.label for s in valid])
                    if single:
                        rec["one_answer"] = True
                    if single and best["auc"] < 0 and m["auc"] > fallback["auc"]:
                        fallback = {"auc": m["auc"], "step": step, "state": _state(model, params), "p": p_valid}
                    if not single and m["auc"] > best["auc"]:
                        best = {"auc": m["auc"], "step": step}
                        best_state = _state(model, params)
                        best_p = p_valid
                        bad_evals = 0
                    elif not (single and best["auc"] < 0):   # no patience lost before a first eligible one
                        bad_evals += 1
                        if bad_evals >= cfg.patience:
                            stop = True
                if stop or step >= total:
                    break
            if stop or step >= total:
                break
    bar.close()
    _check_divergence(losses, True, cfg, step, history, kept, None)
    all_one_answer = bool(valid) and best["auc"] < 0 and fallback["auc"] >= 0
    if all_one_answer:
        logger.warning("every validation evaluation answered almost always the same; keeping the best AUC "
                       "(step %d) anyway", fallback["step"])
        best, best_state, best_p = {"auc": fallback["auc"], "step": fallback["step"]}, fallback["state"], fallback["p"]
    if valid and best["step"] != step:
        _restore(params, best_state)
    model.eval()
    seconds = time.perf_counter() - t0
    if best_p is not None:
        probe, p_probe, where = valid, best_p, f"the {len(valid)} validation samples (step {best['step']})"
    else:
        probe = list(valid or train_samples[:PROBE_SAMPLES])
        p_probe = score(model, probe, batch_size=cfg.batch_size, progress=False)
        where = f"{len(probe)} {'validation' if valid else 'training'} samples"
    dead = collapsed([s.label for s in probe], p_probe)
    if dead is not None:
        raise TrainingFailed(
            f"training destroyed the model: on {where} its P(Yes) is the same for every prompt (spread "
            f"{dead['spread']:.1e}, mean {dead['mean']:.3f}) and its AUC is {dead['auc']:.3f}, chance level; "
            f"{kept.strip()}; lower the learning rate (lr {cfg.lr:g}; TrainConfig.lr / --lr)",
            reason="collapsed", step=step, history=history)
    metrics = {"best_valid_auc": best["auc"] if valid else None, "best_step": best["step"], "steps": step,
               "train_samples": len(train_samples), "seconds": seconds}
    if all_one_answer:
        metrics["one_answer"] = True
    ckpt = None
    if out_dir is not None:
        st, _ = save_checkpoint(model, Path(out_dir) / "model",
                                {"train_config": cfg.to_dict(), "metrics": metrics, "history": history, **(meta or {})})
        ckpt = st
    return TrainResult(metrics, history, ckpt, seconds)


def _check_divergence(losses: list[float], final: bool, cfg: TrainConfig, step: int, history: list[dict],
                      kept: str, bar) -> None:
    hit = divergence(losses, final)
    if hit is None:
        return
    if bar is not None:
        bar.close()
    recent, limit = hit
    n = min(DIVERGENCE_WINDOW, len(losses) - 1)
    raise TrainingFailed(
        f"training diverged: the mean loss of the last {n} steps ({recent:.4g}, at step {step}) is more than "
        f"{DIVERGENCE_FACTOR:g}x max(first loss {losses[0]:.4g}, ln 2) = {limit:.4g}; {kept.strip()}; lower the "
        f"learning rate (lr {cfg.lr:g}; TrainConfig.lr / --lr)",
        reason="diverged", step=step, history=history)


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

    Raises:
        TrainingFailed: as :func:`train` (non-finite loss, divergence, collapse to chance).
    """
    from recircuit.models import load_model

    model = load_model(model_spec) if isinstance(model_spec, str) else model_spec()
    res = train(model, retain_samples, valid_samples, copy.deepcopy(config), out_dir, meta)
    return model, res
