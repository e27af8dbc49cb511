"""Forget rules: the forget-side objectives CURE and PCGrad can use, in a registry.

Usage::

    from recircuit.unlearn.forget_rules import forget_rule, forget_rule_names, register_forget_rule
    forget_rule_names()                       # ['e2urec', 'ga', 'npo']
    rule = forget_rule("npo")
    loss, logs = rule.loss(model, original, batch, cfg, teacher=None)

    @register_forget_rule("my-rule")
    def my_rule(model, original, batch, cfg, teacher):
        ...                                   # return (scalar loss to minimise, {name: float to log})

A rule reads its knobs from ``cfg``, a :class:`ForgetRuleConfig` (the methods' configs inherit
it). ``needs_teacher=True`` rules get E2URec's augmented model (:func:`augmented_model`), built
once per run by the method with :func:`teacher_for`. Built-in rules:

* ``npo``: NPO with the original model as the reference (``npo_beta``);
* ``ga``: bounded gradient ascent (``ga_bound``; logs ``ga_active``, the share of samples it
  still pushes; see :func:`recircuit.unlearn.objectives.ga_loss`);
* ``e2urec``: KL to E2URec's forgetting teacher (``e2urec_alpha``, ``e2urec_aug_steps``,
  ``e2urec_aug_lr``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.loading import copy_model, plain_forward
from recircuit.unlearn.config import MethodConfig
from recircuit.unlearn.objectives import (
    answer_forward,
    e2urec_forget_teacher,
    ga_active_share,
    ga_loss,
    kl_yes_no,
    npo_loss,
)

RuleFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class ForgetRule:
    """A registered forget objective."""

    name: str
    loss: RuleFn
    needs_teacher: bool = False


_RULES: dict[str, ForgetRule] = {}


def register_forget_rule(name: str, needs_teacher: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Decorator registering ``fn(model, original, batch, cfg, teacher) -> (loss, logs)`` as rule ``name``."""

    def deco(fn: RuleFn) -> RuleFn:
        if name in _RULES and _RULES[name].loss.__qualname__ != fn.__qualname__:
            raise ValueError(f"Forget rule {name!r} is already registered; pick another name.")
        _RULES[name] = ForgetRule(name, fn, needs_teacher)
        return fn

    return deco


def forget_rule_names() -> list[str]:
    """Registered forget-rule names, sorted."""
    return sorted(_RULES)


def forget_rule(name: str) -> ForgetRule:
    """The rule registered as ``name``; :class:`InputError` naming the choices otherwise."""
    if name not in _RULES:
        raise InputError(f"unknown forget rule {name!r}", field="forget_rule",
                         fix=f"use one of {', '.join(forget_rule_names())}")
    return _RULES[name]


def _post_init_bases(cfg, cls: type) -> None:
    """Run the ``__post_init__`` checks of the bases after ``cls`` (cooperative config mixins)."""
    post = getattr(super(cls, cfg), "__post_init__", None)
    if post is not None:
        post()


@dataclass
class NPOBetaConfig(MethodConfig):
    """NPO's temperature, shared by the NPO method and the ``npo`` forget rule.

    Attributes:
        npo_beta: NPO temperature.
    """

    npo_beta: float = 0.1

    def __post_init__(self) -> None:
        if not self.npo_beta > 0:
            raise InputError(f"must be positive, got {self.npo_beta}", field="npo_beta")
        _post_init_bases(self, NPOBetaConfig)


@dataclass
class E2URecTeacherConfig(MethodConfig):
    """E2URec's forgetting teacher, shared by the E2URec method and the ``e2urec`` forget rule.

    Attributes:
        e2urec_alpha: strength of E2URec's forgetting teacher.
        e2urec_aug_steps: Adam steps tuning E2URec's augmented model on the forget set.
        e2urec_aug_lr: learning rate of that tuning.
    """

    e2urec_alpha: float = 2.0
    e2urec_aug_steps: int = 10
    e2urec_aug_lr: float = 1e-5

    def __post_init__(self) -> None:
        if self.e2urec_aug_steps < 0:
            raise InputError(f"must be >= 0, got {self.e2urec_aug_steps}", field="e2urec_aug_steps")
        if not self.e2urec_aug_lr > 0:
            raise InputError(f"must be positive, got {self.e2urec_aug_lr}", field="e2urec_aug_lr")
        _post_init_bases(self, E2URecTeacherConfig)


@dataclass
class ForgetRuleConfig(NPOBetaConfig, E2URecTeacherConfig):
    """Knobs of the forget rules, shared by the methods that take one (CURE, PCGrad).

    The ``npo`` rule's ``npo_beta`` comes from :class:`NPOBetaConfig`, the ``e2urec`` rule's
    ``e2urec_*`` fields from :class:`E2URecTeacherConfig` (the NPO and E2URec methods' configs
    inherit the same classes, so each knob is declared and checked once).

    Attributes:
        forget_rule: the forget objective: npo (default), ga (bounded gradient ascent) or e2urec
            (KL to E2URec's forgetting teacher); any registered rule.
        ga_bound: bounded GA stops pushing a sample once its answer CE exceeds this (nats).
        retain_kl: weight of KL(original || model) on retain answers in the retain objective.
    """

    forget_rule: str = "npo"
    ga_bound: float | None = 2.0
    retain_kl: float = 1.0

    def __post_init__(self) -> None:
        forget_rule(self.forget_rule)
        _post_init_bases(self, ForgetRuleConfig)


def augmented_model(original, forget: Sequence[Sample], cfg, loop) -> torch.nn.Module:
    """E2URec's "aug" model: a copy of ``original`` tuned further on the forget set.

    ``cfg.e2urec_aug_steps`` Adam steps (lr ``cfg.e2urec_aug_lr``) of answer CE on forget batches
    of ``loop.batch_size`` seeded by ``loop.seed``; the copy is returned frozen, in eval mode.
    """
    aug = copy_model(original)
    params = [p for n, p in aug.named_parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.e2urec_aug_lr)
    g = torch.Generator().manual_seed(loop.seed)
    aug.train()
    with plain_forward(aug):
        for _ in range(cfg.e2urec_aug_steps):
            idx = torch.randperm(len(forget), generator=g)[: loop.batch_size].tolist()
            ce, _ = answer_forward(aug, [forget[i] for i in idx])
            opt.zero_grad()
            ce.mean().backward()
            opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return aug.eval()


def teacher_for(cfg: ForgetRuleConfig, original, forget: Sequence[Sample], loop) -> torch.nn.Module | None:
    """The teacher ``cfg.forget_rule`` needs: E2URec's augmented model (:func:`augmented_model`), or None.

    Methods that take a forget rule call this once in ``setup`` and pass the result to
    :func:`recircuit.unlearn.methods._common.forget_objective` on every step.
    """
    return augmented_model(original, forget, cfg, loop) if forget_rule(cfg.forget_rule).needs_teacher else None


def e2urec_forget_loss(model, original, aug, batch, alpha: float) -> torch.Tensor:
    """KL(forgetting teacher || model) on the Yes/No answers of ``batch``."""
    with torch.no_grad(), plain_forward(aug):
        _, z_orig = answer_forward(original, batch)
        _, z_aug = answer_forward(aug, batch)
    teacher = e2urec_forget_teacher(z_orig, z_aug, alpha)
    _, z = answer_forward(model, batch)
    return kl_yes_no(z, teacher)


@register_forget_rule("npo")
def npo_rule(model, original, batch, cfg, teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """NPO on the batch with the original model as the reference."""
    ce, _ = answer_forward(model, batch)
    with torch.no_grad():
        ref_ce, _ = answer_forward(original, batch)
    return npo_loss(ce, ref_ce, cfg.npo_beta), {}


@register_forget_rule("ga")
def ga_rule(model, original, batch, cfg, teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Bounded gradient ascent on the batch's answer CE."""
    ce, _ = answer_forward(model, batch)
    return ga_loss(ce, cfg.ga_bound), {"ga_active": ga_active_share(ce, cfg.ga_bound)}


@register_forget_rule("e2urec", needs_teacher=True)
def e2urec_rule(model, original, batch, cfg, teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """KL to E2URec's forgetting teacher (needs the augmented model as ``teacher``)."""
    if teacher is None:
        raise ValueError("The e2urec forget rule needs the augmented model (augmented_model(original, forget, cfg, loop)).")
    return e2urec_forget_loss(model, original, teacher, batch, cfg.e2urec_alpha), {}
