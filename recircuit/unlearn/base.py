"""The unlearning-method interface, its result and the shared update loop.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    method = get_method("cure", method_config("cure", forget_rule="npo"))
    result = method.run(model, forget, retain, LoopConfig(steps=30), heldout=split.valid[:64])
    result.status            # "ok" | "early_stop" | "restored" | "destroyed"
    result.check()           # raises RunFailed unless the run can be trusted

A method subclasses :class:`UnlearnMethod` and implements ``setup`` (which parameters move, any
teachers) and ``gradients`` (set ``.grad`` on those parameters for one step); its knobs are in
``self.config`` (its own :class:`~recircuit.unlearn.config.MethodConfig`), the loop's in
``self.loop`` (:class:`~recircuit.unlearn.config.LoopConfig`). See :mod:`recircuit.unlearn` for
how to register one.

**Shared loop.** Every method gets the same budget (``steps`` optimizer steps of Adam without
weight decay, so parameters with zero gradient never move), the same forget/retain batches and the
same early-stopping rule, which never looks at the retrained model: every ``eval_every`` steps the
mean probability the model gives the *correct* answer on (a sample of) the forget set is compared
with the same quantity on held-out samples it never trained on; when forget falls to the held-out
level the forget data looks unseen, and the loop stops (status ``"early_stop"``).

**Guards: never a silently broken model.**

* A NaN/inf loss or gradient, or a diverging retain loss (over ``diverge_factor`` times
  ``max(first retain loss, diverge_floor)``), restores the weights of the last step whose loss
  was finite and stops: status ``"restored"``, the reason in ``result.stopped``.
* After the loop, the final model is checked on ``guard_samples`` retain samples against the
  reference model: a non-finite output, a retain answer loss over ``diverge_factor`` times
  ``max(reference loss, diverge_floor)``, or P(Yes) collapsed to a constant (its spread under 1%
  of the reference's) gives status ``"destroyed"``. The weights are left as the run made them
  (for inspection); ``result.check()`` raises :class:`~recircuit.errors.RunFailed`, and
  ``recircuit unlearn`` saves nothing. Both are logged as warnings (with the log record attribute
  ``unlearn_status``, so a caller that reports the status itself can filter them).
* Bounded GA steps that push nothing (every forget sample's answer CE already above
  ``ga_bound``, so the gradient is zero) are counted in ``result.extra["ga_idle_steps"]`` and
  logged as a warning the first time; a run whose every step was idle says so in
  ``result.extra["warnings"]``.

**Frozen means bit-identical.** The optimizer is Adam with ``weight_decay=0``: an entry whose
gradient is exactly zero at every step keeps zero moments, so its update is exactly zero (AdamW's
decoupled decay would shrink it; that is why it is not used). Methods that move only part of a
weight set ``grad_masks``; gradient hooks then zero the rest before the optimizer sees it.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.data.requests import check_request, sample_key
from recircuit.errors import RunFailed
from recircuit.models.loading import copy_model, plain_forward
from recircuit.models.scoring import p_yes_from_logits, score
from recircuit.unlearn.config import LoopConfig, MethodConfig
from recircuit.unlearn.objectives import answer_forward

logger = logging.getLogger(__name__)

#: ``result.status`` values after which the unlearned model can be used.
OK_STATUSES = ("ok", "early_stop")


@dataclass
class UnlearnResult:
    """What a method did.

    Attributes:
        method: the method's registered name.
        steps: optimizer steps whose update the model keeps.
        seconds: wall time of the run (setup included).
        history: one dict of logged losses per step.
        stopped: why the run stopped, in words.
        extra: method details (grouping, conflicts) and loop notes (``ga_idle_steps``, ``warnings``,
            ``guard``).
        model: the unlearned model (the object passed in).
        status: ``"ok"`` (budget spent), ``"early_stop"`` (forget set at the held-out level),
            ``"restored"`` (non-finite or diverged: the last good weights were restored),
            ``"destroyed"`` (the final model failed the guard; weights left as they are).
    """

    method: str
    steps: int
    seconds: float
    history: list[dict]
    stopped: str
    extra: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    status: str = "ok"

    @property
    def ok(self) -> bool:
        """The unlearned model can be used (status ``ok`` or ``early_stop``)."""
        return self.status in OK_STATUSES

    def check(self) -> UnlearnResult:
        """Return ``self`` if :attr:`ok`, else raise :class:`RunFailed` with the status and reason."""
        if not self.ok:
            raise RunFailed(f"{self.method}: {self.stopped} (status {self.status})")
        return self

    def to_dict(self) -> dict:
        """JSON-able form (without the model)."""
        return {"method": self.method, "status": self.status, "steps": self.steps, "seconds": self.seconds,
                "history": self.history, "stopped": self.stopped, "extra": self.extra}


def p_correct(model, samples: Sequence[Sample], batch_size: int = 8) -> float:
    """Mean probability of the correct answer."""
    p = score(model, samples, batch_size=batch_size, progress=False)
    y = np.array([s.label for s in samples])
    return float(np.mean(np.where(y == 1, p, 1 - p)))


@torch.no_grad()
def _answer_state(model, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Answer CE and P(Yes) per sample, one forward pass (for the destruction guard)."""
    was = model.training
    model.eval()
    try:
        with plain_forward(model):
            ce, two = answer_forward(model, list(samples))
    finally:
        model.train(was)
    return ce.double().cpu().numpy(), p_yes_from_logits(two).double().cpu().numpy()


#: reference model -> (parameter versions, sample keys, its answer state): the reference of a
#: protocol is shared by every method run, so its guard pass is paid once.
_REFERENCE_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference_state(reference, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_answer_state` of the frozen reference, reused while its weights are unchanged.

    The cache entry is keyed by the samples' keys and every parameter's storage and version
    counter (bumped by any in-place change), so a modified reference is recomputed.
    """
    stamp = tuple((p.data_ptr(), p._version) for p in reference.parameters())
    keys = tuple(sample_key(s) for s in samples)
    hit = _REFERENCE_STATE.get(reference)
    if hit is not None and hit[0] == stamp and hit[1] == keys:
        return hit[2]
    state = _answer_state(reference, samples)
    try:
        _REFERENCE_STATE[reference] = (stamp, keys, state)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return state


def destruction_check(model, reference, samples: Sequence[Sample], loop: LoopConfig) -> tuple[str | None, dict]:
    """Is ``model`` destroyed compared with ``reference`` on ``samples``? ``(reason or None, numbers)``.

    Destroyed: non-finite answer loss or P(Yes); mean answer CE over ``loop.diverge_factor`` times
    ``max(reference CE, loop.diverge_floor)``; or P(Yes) collapsed to a constant (its spread,
    max - min, under 1% of the reference's while the reference's is over 1e-3).
    """
    ce, p = _answer_state(model, samples)
    ce0, p0 = _reference_state(reference, samples)
    spread, spread0 = float(np.ptp(p)) if len(p) else 0.0, float(np.ptp(p0)) if len(p0) else 0.0
    nums = {"retain_ce": float(np.mean(ce)), "reference_retain_ce": float(np.mean(ce0)),
            "p_yes_spread": spread, "reference_p_yes_spread": spread0, "samples": len(ce)}
    limit = loop.diverge_factor * max(float(np.mean(ce0)), loop.diverge_floor)
    if not (np.isfinite(ce).all() and np.isfinite(p).all()):
        return "the final model's answers are not finite on retain samples", nums
    if float(np.mean(ce)) > limit:
        return (f"the final model's retain answer loss exploded ({np.mean(ce):.3g} > {loop.diverge_factor} x "
                f"{max(float(np.mean(ce0)), loop.diverge_floor):.3g} of the reference)"), nums
    if spread0 > 1e-3 and spread < 0.01 * spread0:
        return (f"the final model's P(Yes) collapsed to a constant on retain samples (spread {spread:.2g} vs "
                f"{spread0:.2g} of the reference)"), nums
    return None, nums


class UnlearnMethod:
    """Base class: subclasses choose the trainable parameters and compute gradients per step.

    Hooks for subclasses (``self.config`` holds the method's config, ``self.loop`` the loop's):
        ``setup(model, original, forget, retain)`` returns the parameters the method may change
        (default: every attention and MLP projection weight). It may set ``self.grad_masks``
        (``{param_name: bool mask}``, names from :func:`recircuit.models.families.projection_params`):
        gradient hooks then zero every entry outside the mask, so those entries stay
        bit-identical under Adam without weight decay.
        ``gradients(model, original, f_batch, r_batch)`` sets ``.grad`` for one step and returns
        the losses to log; it must report the retain-side loss as ``"retain"`` when it has one
        (used by the divergence guard), and bounded GA's share of pushed samples as
        ``"ga_active"`` (used by the idle-GA warning).
        ``teardown`` releases what ``setup`` built; ``extra`` returns method details for the report.
    """

    name = "base"
    config_class: type = MethodConfig
    grad_masks: dict[str, torch.Tensor] | None = None
    #: Exact methods (SISA, APA) retrain shard adapters; their result's ``model`` is a predictor.
    exact: bool = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.loop = LoopConfig()

    def setup(self, model, original, forget, retain) -> list[torch.nn.Parameter]:
        """Return the parameters this method may change (default: every attention/MLP projection)."""
        from recircuit.models.families import projection_params

        return list(projection_params(model).values())

    def gradients(self, model, original, f_batch, r_batch) -> dict[str, float]:
        """Set ``.grad`` on the trainable parameters for one step; return logged losses."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release per-run state (teachers, hooks)."""

    def extra(self) -> dict:
        """Method-specific details for the report (e.g. the grouping)."""
        return {}

    def run(self, model, forget: Sequence[Sample], retain: Sequence[Sample], loop: LoopConfig | None = None,
            reference=None, heldout: Sequence[Sample] | None = None, original=None,
            progress: bool = True) -> UnlearnResult:
        """Unlearn ``forget`` from ``model`` in place, keeping ``retain``.

        Args:
            model: the fine-tuned bridge; its weights are changed in place.
            forget, retain: the deletion request (disjoint, both non-empty).
            loop: the shared budget and guards (:class:`LoopConfig`; defaults when ``None``).
            reference: a frozen copy of the model before unlearning (the NPO reference, the KL
                target, E2URec's remembering teacher and the destruction guard's yardstick);
                made here when not given.
            heldout: samples never trained on, for the early-stopping rule (e.g. the valid split).
            original: alias of ``reference``.
            progress: show a tqdm bar over steps.

        Returns:
            An :class:`UnlearnResult` whose ``model`` is ``model`` and whose ``status`` says
            whether it can be trusted (see the module docstring).

        Raises:
            RequestError: an impossible request (empty forget or retain set, a sample in both, or
                held-out samples that are in either).
        """
        loop = loop if loop is not None else LoopConfig()
        if not isinstance(loop, LoopConfig):
            raise TypeError(f"run() takes a LoopConfig as its loop, got {type(loop).__name__}; a method's own "
                            "settings go to get_method(name, method_config(name, ...)).")
        self.loop = loop
        check_request(forget, retain, heldout=heldout if heldout else None)
        forget, retain = list(forget), list(retain)
        torch.manual_seed(loop.seed)
        rng = np.random.default_rng(loop.seed)
        original = reference if reference is not None else original
        original = original if original is not None else copy_model(model).eval()
        if original is model:
            raise ValueError("The reference model is the model being unlearned; pass a frozen copy (recircuit.models.copy_model).")
        for p in original.parameters():
            p.requires_grad_(False)
        t0 = time.perf_counter()
        for p in model.parameters():
            p.requires_grad_(False)
        self.grad_masks = None
        params = self.setup(model, original, forget, retain)
        for p in params:
            p.requires_grad_(True)
        handles = []
        if self.grad_masks:
            from recircuit.unlearn.masks import attach_grad_masks

            handles = attach_grad_masks(model, self.grad_masks)
        opt = torch.optim.Adam(params, lr=loop.lr, weight_decay=0.0)
        history: list[dict] = []
        stopped, status = "budget", "ok"
        notes: dict = {}
        ga_idle = 0
        heldout_level = p_correct(model, heldout[: loop.eval_samples]) if (heldout and loop.early_stop) else None
        forget_eval = forget[: loop.eval_samples]
        first_retain = None
        good = [p.detach().clone() for p in params]
        bar = tqdm(range(loop.steps), desc=f"unlearn ({self.name})", disable=not progress)
        done = 0
        try:
            for step in bar:
                fi = rng.choice(len(forget), size=min(loop.batch_size, len(forget)), replace=False)
                ri = rng.choice(len(retain), size=min(loop.batch_size, len(retain)), replace=False)
                f_batch, r_batch = [forget[i] for i in fi], [retain[i] for i in ri]
                model.train()
                opt.zero_grad(set_to_none=True)
                with plain_forward(model), plain_forward(original):
                    logs = self.gradients(model, original, f_batch, r_batch)
                bad = [k for k, v in logs.items() if not np.isfinite(v)]
                if not bad and not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
                    bad = ["gradient"]
                r_loss = logs.get("retain")
                if r_loss is not None and first_retain is None and np.isfinite(r_loss):
                    first_retain = max(r_loss, loop.diverge_floor)
                diverged = (r_loss is not None and first_retain is not None and np.isfinite(r_loss)
                            and r_loss > loop.diverge_factor * first_retain)
                if bad or diverged:
                    with torch.no_grad():
                        for p, g in zip(params, good):
                            p.copy_(g)
                    # the weights this step was computed on are suspect: go back one update
                    done = max(step - 1, 0)
                    stopped = (f"non-finite {bad}" if bad else
                               f"retain loss diverged ({r_loss:.3g} > {loop.diverge_factor} x {first_retain:.3g})")
                    stopped += f" at step {step + 1}; restored the weights after step {done}"
                    status = "restored"
                    logger.warning("%s: %s", self.name, stopped, extra={"unlearn_status": status})
                    break
                if logs.get("ga_active", 1.0) == 0.0:
                    ga_idle += 1
                    if ga_idle == 1:
                        logger.warning("%s: step %d: every forget sample's answer loss is already above ga_bound, so "
                                       "bounded gradient ascent has no gradient this step (raise ga_bound to push "
                                       "further)", self.name, step + 1)
                good = [p.detach().clone() for p in params]
                opt.step()
                done = step + 1
                rec = {"step": done, **logs}
                if heldout_level is not None and done % loop.eval_every == 0:
                    model.eval()
                    pf = p_correct(model, forget_eval)
                    rec.update({"forget_p_correct": pf, "heldout_p_correct": heldout_level})
                    if pf <= heldout_level:
                        history.append(rec)
                        stopped = f"forget confidence {pf:.3f} reached held-out level {heldout_level:.3f}"
                        status = "early_stop"
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
        if ga_idle:
            notes["ga_idle_steps"] = ga_idle
            if ga_idle == len(history) and history:
                msg = (f"bounded GA did nothing: on all {ga_idle} steps every forget sample's answer loss was "
                       f"already above ga_bound, so the forget objective had no gradient; raise ga_bound")
                notes["warnings"] = [msg]
                logger.warning("%s: %s", self.name, msg)
        if status in OK_STATUSES and done > 0 and loop.guard_samples > 0:
            reason, nums = destruction_check(model, original, retain[: loop.guard_samples], loop)
            notes["guard"] = nums
            if reason:
                status, stopped = "destroyed", f"{reason} after {done} steps at lr {loop.lr:g}"
                logger.warning("%s: %s", self.name, stopped, extra={"unlearn_status": status})
        return UnlearnResult(self.name, done, time.perf_counter() - t0, history, stopped, {**extra, **notes}, model,
                             status)
