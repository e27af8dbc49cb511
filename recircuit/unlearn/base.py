"""The unlearning-method interface, its registry and the shared update loop.

Usage::

    from recircuit.unlearn import get_method, available_methods, UnlearnConfig
    method = get_method("cure")
    result = method.run(model, forget, retain, UnlearnConfig(steps=30), heldout=split.valid[:64])

A new method is one file: subclass :class:`UnlearnMethod`, implement ``setup`` (which parameters
move, any teachers) and ``gradients`` (set ``.grad`` on those parameters for one step), and
decorate it with ``@register("name")``.

**Shared loop.** Every method gets the same budget (``steps`` optimizer steps of Adam without
weight decay, so parameters with zero gradient never move), the same forget/retain batches and the
same early-stopping rule, which never looks at the retrained model: every ``eval_every`` steps the
mean probability the model gives the *correct* answer on (a sample of) the forget set is compared
with the same quantity on held-out samples it never trained on; when forget falls to the held-out
level the forget data looks unseen, and the loop stops. A NaN/inf loss or gradient, or a diverging
retain loss (over ``diverge_factor`` times ``max(first retain loss, diverge_floor)``), restores the
weights of the last step whose loss was finite and stops, with the reason in ``result.stopped``:
never a silently broken model.

**Frozen means bit-identical.** The optimizer is Adam with ``weight_decay=0``: an entry whose
gradient is exactly zero at every step keeps zero moments, so its update is exactly zero (AdamW's
decoupled decay would shrink it; that is why it is not used). Methods that move only part of a
weight set ``grad_masks``; gradient hooks then zero the rest before the optimizer sees it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.models.loading import plain_forward
from recircuit.models.scoring import score
from recircuit.unlearn.grouping import GroupingConfig

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[UnlearnMethod]] = {}
FORGET_RULES = ("npo", "ga", "e2urec")


class UnlearningError(ValueError):
    """A deletion request that cannot be honoured as given."""


@dataclass
class UnlearnConfig:
    """Budget and hyper-parameters shared by all methods (each uses what applies to it).

    Attributes:
        steps: optimizer steps (the budget every method gets).
        lr: Adam learning rate (no weight decay, so parameters with zero gradient stay bit-identical).
        batch_size: forget and retain samples per step (the same seeded batches for every method).
        seed: seed of the batch order, random groups and the E2URec augmented model.
        eval_every: steps between early-stopping checks.
        early_stop: stop once forget-set P(correct) falls to the held-out level (needs ``heldout``).
        eval_samples: forget / held-out samples used by the early-stopping check.
        forget_rule: CURE's (and PCGrad's) forget objective: ``npo`` (default), ``ga`` (bounded
            gradient ascent) or ``e2urec`` (KL to E2URec's forgetting teacher).
        npo_beta: NPO temperature.
        ga_bound: bounded GA stops pushing a sample once its answer CE exceeds this (nats).
        retain_kl: weight of KL(original || model) on retain answers in the retain objective.
        retain_weight: weight of retain CE in GradDiff and NPO.
        diverge_factor, diverge_floor: the retain loss may grow to ``diverge_factor`` times
            ``max(first retain loss, diverge_floor)`` before the run is called diverged.
        grouping: CURE's module grouping.
        importance_method, importance_steps, importance_samples, corruption: the EAP run that
            scores modules (method, IG steps, samples per set, corruption strategy).
        e2urec_alpha, e2urec_beta: E2URec's teacher strength and remembering weight.
        e2urec_aug_steps, e2urec_aug_lr: tuning of the augmented model on the forget set.
    """

    steps: int = 30
    lr: float = 1e-5
    batch_size: int = 8
    seed: int = 0
    eval_every: int = 5
    early_stop: bool = True
    eval_samples: int = 64
    forget_rule: str = "npo"  # CURE forget-specific rule: npo | ga | e2urec
    npo_beta: float = 0.1
    ga_bound: float = 2.0
    retain_kl: float = 1.0
    retain_weight: float = 1.0
    diverge_factor: float = 5.0
    diverge_floor: float = 0.1
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    importance_method: str = "eap-ig-inputs"
    importance_steps: int = 3
    importance_samples: int = 16
    corruption: str = "label_flip"
    e2urec_alpha: float = 2.0
    e2urec_beta: float = 0.6
    e2urec_aug_steps: int = 10
    e2urec_aug_lr: float = 1e-5

    def __post_init__(self) -> None:
        if isinstance(self.grouping, dict):
            self.grouping = GroupingConfig(**self.grouping)
        if self.forget_rule not in FORGET_RULES:
            raise ValueError(f"forget_rule must be one of {FORGET_RULES}, got {self.forget_rule!r}")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"steps must be >= 0 and batch_size, eval_every >= 1; got steps={self.steps}, "
                             f"batch_size={self.batch_size}, eval_every={self.eval_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = asdict(self)
        d["grouping"] = asdict(self.grouping)
        return d


@dataclass
class UnlearnResult:
    """What a method did."""

    method: str
    steps: int
    seconds: float
    history: list[dict]
    stopped: str
    extra: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-able form (without the model)."""
        return {"method": self.method, "steps": self.steps, "seconds": self.seconds, "history": self.history,
                "stopped": self.stopped, "extra": self.extra}


def register(name: str):
    """Class decorator adding a method to the registry under ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"Unlearning method name {name!r} is already taken by {_REGISTRY[name].__qualname__}; "
                             "pick another name.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    """Registered method names."""
    from recircuit.unlearn import methods  # noqa: F401  (registers the built-ins)

    return sorted(_REGISTRY)


def get_method(name: str) -> UnlearnMethod:
    """An instance of the registered method ``name``."""
    names = available_methods()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown unlearning method {name!r}; available: {names}")
    return _REGISTRY[name]()


def _key(s: Sample) -> str:
    return s.uid or s.input


def check_request(forget: Sequence[Sample], retain: Sequence[Sample] | None, test: Sequence[Sample] | None = None,
                  train_size: int | None = None, train: Sequence[Sample] | None = None) -> None:
    """Refuse a deletion request that cannot be honoured, with the reason and the fix.

    Raises :class:`UnlearningError` for an empty forget set, a forget set larger than the training
    set (``train_size`` or ``len(train)``), forget samples that are not training samples (when
    ``train`` is given), forget samples in the test set, forget samples also in the retain set,
    and an empty retain set (``retain=None`` skips the retain checks).
    """
    if len(forget) == 0:
        raise UnlearningError("The forget set is empty; name the users or samples to forget.")
    if train is not None:
        train_size = len(train) if train_size is None else train_size
    if train_size is not None and len(forget) > train_size:
        raise UnlearningError(f"The forget set ({len(forget)}) is larger than the training set ({train_size}); "
                              "only training samples can be forgotten.")
    keys = {_key(s) for s in forget}
    if train is not None:
        missing = keys - {_key(s) for s in train}
        if missing:
            raise UnlearningError(f"{len(missing)} forget samples were never trained on (e.g. {sorted(missing)[0]!r}); "
                                  "only training samples can be forgotten: take the forget set from the training split.")
    if test is not None:
        clash = keys & {_key(s) for s in test}
        if clash:
            raise UnlearningError(f"{len(clash)} forget samples are in the test set (e.g. {sorted(clash)[0]!r}); "
                                  "a test sample was never trained on and cannot be forgotten.")
    if retain is None:
        return
    if len(retain) == 0:
        raise UnlearningError("The retain set is empty; nothing would remain of the training data.")
    both = keys & {_key(s) for s in retain}
    if both:
        raise UnlearningError(f"{len(both)} samples are in both the forget and the retain set (e.g. {sorted(both)[0]!r}); "
                              "split the training data with recircuit.data.forget_retain_split.")


def p_correct(model, samples: Sequence[Sample], batch_size: int = 8) -> float:
    """Mean probability of the correct answer."""
    p = score(model, samples, batch_size=batch_size, progress=False)
    y = np.array([s.label for s in samples])
    return float(np.mean(np.where(y == 1, p, 1 - p)))


class UnlearnMethod:
    """Base class: subclasses choose the trainable parameters and compute gradients per step.

    Hooks for subclasses:
        ``setup`` returns the parameters the method may change (default: every attention and MLP
        projection weight). It may set ``self.grad_masks`` (``{param_name: bool mask}``, names from
        :func:`recircuit.unlearn.masks.module_params`): gradient hooks then zero every entry outside
        the mask, so those entries stay bit-identical under Adam without weight decay.
        ``gradients`` sets ``.grad`` for one step and returns the losses to log; it must report the
        retain-side loss as ``"retain"`` when it has one (used by the divergence guard).
        ``teardown`` releases what ``setup`` built; ``extra`` returns method details for the report.
    """

    name = "base"
    grad_masks: dict[str, torch.Tensor] | None = None

    def setup(self, model, original, forget, retain, config: UnlearnConfig) -> list[torch.nn.Parameter]:
        """Return the parameters this method may change (default: every attention/MLP projection)."""
        from recircuit.unlearn.masks import module_params

        return list(module_params(model).values())

    def gradients(self, model, original, f_batch, r_batch, config: UnlearnConfig) -> dict[str, float]:
        """Set ``.grad`` on the trainable parameters for one step; return logged losses."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release per-run state (teachers, hooks)."""

    def run(self, model, forget: Sequence[Sample], retain: Sequence[Sample], config: UnlearnConfig | None = None,
            reference=None, heldout: Sequence[Sample] | None = None, original=None,
            progress: bool = True) -> UnlearnResult:
        """Unlearn ``forget`` from ``model`` in place, keeping ``retain``.

        Args:
            model: the fine-tuned bridge; its weights are changed in place.
            forget, retain: the deletion request (disjoint, both non-empty).
            config: budget and hyper-parameters.
            reference: a frozen copy of the model before unlearning (the NPO reference, the KL
                target and E2URec's remembering teacher); made here when not given.
            heldout: samples never trained on, for the early-stopping rule (e.g. the valid split).
            original: alias of ``reference``.
            progress: show a tqdm bar over steps.

        Returns:
            An :class:`UnlearnResult` whose ``model`` is ``model``. On a NaN/inf loss or gradient,
            or a diverging retain loss, the last good weights are restored and ``stopped`` says why.
        """
        cfg = config or UnlearnConfig()
        check_request(forget, retain)
        forget, retain = list(forget), list(retain)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        original = reference if reference is not None else original
        original = original if original is not None else copy.deepcopy(model).eval()
        if original is model:
            raise ValueError("The reference model is the model being unlearned; pass a frozen copy (copy.deepcopy).")
        for p in original.parameters():
            p.requires_grad_(False)
        t0 = time.perf_counter()
        for p in model.parameters():
            p.requires_grad_(False)
        self.grad_masks = None
        params = self.setup(model, original, forget, retain, cfg)
        for p in params:
            p.requires_grad_(True)
        handles = []
        if self.grad_masks:
            from recircuit.unlearn.masks import attach_grad_masks

            handles = attach_grad_masks(model, self.grad_masks)
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0)
        history: list[dict] = []
        stopped = "budget"
        heldout_level = p_correct(model, heldout[: cfg.eval_samples]) if (heldout and cfg.early_stop) else None
        forget_eval = forget[: cfg.eval_samples]
        first_retain = None
        good = [p.detach().clone() for p in params]
        bar = tqdm(range(cfg.steps), desc=f"unlearn ({self.name})", disable=not progress)
        done = 0
        try:
            for step in bar:
                fi = rng.choice(len(forget), size=min(cfg.batch_size, len(forget)), replace=False)
                ri = rng.choice(len(retain), size=min(cfg.batch_size, len(retain)), replace=False)
                f_batch, r_batch = [forget[i] for i in fi], [retain[i] for i in ri]
                model.train()
                opt.zero_grad(set_to_none=True)
                with plain_forward(model), plain_forward(original):
                    logs = self.gradients(model, original, f_batch, r_batch, cfg)
                bad = [k for k, v in logs.items() if not np.isfinite(v)]
                if not bad and not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
                    bad = ["gradient"]
                r_loss = logs.get("retain")
                if r_loss is not None and first_retain is None and np.isfinite(r_loss):
                    first_retain = max(r_loss, cfg.diverge_floor)
                diverged = (r_loss is not None and first_retain is not None and np.isfinite(r_loss)
                            and r_loss > cfg.diverge_factor * first_retain)
                if bad or diverged:
                    with torch.no_grad():
                        for p, g in zip(params, good):
                            p.copy_(g)
                    # the weights this step was computed on are suspect: go back one update
                    done = max(step - 1, 0)
                    stopped = (f"non-finite {bad}" if bad else
                               f"retain loss diverged ({r_loss:.3g} > {cfg.diverge_factor} x {first_retain:.3g})")
                    stopped += f" at step {step + 1}; restored the weights after step {done}"
                    logger.warning("%s: %s", self.name, stopped)
                    break
                good = [p.detach().clone() for p in params]
                opt.step()
                done = step + 1
                rec = {"step": done, **logs}
                if heldout_level is not None and done % cfg.eval_every == 0:
                    model.eval()
                    pf = p_correct(model, forget_eval)
                    rec.update({"forget_p_correct": pf, "heldout_p_correct": heldout_level})
                    if pf <= heldout_level:
                        history.append(rec)
                        stopped = f"forget confidence {pf:.3f} reached held-out level {heldout_level:.3f}"
                        break
                history.append(rec)
                bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        finally:
            bar.close()
            for h in handles:
                h.remove()
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
                p.grad = None
            extra = self.extra()
            self.teardown()
        return UnlearnResult(self.name, done, time.perf_counter() - t0, history, stopped, extra, model)

    def extra(self) -> dict:
        """Method-specific details for the report (e.g. the grouping)."""
        return {}
