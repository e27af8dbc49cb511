"""CURE: circuit-aware unlearning with group-wise update rules.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    cfg = method_config("cure", forget_rule="npo", grouping={"top_k": 0.2})
    res = get_method("cure", cfg).run(model, forget, retain, LoopConfig(steps=30), heldout=valid[:64])
    res.extra["grouping"]          # modules, scores, thresholds, group and reason per module

    # importance under a catalogue-based corruption, drawn from the samples' own data set
    cfg = method_config("cure", corruption="ppr", corruption_args={"far_fraction": 0.1})
    get_method("cure", cfg, data_source=DataSource("bookcrossing", path="data/bx")).run(...)

    # the reproducible split: per-sample importance of the answer's log-prob, bootstrapped contrast
    cfg = method_config("cure", importance_metric="logprob", corruption="user_swap",
                        grouping={"mode": "contrast", "alpha": 0.05})

Steps: (1) module importance I_f, I_r with the EAP engine (EAP-IG by default, metric
``importance_metric``) on forget and retain samples, computed on the original model (per sample
in contrast mode, :func:`per_sample_module_importance`); (2) grouping (:func:`group_modules`, or
:func:`contrast_grouping` when ``grouping.mode == "contrast"``). A corruption that takes
``donors`` (``user_swap``: each sample's history replaced by a donor user's) gets the retain
samples as donors; (3) one
update per step in which each group follows its own rule, on its own parameter slices
(:func:`group_masks`, GQA rule there):

* forget-specific: the forget objective only (``forget_rule``: NPO by default, bounded GA
  or E2URec's forgetting-teacher KL);
* retain-specific: the retain objective only (answer CE on retain + KL to the original);
* task-shared: both, with gradient surgery: the forget gradient restricted to the task-shared
  slices is projected onto the normal plane of the retain gradient when they conflict (retain
  priority, :func:`project_conflict`), then summed;
* frozen: no gradient (hooks zero it), so bit-identical after the run.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from recircuit.circuits import METHODS, corruption_names
from recircuit.circuits.corruptions import (
    CORRUPTIONS,
    Corruption,
    check_corruption_args,
    corruption_for,
    get_corruption,
)
from recircuit.circuits.metrics import METRICS
from recircuit.data import DataSource
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.families import projection_params
from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.forget_rules import ForgetRuleConfig, teacher_for
from recircuit.unlearn.grouping import Grouping, GroupingConfig, contrast_grouping, group_modules
from recircuit.unlearn.importance import module_importance, per_sample_module_importance
from recircuit.unlearn.masks import active_mask, group_masks
from recircuit.unlearn.methods._common import forget_retain_grads, set_grads
from recircuit.unlearn.pcgrad import project_conflict
from recircuit.unlearn.registry import register


def takes_donors(name: str) -> bool:
    """Whether corruption ``name`` is a factory with a ``donors`` parameter (``user_swap``): CURE
    then passes the retain samples as donors (:meth:`CURE.corruption`)."""
    spec = CORRUPTIONS[name]
    return spec.factory and "donors" in inspect.signature(spec.fn).parameters


def self_contained_corruptions() -> tuple[str, ...]:
    """Corruptions buildable from their name alone (no required data-set context such as titles).

    Without a data source (``CURE(config)``), CURE's importance step builds its corruption with
    ``get_corruption(name, **corruption_args)``, so a corruption whose factory requires ``titles``
    or ``interactions`` (``target_swap``, ``ppr``) needs ``CURE(config, data_source=...)``.
    ``donors`` counts as supplied: CURE passes its retain samples (:func:`takes_donors`).
    """
    def ok(name: str) -> bool:
        spec = CORRUPTIONS[name]
        return not spec.factory or all(p.default is not inspect.Parameter.empty or p.name == "donors"
                                       or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                                       for p in inspect.signature(spec.fn).parameters.values())

    return tuple(n for n in corruption_names() if ok(n))


def require_data_source(method: str, corruption: str, data_source: DataSource | None, given: bool) -> None:
    """Refuse, in one line, a method whose attribution step will need a catalogue-based corruption
    (``target_swap``, ``ppr``, ...) when it has no data source and was given no precomputed result.

    Raises:
        InputError: naming the corruption and the fix.
    """
    if data_source is None and not given and corruption not in self_contained_corruptions():
        raise InputError(f"corruption {corruption!r} draws from the data set's catalogue (titles, interactions), "
                         f"and {method} was given no data source", field="corruption",
                         fix="pass data_source=DataSource(...) (the pipeline and `recircuit unlearn` do), "
                             f"or choose one of {', '.join(self_contained_corruptions())}")


def build_corruption(name: str, args: dict, tokenizer=None, donors: Sequence[Sample] | None = None,
                     data_source: DataSource | None = None) -> Corruption:
    """The corruption an attribution step uses: with ``donors`` for one that takes them
    (:func:`takes_donors`: ``user_swap``), through :func:`corruption_for` with a data source
    (catalogue, ``tokenizer`` for length matching), else ``get_corruption(name, **args)``."""
    if donors and takes_donors(name):
        return get_corruption(name, **{"tokenizer": tokenizer, **args, "donors": list(donors)})
    if data_source is None:
        return get_corruption(name, **args)
    return corruption_for(name, tokenizer, source=data_source, args=args)


@dataclass
class CUREConfig(ForgetRuleConfig):
    """CURE's knobs: the forget rule's (see :class:`ForgetRuleConfig`), the grouping and the EAP run.

    Attributes:
        grouping: how modules are split into groups (top_k, normalize, mode, margin; alpha,
            n_boot, seed in contrast mode).
        importance_method: the EAP method that scores modules.
        importance_metric: the metric it differentiates: logit_diff (the label-signed Yes-No
            logit gap) or logprob (log-probability of the true answer token, minus its
            cross-entropy: what the model memorized). Left out of :meth:`to_dict` at its default.
        importance_steps: its integrated-gradient steps.
        importance_samples: forget and retain samples it scores on (each).
        corruption: the corruption strategy of the EAP run (a registered name; one that needs the
            data set's catalogue, such as ``target_swap`` or ``ppr``, needs the method built with
            ``data_source=``, as the pipeline and ``recircuit unlearn`` do).
        corruption_args: the corruption's own arguments (JSON scalars, e.g. ``{"seed": 1}``; see
            :func:`recircuit.circuits.corruptions.corruption_arg_names`). Left out of
            :meth:`to_dict` when empty.
    """

    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    importance_method: str = "eap-ig-inputs"
    importance_metric: str = "logit_diff"
    importance_steps: int = 3
    importance_samples: int = 16
    corruption: str = "label_flip"
    corruption_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.importance_method not in METHODS:
            raise InputError(f"unknown attribution method {self.importance_method!r}", field="importance_method",
                             fix=f"choose one of {', '.join(METHODS)}")
        if self.importance_metric not in METRICS:
            raise InputError(f"unknown importance metric {self.importance_metric!r}", field="importance_metric",
                             fix=f"choose one of {', '.join(METRICS)}")
        if self.corruption not in corruption_names():
            raise InputError(f"unknown corruption {self.corruption!r}", field="corruption",
                             fix=f"choose one of {', '.join(corruption_names())}")
        self.corruption_args = check_corruption_args(self.corruption, self.corruption_args)
        for name in ("importance_steps", "importance_samples"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)}", field=name)

    def to_dict(self) -> dict:
        """JSON-able form; ``corruption_args`` left out when empty, ``importance_metric`` at its
        default and the grouping's contrast knobs outside contrast mode at theirs
        (:meth:`GroupingConfig.to_dict`), so cache keys of configs without them keep their form."""
        d = super().to_dict()
        if not self.corruption_args:
            del d["corruption_args"]
        if self.importance_metric == "logit_diff":
            del d["importance_metric"]
        d["grouping"] = self.grouping.to_dict()
        return d


@register("cure", CUREConfig)
class CURE(UnlearnMethod):
    """Group-wise unlearning on the forget/retain circuits (see module docstring).

    A precomputed grouping can be passed as ``CURE(grouping=...)`` (it is then reused across runs);
    otherwise module importance is computed with the EAP engine on ``importance_samples`` forget
    and retain samples of the original model, and counts toward the method's wall time.
    """

    def __init__(self, config: CUREConfig | None = None, grouping: Grouping | None = None,
                 data_source: DataSource | None = None) -> None:
        """``data_source``: the data set the forget and retain samples come from, for a corruption
        that draws from its catalogue (without one, only :func:`self_contained_corruptions`).

        Raises:
            InputError: the corruption needs the data set's catalogue, no ``data_source`` is given
                and no ``grouping`` either (so the importance step would need it).
        """
        super().__init__(config)
        self.grouping = grouping
        self.given = grouping is not None
        self.data_source = data_source
        require_data_source("CURE", self.config.corruption, data_source, self.given)

    def corruption(self, tokenizer=None, donors: Sequence[Sample] | None = None) -> Corruption:
        """The importance step's corruption: with :attr:`data_source` through
        :func:`~recircuit.circuits.corruptions.corruption_for` (catalogue, ``tokenizer`` for length
        matching), else ``get_corruption(name, **corruption_args)``. A corruption that takes
        ``donors`` (:func:`takes_donors`: ``user_swap``) given ``donors`` is built with them and the
        config's arguments (:meth:`make_grouping` passes the retain samples); without ``donors`` it
        gets its own default as above.

        Raises:
            InputError: the corruption needs an argument nobody supplies (e.g. required donors).
        """
        cfg = self.config
        return build_corruption(cfg.corruption, cfg.corruption_args, tokenizer, donors, self.data_source)

    def make_grouping(self, model, forget, retain) -> Grouping:
        """Importance on the first ``importance_samples`` forget and retain samples, then the
        configured split (per-sample importance and :func:`contrast_grouping` in contrast mode)."""
        cfg = self.config
        n = cfg.importance_samples
        kw = dict(method=cfg.importance_method, steps=cfg.importance_steps, metric=cfg.importance_metric,
                  corruption=self.corruption(getattr(model, "tokenizer", None), donors=list(retain)),
                  batch_size=self.loop.batch_size, progress=False)
        if cfg.grouping.mode == "contrast":
            names, rows_f = per_sample_module_importance(model, list(forget)[:n], **kw)
            names_r, rows_r = per_sample_module_importance(model, list(retain)[:n], **kw)
            if names_r != names:  # pragma: no cover - one model, one graph
                raise RuntimeError("forget and retain importance came back over different modules")
            return contrast_grouping(names, rows_f, rows_r, cfg.grouping)
        i_f = module_importance(model, list(forget)[:n], **kw)
        i_r = module_importance(model, list(retain)[:n], **kw)
        return group_modules(i_f, i_r, cfg.grouping)

    def resolve_grouping(self, original, forget, retain) -> Grouping:
        """The grouping this run uses (given, or computed on the original model)."""
        return self.grouping if self.given else self.make_grouping(original, forget, retain)

    def setup(self, model, original, forget, retain):
        self.grouping = self.resolve_grouping(original, forget, retain)
        masks = group_masks(model, self.grouping)
        named = projection_params(model)
        active = active_mask(masks)
        self.names = [n for n in named if active[n].any()]
        self.params = [named[n] for n in self.names]
        self.m = {g: [masks[g][n].to(named[n].device) for n in self.names] for g in masks}
        self.grad_masks = {n: active[n] for n in self.names}
        self.aug = teacher_for(self.config, original, forget, self.loop)
        self.conflicts = 0
        self.steps_seen = 0
        return self.params

    def gradients(self, model, original, f_batch, r_batch):
        if not self.params:
            return {"forget": 0.0, "retain": 0.0}
        lf, logs, gf, lr_, gr = forget_retain_grads(model, original, f_batch, r_batch, self.config, self.params,
                                                    self.aug)
        ms = self.m["task_shared"]
        flat_f = torch.cat([g[m] for g, m in zip(gf, ms)])
        flat_r = torch.cat([g[m] for g, m in zip(gr, ms)])
        shared, conflicted = project_conflict(flat_f, flat_r) if flat_f.numel() else (flat_f, False)
        self.conflicts += int(conflicted)
        self.steps_seen += 1
        out, i = [], 0
        for k, (g_f, g_r) in enumerate(zip(gf, gr)):
            g = g_f * self.m["forget_specific"][k] + g_r * self.m["retain_specific"][k]
            n = int(ms[k].sum())
            if n:
                g[ms[k]] = shared[i : i + n]
                i += n
            out.append(g)
        set_grads(self.params, out)
        return {"forget": float(lf.detach()), "retain": float(lr_.detach()), **logs}

    def teardown(self) -> None:
        self.aug = None

    def extra(self):
        g = self.grouping
        return {"grouping": g.to_dict() if g else None, "group_sizes": g.sizes() if g else None,
                "conflicting_steps": getattr(self, "conflicts", 0), "steps": getattr(self, "steps_seen", 0),
                "trainable_parameters": int(sum(int(m.sum()) for m in (self.grad_masks or {}).values()))}
