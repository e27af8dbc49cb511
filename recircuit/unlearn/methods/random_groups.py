"""Random-groups CURE: the same group sizes as CURE with modules assigned at random (the control).

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    res = get_method("cure-random", method_config("cure-random")).run(model, forget, retain, LoopConfig())

If CURE beats this control, the circuits (not just the group sizes or the update rules) matter.
The sizes come from the real grouping (computed as CURE does, or passed as ``grouping=``); the
assignment is seeded by the loop's ``seed``. It takes CURE's config (:class:`CUREConfig`), so any
grouping mode (contrast mode included) and importance metric give the sizes; the shuffled grouping
keeps the real one's scores and contrast columns for display, its reasons say "random".
"""

from __future__ import annotations

from recircuit.unlearn.grouping import random_grouping
from recircuit.unlearn.methods.cure import CURE, CUREConfig
from recircuit.unlearn.registry import register


@register("cure-random", CUREConfig)
class RandomGroupsCURE(CURE):
    """CURE's update rules on a random grouping with CURE's group sizes."""

    def resolve_grouping(self, original, forget, retain):
        ref = super().resolve_grouping(original, forget, retain)
        return random_grouping(ref, seed=self.loop.seed)
