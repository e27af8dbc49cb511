"""The relearning attack: does a few steps of fine-tuning on part of the forget set bring the rest back?

Usage::

    from recircuit.evaluate.relearn import RelearnConfig, relearn_attack, steps_to_reach
    cfg = RelearnConfig(steps=10, lr=5e-5, batch_size=4, seed=0)
    unl = relearn_attack(unlearned, forget, cfg, heldout=heldout)   # the given model is not modified
    ret = relearn_attack(retrained, forget, cfg, heldout=heldout)   # the same halves (same seed)
    unl.loss_b                      # answer loss on half B at unl.steps (0, 1, ..., 10)
    target = float(original_loss_forget[unl.idx_b].mean())          # Original's fit of half B
    steps_to_reach(unl, target), steps_to_reach(ret, target)         # fewer steps = knowledge was hidden, not removed

The forget samples are split into halves A and B by a permutation seeded with ``config.seed``
(A gets the extra sample of an odd count). A **copy** of the model
(:func:`recircuit.models.copy_model`) is fully fine-tuned on A with AdamW (constant learning
rate, gradient norm clipped at 1 as in :func:`recircuit.train.train`, bf16 autocast on CUDA),
``batch_size`` samples per step, cycling through seeded permutations of A. At step 0 and every
``eval_every`` steps (and at the last one) the mean answer cross-entropy (the TALLRec loss that
:func:`~recircuit.evaluate.metrics.model_outputs` reports as ``loss_forget``) on B, on A and on
``heldout`` is recorded. An unlearning method that only hid the forget users' data lets B's loss
fall back to Original's within a few steps; after Retrain (which never saw it) it falls only as
fast as ordinary learning on A generalizes.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.errors import InputError, RunFailed
from recircuit.evaluate.metrics import per_sample_loss

logger = logging.getLogger(__name__)


@dataclass
class RelearnConfig:
    """Hyper-parameters of the relearning attack.

    Attributes:
        steps: AdamW steps on half A.
        lr: learning rate (constant).
        batch_size: samples per step (and per forward pass when evaluating).
        seed: seed of the A/B split, of the order of A's samples and of torch's RNG.
        eval_every: record the losses every this many steps (and at step 0 and the last step).
        loss: the training loss on A: ``"answer"`` (TALLRec answer CE) or ``"yes_no"``. The
            recorded losses are always the answer CE.
        weight_decay: AdamW weight decay.
        bf16: autocast to bfloat16 on CUDA (weights and optimizer stay fp32).

    Raises:
        InputError: ``steps``, ``batch_size`` or ``eval_every`` below 1, a non-positive or
            non-finite ``lr``, a negative ``weight_decay``, an unknown ``loss`` (the field is named).
    """

    steps: int = 10
    lr: float = 5e-5
    batch_size: int = 4
    seed: int = 0
    eval_every: int = 1
    loss: str = "answer"
    weight_decay: float = 0.0
    bf16: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1):
                raise InputError(f"must be an integer >= 1, got {v!r}", field=name, fix=f"pass a positive {name}")
        if not (isinstance(self.lr, numbers.Real) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"must be a positive finite number, got {self.lr!r}", field="lr", fix="pass e.g. 5e-5")
        if not (isinstance(self.weight_decay, numbers.Real) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise InputError(f"must be a finite number >= 0, got {self.weight_decay!r}", field="weight_decay",
                             fix="pass e.g. 0.0")
        if not isinstance(self.seed, numbers.Integral):
            raise InputError(f"must be an integer, got {self.seed!r}", field="seed", fix="pass e.g. 0")
        if self.loss not in ("answer", "yes_no"):
            raise InputError(f"must be 'answer' or 'yes_no', got {self.loss!r}", field="loss", fix="pass loss='answer'")

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


@dataclass
class RelearnCurve:
    """Losses along a relearning attack.

    Attributes:
        steps: the optimizer steps at which the losses were recorded (starts at 0).
        loss_a: mean answer CE on half A (the samples trained on) at each recorded step.
        loss_b: mean answer CE on half B (never trained on by the attack) at each recorded step.
        loss_heldout: mean answer CE on the held-out samples (None without them).
        idx_a, idx_b: the indices into the forget samples of halves A and B.
        config: the :class:`RelearnConfig` as a dict.
    """

    steps: list[int]
    loss_a: list[float]
    loss_b: list[float]
    loss_heldout: list[float] | None = None
    idx_a: list[int] = field(default_factory=list)
    idx_b: list[int] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RelearnCurve:
        """Inverse of :meth:`to_dict` (``KeyError``/``ValueError`` on a payload of the wrong shape)."""
        steps = [int(s) for s in d["steps"]]
        la, lb = [float(x) for x in d["loss_a"]], [float(x) for x in d["loss_b"]]
        lh = None if d.get("loss_heldout") is None else [float(x) for x in d["loss_heldout"]]
        if len(la) != len(steps) or len(lb) != len(steps) or (lh is not None and len(lh) != len(steps)):
            raise ValueError(f"a relearning curve needs one loss per recorded step ({len(steps)}), got "
                             f"loss_a {len(la)}, loss_b {len(lb)}, loss_heldout {None if lh is None else len(lh)}")
        return cls(steps, la, lb, lh, [int(i) for i in d.get("idx_a", [])], [int(i) for i in d.get("idx_b", [])],
                   dict(d.get("config") or {}))


def split_halves(n: int, seed: int = 0) -> tuple[Int[np.ndarray, "a"], Int[np.ndarray, "b"]]:
    """The attack's halves of ``n`` forget samples: ``(idx_a, idx_b)``, each sorted.

    ``numpy.random.default_rng(seed).permutation(n)``; A is its first ``ceil(n / 2)`` entries.

    Raises:
        InputError: ``n < 2`` (each half needs a sample).
    """
    if n < 2:
        raise InputError(f"the relearning attack needs at least 2 forget samples (one per half), got {n}",
                         field="forget", fix="pass a deletion request with two or more forget samples")
    perm = np.random.default_rng(seed).permutation(n)
    k = (n + 1) // 2
    return np.sort(perm[:k]), np.sort(perm[k:])


def steps_to_reach(curve: RelearnCurve, target_loss: float) -> int | None:
    """First recorded step at which the loss on half B is at most ``target_loss`` (None: never).

    With ``eval_every > 1`` the answer is a multiple of it (or the last step): the resolution of
    the curve.
    """
    for s, loss in zip(curve.steps, curve.loss_b):
        if loss <= target_loss:
            return int(s)
    return None


def _mean_loss(model, samples: Sequence[Sample], batch_size: int) -> float:
    was = model.training
    model.eval()
    try:
        return float(np.mean(per_sample_loss(model, samples, batch_size)))
    finally:
        model.train(was)


def relearn_attack(model, forget: Sequence[Sample], config: RelearnConfig | None = None,
                   heldout: Sequence[Sample] | None = None, progress: bool = False) -> RelearnCurve:
    """Fine-tune a copy of ``model`` on half A of ``forget`` and record the loss on half B.

    Args:
        model: the model to attack (e.g. an unlearned model, or Retrain for the reference
            curve). It is **not modified**: the attack trains a copy.
        forget: the deletion request's forget samples (at least 2).
        config: the attack's hyper-parameters (default :class:`RelearnConfig`).
        heldout: optional never-trained samples; their loss shows how much of the fall on B is
            ordinary generalization.
        progress: show a tqdm bar over the steps.

    Returns:
        :class:`RelearnCurve` with the losses at step 0 and every ``eval_every`` steps.

    Raises:
        InputError: fewer than 2 forget samples.
        RunFailed: the training loss became NaN or infinite (lower ``lr``).
    """
    from recircuit.models import copy_model
    from recircuit.models.loading import plain_forward
    from recircuit.train.losses import answer_loss, yes_no_loss

    cfg = config or RelearnConfig()
    forget = list(forget)
    idx_a, idx_b = split_halves(len(forget), cfg.seed)
    half_a, half_b = [forget[i] for i in idx_a], [forget[i] for i in idx_b]
    held = list(heldout or [])
    attacker = copy_model(model)
    for p in attacker.parameters():
        p.requires_grad_(True)
    params = list(attacker.parameters())
    device = next(attacker.parameters()).device
    use_bf16 = cfg.bf16 and device.type == "cuda"
    loss_fn = answer_loss if cfg.loss == "answer" else yes_no_loss
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    curve = RelearnCurve([], [], [], [] if held else None, idx_a.tolist(), idx_b.tolist(), cfg.to_dict())

    def record(step: int) -> None:
        curve.steps.append(step)
        curve.loss_a.append(_mean_loss(attacker, half_a, cfg.batch_size))
        curve.loss_b.append(_mean_loss(attacker, half_b, cfg.batch_size))
        if curve.loss_heldout is not None:
            curve.loss_heldout.append(_mean_loss(attacker, held, cfg.batch_size))

    devices = [device] if device.type == "cuda" else []
    order: list[int] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        record(0)
        for step in tqdm(range(1, cfg.steps + 1), desc="relearn", unit="step", disable=not progress):
            while len(order) < cfg.batch_size:
                order += rng.permutation(len(half_a)).tolist()
            batch, order = [half_a[j] for j in order[: cfg.batch_size]], order[cfg.batch_size:]
            attacker.train()
            opt.zero_grad(set_to_none=True)
            with plain_forward(attacker), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(attacker, batch, reduction="mean")
            if not torch.isfinite(loss):
                raise RunFailed(f"relearning attack failed: the loss became {loss.item()} at step {step}; "
                                f"lower the learning rate (RelearnConfig.lr {cfg.lr:g})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                record(step)
    logger.debug("relearn: loss_b %.4f -> %.4f over %d steps", curve.loss_b[0], curve.loss_b[-1], cfg.steps)
    return curve
