"""Random-neuron CLUE: CLUE's update rules on random nodes of the same kinds and counts (the control).

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    res = get_method("clue-random", method_config("clue-random")).run(model, forget, retain, LoopConfig())

If CLUE beats this control, the localization (not just how many neurons and heads move, or the
two update rules) matters. The counts come from the real localization (computed as CLUE does, or
passed as ``localization=``): as many random neurons and heads as CLUE's forget nodes get the
forget rule, as many as its conflict nodes the combined rule, the two sets disjoint, drawn over
the whole model and seeded by the loop's ``seed``.
"""

from __future__ import annotations

import dataclasses
import random

from recircuit.circuits.logic import Localization
from recircuit.unlearn.methods.clue import CLUE, CLUEConfig
from recircuit.unlearn.registry import register


def random_localization(loc: Localization, n_layers: int, d_mlp: int, n_heads: int, seed: int = 0) -> Localization:
    """``loc`` with its forget and conflict nodes replaced by random nodes of the same kinds and
    counts (disjoint, without replacement, seeded)."""
    rng = random.Random(seed)
    pools = {"neuron": [("neuron", layer, i) for layer in range(n_layers) for i in range(d_mlp)],
             "head": [("head", layer, h) for layer in range(n_layers) for h in range(n_heads)]}
    out: dict[str, list] = {"forget_nodes": [], "conflict_nodes": []}
    for kind, pool in pools.items():
        want = {g: sum(1 for v in getattr(loc, g) if v[0] == kind) for g in out}
        drawn = rng.sample(pool, min(len(pool), sum(want.values())))
        out["forget_nodes"] += drawn[: want["forget_nodes"]]
        out["conflict_nodes"] += drawn[want["forget_nodes"]:]
    return dataclasses.replace(loc, **out)


@register("clue-random", CLUEConfig)
class RandomNeuronsCLUE(CLUE):
    """CLUE's update rules on random neurons and heads with CLUE's counts."""

    def resolve_localization(self, model, original, forget, retain) -> Localization:
        ref = super().resolve_localization(model, original, forget, retain)
        cfg = model.cfg
        return random_localization(ref, cfg.n_layers, cfg.d_mlp, cfg.n_heads, seed=self.loop.seed)
