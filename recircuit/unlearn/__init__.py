"""Circuit-aware unlearning (CURE) and baselines behind one interface.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config, available_methods
    available_methods()      # ['apa', 'cure', 'cure-random', 'e2urec', ..., 'retrain', 'sisa']
    loop = LoopConfig(steps=30, lr=1e-5, batch_size=8, seed=0)     # the budget every method gets
    cfg = method_config("cure", forget_rule="npo")                  # CUREConfig: only CURE's knobs
    res = get_method("cure", cfg).run(model, request.forget, request.retain, loop, heldout=split.valid[:64])
    res.status               # "ok" | "early_stop" | "restored" | "destroyed"; res.check() raises RunFailed
    res.extra["grouping"]    # the module groups, scores, thresholds and reasons

    # a reproducible split: bootstrapped forget-minus-retain contrast, checked on resamples
    cfg = method_config("cure", grouping={"mode": "contrast"}, importance_metric="logprob")
    split_reproducibility(resample_groupings(model, request.forget, request.retain, cfg, n_resamples=3))

Layout: :mod:`~recircuit.unlearn.registry` (the leaf name -> (method, config) table),
:mod:`~recircuit.unlearn.config` (:class:`LoopConfig`, :class:`MethodConfig`, CLI flags from
fields), :mod:`~recircuit.unlearn.base` (the method interface, the shared loop and its guards),
:mod:`~recircuit.unlearn.objectives` (losses), :mod:`~recircuit.unlearn.forget_rules` (the
forget-rule registry), :mod:`~recircuit.unlearn.methods` (one file per method; importing it
registers them), :mod:`~recircuit.unlearn.importance` and :mod:`~recircuit.unlearn.grouping`
(CURE's module importance and split), :mod:`~recircuit.unlearn.reproducibility` (the split on
resamples).

**How to add a method.** Write one file ``recircuit/unlearn/methods/mine.py``::

    from dataclasses import dataclass
    from recircuit.unlearn.base import UnlearnMethod
    from recircuit.unlearn.config import MethodConfig
    from recircuit.unlearn.objectives import answer_forward
    from recircuit.unlearn.registry import register

    @dataclass
    class MineConfig(MethodConfig):
        \"\"\"Mine's knobs.

        Attributes:
            weight: how hard to push (this line is the ``--weight`` flag's help).
        \"\"\"
        weight: float = 1.0

    @register("mine", MineConfig)
    class Mine(UnlearnMethod):
        def gradients(self, model, original, f_batch, r_batch):   # self.config: MineConfig
            ce, _ = answer_forward(model, f_batch)
            loss = -self.config.weight * ce.mean()
            loss.backward()
            return {"forget": float(loss.detach())}     # report a retain loss as "retain"

and import it in ``recircuit/unlearn/methods/__init__.py``. ``setup`` (which parameters move;
default: every attention/MLP projection) and ``teardown``/``extra`` are optional. The method then
runs under the shared loop and guards, and ``recircuit unlearn --method mine --weight 2`` works:
the flags come from the config's ``bool``/``int``/``float``/``str`` fields (nested dataclasses as
``--<field>-<subfield>``). A forget objective that CURE/PCGrad should offer is a function
registered with :func:`~recircuit.unlearn.forget_rules.register_forget_rule`.
"""

from recircuit.data.requests import RequestError, check_request
from recircuit.unlearn import methods  # noqa: F401  (registers the built-in methods)
from recircuit.unlearn.base import (
    OK_STATUSES,
    UnlearnMethod,
    UnlearnResult,
    destruction_check,
)
from recircuit.unlearn.config import LoopConfig, MethodConfig, config_fields
from recircuit.unlearn.forget_rules import (
    ForgetRuleConfig,
    forget_rule,
    forget_rule_names,
    register_forget_rule,
)
from recircuit.unlearn.grouping import (
    GROUPS,
    Grouping,
    GroupingConfig,
    contrast_grouping,
    group_modules,
    grouping_jaccard,
    random_grouping,
)
from recircuit.unlearn.importance import module_importance, per_sample_module_importance
from recircuit.unlearn.masks import group_masks
from recircuit.unlearn.pcgrad import project_conflict
from recircuit.unlearn.registry import (
    available_methods,
    config_class,
    get_method,
    method_config,
    register,
)
from recircuit.unlearn.reproducibility import resample_groupings, split_reproducibility

__all__ = [
    "GROUPS",
    "OK_STATUSES",
    "ForgetRuleConfig",
    "Grouping",
    "GroupingConfig",
    "LoopConfig",
    "MethodConfig",
    "RequestError",
    "UnlearnMethod",
    "UnlearnResult",
    "available_methods",
    "check_request",
    "config_class",
    "config_fields",
    "contrast_grouping",
    "destruction_check",
    "forget_rule",
    "forget_rule_names",
    "get_method",
    "group_masks",
    "group_modules",
    "grouping_jaccard",
    "method_config",
    "module_importance",
    "per_sample_module_importance",
    "project_conflict",
    "random_grouping",
    "register",
    "register_forget_rule",
    "resample_groupings",
    "split_reproducibility",
]
