"""Configs of unlearning: the shared loop, and the base class of every method's own config.

Usage::

    from recircuit.unlearn import LoopConfig, method_config
    loop = LoopConfig(steps=30, lr=1e-5, batch_size=8, seed=0)
    cfg = method_config("cure", forget_rule="npo")          # CUREConfig: only CURE's knobs
    d = cfg.to_dict(); type(cfg).from_dict(d) == cfg       # JSON round trip
    [f.flag for f in config_fields(type(cfg))]              # ['--forget-rule', ..., '--grouping-top-k', ...]

:class:`LoopConfig` is the budget every method gets (steps, learning rate, batches, seed, early
stopping and the divergence/destruction guards). A method's config is a dataclass subclassing
:class:`MethodConfig`; ``bool``/``int``/``float``/``str`` fields (optionally ``| None``) and nested
dataclasses of such fields become ``recircuit unlearn`` flags (``npo_beta`` -> ``--npo-beta``,
``grouping.top_k`` -> ``--grouping-top-k``). Each field's help is its line in the class
docstring's ``Attributes:`` section.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from dataclasses import asdict, dataclass
from typing import Any, Self, TypeVar

from recircuit.errors import InputError


@dataclass
class LoopConfig:
    """The shared update loop: the same budget, batches and guards for every method.

    Attributes:
        steps: optimizer steps (the budget every method gets).
        lr: Adam learning rate (no weight decay, so parameters with zero gradient stay bit-identical).
        batch_size: forget and retain samples per step (the same seeded batches for every method).
        seed: seed of the batch order, random groups and the E2URec augmented model.
        eval_every: steps between early-stopping checks.
        early_stop: stop once forget-set P(correct) falls to the held-out level (needs ``heldout``).
        eval_samples: forget / held-out samples used by the early-stopping check.
        diverge_factor: the retain loss may grow to ``diverge_factor`` times
            ``max(first retain loss, diverge_floor)`` before the run is called diverged; the same
            factor bounds the retain answer loss of the final model against the original's
            (the destruction guard).
        diverge_floor: see ``diverge_factor``.
        guard_samples: retain samples on which the final model is checked against the reference
            (answer loss exploded, or P(Yes) collapsed to a constant); 0 switches the check off.
    """

    steps: int = 30
    lr: float = 1e-5
    batch_size: int = 8
    seed: int = 0
    eval_every: int = 5
    early_stop: bool = True
    eval_samples: int = 64
    diverge_factor: float = 5.0
    diverge_floor: float = 0.1
    guard_samples: int = 8

    def __post_init__(self) -> None:
        for name in ("steps", "eval_samples", "guard_samples"):
            if getattr(self, name) < 0:
                raise InputError(f"must be >= 0, got {getattr(self, name)}", field=name)
        for name in ("batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"must be a positive finite number, got {self.lr}", field="lr")
        if not self.diverge_factor > 1:
            raise InputError(f"must be > 1, got {self.diverge_factor}", field="diverge_factor")

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoopConfig:
        """Inverse of :meth:`to_dict`; an unknown key raises :class:`InputError` naming it."""
        return _from_dict(cls, d, "the unlearning loop")


@dataclass
class MethodConfig:
    """Base class of a method's own config (only that method's knobs; the loop is separate)."""

    def to_dict(self) -> dict:
        """JSON-able form (nested configs as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, method: str | None = None) -> Self:
        """Build from a dict (nested configs may be dicts); an unknown key raises :class:`InputError`."""
        return _from_dict(cls, d, f"method {method!r}" if method else cls.__name__)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type, d: dict, owner: str):
    if not isinstance(d, dict):
        raise InputError(f"{owner} takes a dict of settings, got {type(d).__name__}", field="config")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"unknown setting {unknown[0]!r} for {owner}", field=unknown[0],
                         fix=f"its settings: {', '.join(sorted(names))}")
    hints = _hints(cls)
    kw = {}
    for k, v in d.items():
        sub = _dataclass_of(hints[k])
        kw[k] = _from_dict(sub, v, f"{owner}'s {k}") if sub is not None and isinstance(v, dict) else v
    try:
        return cls(**kw)
    except InputError:
        raise
    except (TypeError, ValueError) as err:
        raise InputError(f"invalid settings for {owner}: {err}", field="config") from err


def _dataclass_of(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


@dataclass(frozen=True)
class ConfigField:
    """One command-line flag derived from a (possibly nested) config field."""

    path: tuple[str, ...]  # e.g. ("grouping", "top_k")
    type: type  # bool, int, float or str
    optional: bool  # the field accepts None (``--flag none``)
    default: Any
    help: str

    @property
    def flag(self) -> str:
        """``--grouping-top-k`` for ``("grouping", "top_k")``."""
        return "--" + "-".join(self.path).replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination (``grouping__top_k``)."""
        return "__".join(self.path)


def _field_help(cls: type) -> dict[str, str]:
    """Each field's help from the ``Attributes:`` sections of the class and its bases (nearest wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(_doc_attributes(klass.__dict__.get("__doc__") or ""))
    return out


def _doc_attributes(doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    doc = inspect.cleandoc(doc)
    if "Attributes:" not in doc:
        return out
    current = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^ {4}(\w+(?:, \w+)*):\s*(.*)$", line)
        if m:
            current = m.group(1).split(", ")
            for n in current:
                out[n] = m.group(2).strip()
        elif current and line.strip():
            for n in current:
                out[n] += " " + line.strip()
        elif not line.strip() and out:
            current = None
    return out


def config_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[ConfigField]:
    """The flag-able fields of a config dataclass, nested dataclass fields flattened with a prefix."""
    hints, helps, out = _hints(cls), _field_help(cls), []
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = _dataclass_of(tp)
        if sub is not None:
            out += config_fields(sub, prefix + (f.name,))
            continue
        args = typing.get_args(tp)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), tp) if args else tp
        if base not in (bool, int, float, str):
            continue
        out.append(ConfigField(prefix + (f.name,), base, optional, getattr(defaults, f.name), helps.get(f.name, "")))
    return out


_C = TypeVar("_C")


def from_flat(cls: type[_C], flat: dict[tuple[str, ...], Any], owner: str) -> _C:
    """Build ``cls`` from ``{field path: value}`` (as :func:`config_fields` names them)."""
    nested: dict = {}
    for path, v in flat.items():
        d = nested
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = v
    return _from_dict(cls, nested, owner)
