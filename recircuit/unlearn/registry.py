"""The unlearning-method registry: name -> (method class, config class). A leaf module.

Usage::

    from recircuit.unlearn import get_method, method_config, available_methods
    available_methods()                          # ['cure', 'cure-random', 'e2urec', 'ga', ...]
    cfg = method_config("cure", forget_rule="ga", npo_beta=0.2)   # CUREConfig(...)
    method = get_method("cure", cfg)             # a CURE instance holding cfg
    get_method("ga")                             # GA with its default GAConfig
    method_config("cure:logit", importance_metric="logit_diff")   # a named variant of CURE

A **variant** ``"<method>:<label>"`` is the registered method under another name, so one grid
can compare two settings of the same method (``cure`` and ``cure:logit``); the label is
``[A-Za-z0-9_.-]+``.

Registration happens where a method is defined, with ``@register("name", ConfigClass)``; the
built-ins are registered by importing :mod:`recircuit.unlearn.methods` (which
``recircuit.unlearn`` does). This module imports nothing else from :mod:`recircuit.unlearn`, so
every method file can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recircuit.errors import InputError

#: name -> (method class, config class)
_METHODS: dict[str, tuple[type, type]] = {}


def register(name: str, config_class: type) -> Callable[[type], type]:
    """Class decorator adding an unlearning method and its config dataclass under ``name``.

    Args:
        name: the name users pass to :func:`get_method` and ``recircuit unlearn --method``.
        config_class: the method's config dataclass (a
            :class:`~recircuit.unlearn.config.MethodConfig` subclass holding only its knobs).

    Raises:
        ValueError: ``name`` is already taken by another class.
    """

    def deco(cls: type) -> type:
        old = _METHODS.get(name)
        if old is not None and old[0].__qualname__ != cls.__qualname__:
            raise ValueError(f"Unlearning method name {name!r} is already taken by {old[0].__qualname__}; "
                             "pick another name.")
        cls.name = name
        cls.config_class = config_class
        _METHODS[name] = (cls, config_class)
        return cls

    return deco


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def base_method(name: str) -> str:
    """The registered method a name stands for: ``"cure:logit"`` -> ``"cure"`` (see the module docstring).

    Raises:
        InputError: a variant with an empty or ill-formed label.
    """
    if not isinstance(name, str) or ":" not in name:
        return name
    base, label = name.split(":", 1)
    if not label or not all(c.isalnum() or c in "_.-" for c in label):
        raise InputError(f"ill-formed method variant {name!r}", field="method",
                         fix="write <method>:<label> with a label of letters, digits, '_', '.' or '-'")
    return base


def method_entry(name: str) -> tuple[type, type]:
    """``(method class, config class)`` of ``name`` (a registered name or a variant of one).

    Raises:
        InputError: ``name`` is not registered (the message lists the registered names).
    """
    name = base_method(name)
    if name not in _METHODS:
        raise InputError(f"unknown unlearning method {name!r}", field="method",
                         fix=f"available: {', '.join(available_methods())}")
    return _METHODS[name]


def config_class(name: str) -> type:
    """The config dataclass of method ``name``."""
    return method_entry(name)[1]


# The return annotations name recircuit.unlearn classes without importing them (this module is a
# leaf, checked by import-linter, which counts TYPE_CHECKING imports too).
def method_config(name: str, **settings: Any) -> MethodConfig:  # noqa: F821
    """Method ``name``'s config with ``settings`` over its defaults.

    Nested configs (e.g. CURE's ``grouping``) may be given as dicts.

    Raises:
        InputError: an unknown method, or a setting the method does not have (named, with the
            method's settings listed).
    """
    return config_class(name).from_dict(settings, method=name)


def get_method(name: str, config: MethodConfig | dict | None = None,  # noqa: F821
               **kwargs: Any) -> UnlearnMethod:  # noqa: F821
    """An instance of method ``name`` holding ``config`` (its default config when ``None``).

    Args:
        name: a registered name (see :func:`available_methods`).
        config: an instance of the method's config class (see :func:`method_config`) or a dict
            of its settings.
        **kwargs: passed to the method's constructor (e.g. ``grouping=`` for CURE,
            ``model_spec=`` for Retrain).

    Raises:
        InputError: unknown method, unknown setting, or a config of another method's class.
    """
    cls, cfg_cls = method_entry(name)
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        config = cfg_cls.from_dict(config, method=name)
    elif not isinstance(config, cfg_cls):
        raise InputError(f"method {name!r} takes a {cfg_cls.__name__}, got {type(config).__name__}",
                         field="config", fix=f"build it with method_config({name!r}, ...)")
    return cls(config, **kwargs)
