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
level the forget data looks unseen, and the loop stops. A NaN/inf loss or a diverging retain loss
(over ``diverge_factor`` times its starting value, or times ``diverge_floor`` if that is larger) restores the last good weights and stops, with
the reason recorded in the result.
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


class UnlearningError(ValueError):
    """A deletion request that cannot be honoured as given."""


@dataclass
class UnlearnConfig:
    """Budget and hyper-parameters shared by all methods (each uses what applies to it)."""

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


def register(name: str):
    """Class decorator adding a method to the registry under ``name``."""

    def deco(cls):
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


def check_request(forget: Sequence[Sample], retain: Sequence[Sample], test: Sequence[Sample] | None = None,
                  train_size: int | None = None) -> None:
    """Refuse empty forget sets, forget sets overlapping test, or forget sets larger than training."""
    if len(forget) == 0:
        raise UnlearningError("The forget set is empty; name the users or samples to forget.")
    if train_size is not None and len(forget) > train_size:
        raise UnlearningError(f"The forget set ({len(forget)}) is larger than the training set ({train_size}); "
                              "only training samples can be forgotten.")
    keys = {s.uid or s.input for s in forget}
    if test is not None:
        clash = keys & {s.uid or s.input for s in test}
        if clash:
            raise UnlearningError(f"{len(clash)} forget samples are in the test set (e.g. {sorted(clash)[0]!r}); "
                                  "a test sample was never trained on and cannot be forgotten.")
    if len(retain) == 0:
        raise UnlearningError("The retain set is empty; nothing would remain of the training data.")


def p_correct(model, samples: Sequence[Sample], batch_size: int = 8) -> float:
    """Mean probability of the correct answer."""
    p = score(model, samples, batch_size=batch_size, progress=False)
    y = np.array([s.label for s in samples])
    return float(np.mean(np.where(y == 1, p, 1 - p)))


class UnlearnMethod:
    """Base class: subclasses set up trainable parameters and compute gradients per step."""

    name = "base"

    def setup(self, model, original, forget, retain, config: UnlearnConfig) -> list[torch.nn.Parameter]:
        """Return the parameters this method may change (default: every attention/MLP projection)."""
        from recircuit.unlearn.masks import module_params

        return list(module_params(model).values())

    def gradients(self, model, original, f_batch, r_batch, config: UnlearnConfig) -> dict[str, float]:
        """Set ``.grad`` on the trainable parameters for one step; return logged losses."""
        raise NotImplementedError

    def run(self, model, forget: Sequence[Sample], retain: Sequence[Sample], config: UnlearnConfig | None = None,
            heldout: Sequence[Sample] | None = None, original=None, progress: bool = True) -> UnlearnResult:
        """Unlearn ``forget`` from ``model`` in place, keeping ``retain``.

        Args:
            heldout: samples never trained on, for the early-stopping rule (e.g. the valid split).
            original: a frozen copy of the model before unlearning (made here if not given).
        """
        cfg = config or UnlearnConfig()
        check_request(forget, retain)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        original = original if original is not None else copy.deepcopy(model).eval()
        for p in original.parameters():
            p.requires_grad_(False)
        t0 = time.perf_counter()
        for p in model.parameters():
            p.requires_grad_(False)
        params = self.setup(model, original, forget, retain, cfg)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0)
        history: list[dict] = []
        stopped = "budget"
        heldout_level = p_correct(model, heldout[: cfg.eval_samples]) if (heldout and cfg.early_stop) else None
        forget_eval = list(forget)[: cfg.eval_samples]
        first_retain = None
        good = [p.detach().clone() for p in params]
        bar = tqdm(range(cfg.steps), desc=f"unlearn ({self.name})", disable=not progress)
        step = 0
        for step in bar:
            fi = rng.choice(len(forget), size=min(cfg.batch_size, len(forget)), replace=False)
            ri = rng.choice(len(retain), size=min(cfg.batch_size, len(retain)), replace=False)
            f_batch, r_batch = [forget[i] for i in fi], [retain[i] for i in ri]
            model.train()
            opt.zero_grad(set_to_none=True)
            with plain_forward(model):
                logs = self.gradients(model, original, f_batch, r_batch, cfg)
            bad = [k for k, v in logs.items() if not np.isfinite(v)]
            r_loss = logs.get("retain")
            if r_loss is not None and first_retain is None:
                first_retain = max(r_loss, cfg.diverge_floor)
            diverged = r_loss is not None and first_retain is not None and r_loss > cfg.diverge_factor * first_retain
            if bad or diverged:
                with torch.no_grad():
                    for p, g in zip(params, good):
                        p.copy_(g)
                stopped = f"non-finite {bad}" if bad else f"retain loss diverged ({r_loss:.3g} > {cfg.diverge_factor} x {first_retain:.3g})"
                logger.warning("%s: %s at step %d; restored the last good weights", self.name, stopped, step)
                break
            good = [p.detach().clone() for p in params]
            opt.step()
            rec = {"step": step + 1, **logs}
            if heldout_level is not None and (step + 1) % cfg.eval_every == 0:
                model.eval()
                pf = p_correct(model, forget_eval)
                rec.update({"forget_p_correct": pf, "heldout_p_correct": heldout_level})
                if pf <= heldout_level:
                    history.append(rec)
                    stopped = f"forget confidence {pf:.3f} reached held-out level {heldout_level:.3f}"
                    step += 1
                    break
            history.append(rec)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        else:
            step = cfg.steps
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return UnlearnResult(self.name, step, time.perf_counter() - t0, history, stopped, self.extra())

    def extra(self) -> dict:
        """Method-specific details for the report (e.g. the grouping)."""
        return {}
