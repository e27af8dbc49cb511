"""Random-groups CURE: the same group sizes as CURE with modules assigned at random (the control).

Usage::

    from recircuit.unlearn import get_method
    res = get_method("cure-random").run(model, forget, retain, config)

If CURE beats this control, the circuits (not just the group sizes or the update rules) matter.
The sizes come from the real grouping (computed as CURE does, or passed as ``grouping=``); the
assignment is seeded by ``config.seed``.
"""

from __future__ import annotations

from recircuit.unlearn.base import register
from recircuit.unlearn.grouping import random_grouping
from recircuit.unlearn.methods.cure import CURE


@register("cure-random")
class RandomGroupsCURE(CURE):
    """CURE's update rules on a random grouping with CURE's group sizes."""

    def resolve_grouping(self, original, forget, retain, config):
        ref = super().resolve_grouping(original, forget, retain, config)
        return random_grouping(ref, seed=config.seed)
