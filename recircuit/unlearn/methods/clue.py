"""CLUE: conflict-guided localization of neurons through a Boolean view of forget and retain circuits.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    cfg = method_config("clue", threshold=0.02, node_method="eap", forget_rule="npo")
    res = get_method("clue", cfg).run(model, forget, retain, LoopConfig(steps=30), heldout=valid[:64])
    res.extra["localization"]   # forget nodes, conflict nodes, satisfiable, core

Steps: (1) node scores of every MLP neuron and attention head in both directions
(:func:`recircuit.circuits.neurons.node_attribution`) on ``node_samples`` forget samples and as
many retain samples, on the original model; (2) each set of scores becomes a two-level Boolean
circuit (necessary nodes as AND inputs, sufficient ones as OR inputs) and a SAT solver reads the
forget circuit's output False and the retain circuit's True as three groups
(:func:`recircuit.circuits.logic.localize`); (3) one update per step:

* forget nodes: the forget objective only (``forget_rule``: NPO by default);
* conflict nodes (in the forget circuit, but the retain output needs them): the forget objective
  plus ``retain_weight`` times the retain objective (answer CE on retain + KL to the original);
* everything else: no gradient, bit-identical after the run.

A K/V slice shared by a forget head and a conflict head gets the conflict rule. When the SAT
formula is unsatisfiable (every way to break the forget output goes through a node the retain
output needs), every forget-circuit node is a conflict node and the report carries the minimal
core (``res.extra["localization"]["core"]``).

CLUE (Zodiark-ch/CLUE, ICLR 2026) finds its circuits by edge pruning and reads them with a
hand-written validator; recircuit scores nodes with its EAP engine and solves with python-sat
(see :mod:`recircuit.circuits.logic` for the gate rule and what differs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from recircuit.circuits.corruptions import check_corruption_args
from recircuit.circuits.logic import BooleanCircuit, Localization, LogicConfig, localize
from recircuit.circuits.metrics import METRICS
from recircuit.circuits.neurons import METHODS as NODE_METHODS
from recircuit.circuits.neurons import NodeAttributionConfig, node_attribution
from recircuit.data import DataSource
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.families import projection_params
from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.forget_rules import ForgetRuleConfig, teacher_for
from recircuit.unlearn.masks import node_masks
from recircuit.unlearn.methods._common import forget_retain_grads, set_grads
from recircuit.unlearn.methods.cure import build_corruption, require_data_source
from recircuit.unlearn.registry import register


@dataclass
class CLUEConfig(ForgetRuleConfig):
    """CLUE's knobs: the forget rule's (see :class:`ForgetRuleConfig`), node attribution and the gate rule.

    Attributes:
        node_method: the node attribution estimator (``eap`` or ``eap-ig``).
        node_steps: EAP-IG's steps.
        node_samples: forget and retain samples it scores on (each).
        metric: the metric differentiated (``logit_diff``, ``logprob``, ``yes_logit_diff``).
        corruption: the corruption of the attribution run (a registered name; catalogue-based ones
            need ``data_source=``, as for CURE).
        corruption_args: the corruption's own arguments.
        threshold: a node joins a circuit when its necessity or sufficiency reaches this fraction
            of the metric gap (:class:`~recircuit.circuits.logic.LogicConfig`).
        max_nodes: at most this many nodes per circuit.
        retain_weight: weight of the retain objective in the conflict nodes' combined update.
    """

    node_method: str = "eap"
    node_steps: int = 3
    node_samples: int = 16
    metric: str = "logit_diff"
    corruption: str = "label_flip"
    corruption_args: dict = field(default_factory=dict)
    threshold: float = 0.02
    max_nodes: int = 256
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.node_method not in NODE_METHODS:
            raise InputError(f"unknown node attribution method {self.node_method!r}", field="node_method",
                             fix=f"choose one of {', '.join(NODE_METHODS)}")
        if self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}", field="metric", fix=f"choose one of {', '.join(METRICS)}")
        self.corruption_args = check_corruption_args(self.corruption, self.corruption_args)
        for name in ("node_steps", "node_samples", "max_nodes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"must be a whole number >= 1, got {v!r}", field=name)
        if not math.isfinite(self.retain_weight) or self.retain_weight < 0:
            raise InputError(f"must be a finite number >= 0, got {self.retain_weight}", field="retain_weight")
        self.logic()

    def logic(self) -> LogicConfig:
        """The gate rule's settings."""
        return LogicConfig(threshold=self.threshold, max_nodes=self.max_nodes)

    def to_dict(self) -> dict:
        """JSON-able form (``corruption_args`` left out when empty)."""
        d = super().to_dict()
        if not self.corruption_args:
            del d["corruption_args"]
        return d


@register("clue", CLUEConfig)
class CLUE(UnlearnMethod):
    """Neuron-level unlearning on the SAT reading of forget and retain circuits (see module docstring).

    A precomputed :class:`~recircuit.circuits.logic.Localization` can be passed as
    ``CLUE(localization=...)``; otherwise it is computed on the original model and counts toward
    the method's wall time.
    """

    def __init__(self, config: CLUEConfig | None = None, localization: Localization | None = None,
                 data_source: DataSource | None = None) -> None:
        super().__init__(config)
        self.localization = localization
        self.given = localization is not None
        self.data_source = data_source
        require_data_source("CLUE", self.config.corruption, data_source, self.given)

    def _corrupt(self, model, samples: Sequence[Sample], donors: Sequence[Sample]) -> list[Sample]:
        cfg = self.config
        return build_corruption(cfg.corruption, cfg.corruption_args, getattr(model, "tokenizer", None), donors,
                                self.data_source)(list(samples))

    def localize(self, original, forget: Sequence[Sample], retain: Sequence[Sample]) -> Localization:
        """Node scores on forget and retain samples, their Boolean circuits, and the SAT reading."""
        cfg = self.config
        n = cfg.node_samples
        acfg = NodeAttributionConfig(method=cfg.node_method, steps=cfg.node_steps, metric=cfg.metric,
                                     batch_size=self.loop.batch_size, align="left", progress=False)
        f, r = list(forget)[:n], list(retain)[:n]
        scores_f = node_attribution(original, f, self._corrupt(original, f, retain), acfg)
        scores_r = node_attribution(original, r, self._corrupt(original, r, retain), acfg)
        self.circuits = (BooleanCircuit.from_scores("forget", scores_f, cfg.logic()),
                         BooleanCircuit.from_scores("retain", scores_r, cfg.logic()))
        return localize(self.circuits[0], [self.circuits[1]])

    def resolve_localization(self, model, original, forget, retain) -> Localization:
        """The localization this run uses (given, or computed on the original model)."""
        return self.localization if self.given else self.localize(original, forget, retain)

    def setup(self, model, original, forget, retain):
        self.circuits = None
        self.localization = loc = self.resolve_localization(model, original, forget, retain)
        named = projection_params(model)
        m_conf = node_masks(model, loc.conflict_nodes)
        m_forget = {k: v & ~m_conf[k] for k, v in node_masks(model, loc.forget_nodes).items()}
        self.names = [k for k in named if bool(m_forget[k].any() or m_conf[k].any())]
        self.params = [named[k] for k in self.names]
        self.m_forget = [m_forget[k].to(named[k].device) for k in self.names]
        self.m_conf = [m_conf[k].to(named[k].device) for k in self.names]
        self.grad_masks = {k: m_forget[k] | m_conf[k] for k in self.names}
        self.aug = teacher_for(self.config, original, forget, self.loop)
        return self.params

    def gradients(self, model, original, f_batch, r_batch):
        if not self.params:
            return {"forget": 0.0, "retain": 0.0}
        lf, logs, gf, lr_, gr = forget_retain_grads(model, original, f_batch, r_batch, self.config, self.params,
                                                    self.aug)
        w = self.config.retain_weight
        set_grads(self.params, [g_f * mf + (g_f + w * g_r) * mc
                                for g_f, g_r, mf, mc in zip(gf, gr, self.m_forget, self.m_conf)])
        return {"forget": float(lf.detach()), "retain": float(lr_.detach()), **logs}

    def teardown(self) -> None:
        self.aug = None

    def extra(self):
        loc = self.localization
        out = {"localization": loc.to_dict() if loc else None,
               "trainable_parameters": int(sum(int(m.sum()) for m in (self.grad_masks or {}).values()))}
        if getattr(self, "circuits", None):
            out["circuit_sizes"] = {c.name: {"and": len(c.and_nodes), "or": len(c.or_nodes), "metric_gap": c.gap}
                                    for c in self.circuits}
        return out
