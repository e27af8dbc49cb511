"""Is CURE's module split reproducible? Groupings on independent resamples, and their agreement.

Usage::

    from recircuit.unlearn import method_config
    from recircuit.unlearn.reproducibility import resample_groupings, split_reproducibility
    cfg = method_config("cure", importance_samples=16, grouping={"mode": "contrast"})
    groupings = resample_groupings(model, request.forget, request.retain, cfg, n_resamples=3, seed=0)
    split_reproducibility(groupings)
    # {"forget_specific": 0.61, ..., "forget_specific/0-1": 0.58, "forget_specific/0-2": ...}

Each resample ``r`` draws ``importance_samples`` forget and ``importance_samples`` retain samples
(disjoint across resamples where the sets are large enough, else a seeded random choice per
resample), builds the corruption with seed ``seed + r`` when it takes one, and computes the
grouping exactly as CURE does (:meth:`CURE.make_grouping`, with every retain sample available as
a donor for ``user_swap``). The grouping's own knobs (including the contrast bootstrap seed) are
the config's. Agreement is :func:`recircuit.unlearn.grouping.grouping_jaccard`: 1.0 means the
same modules land in a group every time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from recircuit.circuits.corruptions import corruption_arg_names
from recircuit.data import DataSource
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.unlearn.config import LoopConfig
from recircuit.unlearn.grouping import GROUPS, Grouping, grouping_jaccard, jaccard
from recircuit.unlearn.methods.cure import CURE, CUREConfig

logger = logging.getLogger(__name__)


def resample_indices(n_items: int, n_draw: int, n_resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_resamples`` index sets of ``min(n_draw, n_items)`` items each: disjoint (one permutation cut
    into blocks) when ``n_items >= n_draw * n_resamples``, else an independent seeded choice per resample."""
    k = min(n_draw, n_items)
    if n_items >= n_draw * n_resamples:
        perm = rng.permutation(n_items)
        return [perm[r * k:(r + 1) * k] for r in range(n_resamples)]
    return [rng.choice(n_items, size=k, replace=False) for _ in range(n_resamples)]


def resample_groupings(model, forget: Sequence[Sample], retain: Sequence[Sample], config: CUREConfig,
                       n_resamples: int = 3, seed: int = 0, data_source: DataSource | None = None,
                       progress: bool = False, batch_size: int = 8) -> list[Grouping]:
    """CURE's grouping on ``n_resamples`` resamples of the forget and retain sets (see the module docstring).

    Args:
        model: the original (not yet unlearned) model.
        forget: the forget samples to draw from.
        retain: the retain samples to draw from (all of them are the donors of ``user_swap``).
        config: CURE's config (``importance_samples`` per set and resample; its grouping).
        n_resamples: how many groupings.
        seed: seed of the draws; resample ``r``'s corruption gets seed ``seed + r`` when it takes one.
        data_source: the data set, for a corruption that draws from its catalogue (as for CURE).
        progress: a progress bar over resamples.
        batch_size: attribution batch size.

    Returns:
        One :class:`Grouping` per resample, over the same modules; ``thresholds["resample_index"]`` is
        its index and ``thresholds["resample_disjoint"]`` (1.0 or 0.0) whether the forget and retain
        draws were disjoint across resamples.

    Raises:
        InputError: fewer than one resample, or no forget or retain samples.
    """
    if n_resamples < 1:
        raise InputError(f"must be >= 1, got {n_resamples}", field="n_resamples", fix="pass e.g. 3")
    if not forget or not retain:
        raise InputError("resampling needs forget and retain samples", field="forget" if not forget else "retain",
                         fix="pass a deletion request with both sides non-empty")
    forget, retain = list(forget), list(retain)
    n = config.importance_samples
    rng = np.random.default_rng(seed)
    idx_f = resample_indices(len(forget), n, n_resamples, rng)
    idx_r = resample_indices(len(retain), n, n_resamples, rng)
    disjoint = {"forget": len(forget) >= n * n_resamples, "retain": len(retain) >= n * n_resamples}
    for which, ok in disjoint.items():
        if not ok and n_resamples > 1:
            logger.warning("resample_groupings: %d %s samples are fewer than %d resamples x %d, so the resamples "
                           "share samples and their agreement overstates reproducibility", len(forget if which ==
                           "forget" else retain), which, n_resamples, n)
    seeded = "seed" in corruption_arg_names(config.corruption)
    out = []
    for r in tqdm(range(n_resamples), desc="grouping resamples", disable=not progress):
        cfg = config
        if seeded:
            cfg = dataclasses.replace(config, corruption_args={**config.corruption_args, "seed": seed + r})
        method = CURE(cfg, data_source=data_source)
        method.loop = LoopConfig(batch_size=batch_size)
        chosen = set(idx_r[r].tolist())
        # the drawn retain samples first (the ones scored), then the rest (donors only)
        retain_r = [retain[i] for i in idx_r[r]] + [s for i, s in enumerate(retain) if i not in chosen]
        g = method.make_grouping(model, [forget[i] for i in idx_f[r]], retain_r)
        g.thresholds["resample_index"] = float(r)
        g.thresholds["resample_disjoint"] = float(disjoint["forget"] and disjoint["retain"])
        out.append(g)
    return out


def split_reproducibility(groupings: Sequence[Grouping]) -> dict[str, float]:
    """Per group, the mean pairwise Jaccard of its module sets (:func:`grouping_jaccard`), plus
    each pair's value as ``"<group>/<i>-<j>"``, and ``"disjoint"`` (1.0 when the groupings came
    from :func:`resample_groupings` on disjoint forget and retain draws, 0.0 when the draws shared
    samples, which makes the agreement overstate reproducibility; absent for other groupings).

    Raises:
        ValueError: fewer than two groupings, or groupings over different modules.
    """
    groupings = list(groupings)
    if len(groupings) >= 2 and any(set(g.groups) != set(groupings[0].groups) for g in groupings[1:]):
        raise ValueError("The groupings cover different modules; compare groupings of the same model.")
    out = grouping_jaccard(groupings)
    for g in GROUPS:
        sets = [set(x.members(g)) for x in groupings]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                out[f"{g}/{i}-{j}"] = jaccard(sets[i], sets[j])
    marks = [x.thresholds.get("resample_disjoint") for x in groupings]
    if marks and all(m is not None for m in marks):
        out["disjoint"] = float(all(m == 1.0 for m in marks))
    return out


__all__ = ["resample_groupings", "resample_indices", "split_reproducibility"]
