"""Circuit-aware unlearning (CURE) and baselines behind one interface.

Usage::

    from recircuit.unlearn import get_method, available_methods, UnlearnConfig
    available_methods()      # ['cure', 'cure-random', 'e2urec', 'ga', 'graddiff', 'npo', 'pcgrad', 'retrain']
    res = get_method("cure").run(model, request.forget, request.retain, UnlearnConfig(steps=30),
                                 heldout=split.valid[:64])
    res.extra["grouping"]    # the module groups, scores, thresholds and reasons
"""

from recircuit.unlearn.base import (
    UnlearnConfig,
    UnlearningError,
    UnlearnMethod,
    UnlearnResult,
    available_methods,
    check_request,
    get_method,
    register,
)
from recircuit.unlearn.grouping import (
    GROUPS,
    Grouping,
    GroupingConfig,
    group_modules,
    random_grouping,
)
from recircuit.unlearn.masks import group_masks, module_params
from recircuit.unlearn.pcgrad import project_conflict

__all__ = [
    "GROUPS",
    "Grouping",
    "GroupingConfig",
    "UnlearnConfig",
    "UnlearnMethod",
    "UnlearnResult",
    "UnlearningError",
    "available_methods",
    "check_request",
    "get_method",
    "group_masks",
    "group_modules",
    "module_params",
    "project_conflict",
    "random_grouping",
    "register",
]
