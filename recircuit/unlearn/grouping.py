"""Group modules into forget-specific, retain-specific, task-shared and frozen (CURE step 2).

Usage::

    from recircuit.unlearn.grouping import GroupingConfig, group_modules
    grouping = group_modules(I_forget, I_retain, GroupingConfig(top_k=0.2))
    grouping.groups["a3.h5"]        # "forget_specific" | "retain_specific" | "task_shared" | "frozen"
    grouping.to_dataframe()         # scores, normalized scores, group and the reason per module

**Normalization.** Raw importances from the forget and retain sets live on different scales
(different samples, different metric gaps), so each is normalized before comparing: ``"share"``
divides by the total (each module's share of its circuit's importance), ``"rank"`` uses the
percentile rank in [0, 1]. In top-k mode both give the same circuits (both are monotone in the raw
score); they differ in ratio mode, where share keeps magnitudes (a module with 3x the forget share
has log-ratio ln 3) and rank only orders. Default: share, since magnitudes are the evidence.

**Top-k mode (default).** C_f and C_r are the top ``top_k`` fraction of modules by each score
(ties at the threshold are all included; modules with zero score never are); forget-specific =
C_f minus C_r, retain-specific = C_r minus C_f, task-shared = C_f and C_r, the rest frozen.
Default ``top_k=0.2``: module importance from EAP is heavy-tailed, so a fifth of the modules
usually carries most of the attribution mass, while the union of the two circuits stays at most
40% of the modules and at least 60% of the network is provably untouched (the locality that
separates CURE from a uniform update). The share of importance each circuit actually covers is
recorded in ``thresholds["coverage_forget"]``/``["coverage_retain"]``, so the choice can be checked
per model; raise ``top_k`` when coverage is low.

**Ratio mode.** A module in C_f or C_r is forget-specific if log(I_f / I_r) > margin,
retain-specific if < -margin, task-shared otherwise. Default ``margin=0.5``: a module must be
about 1.65x (e^0.5) more important to one set than to the other to be given to that set alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recircuit._io import atomic_write_json

GROUPS = ("forget_specific", "retain_specific", "task_shared", "frozen")


@dataclass
class GroupingConfig:
    """How to split modules (see the module docstring).

    Attributes:
        top_k: fraction of modules in each circuit (top-k mode), in (0, 1].
        normalize: how forget and retain importances are made comparable: share or rank.
        mode: topk (set differences of the two circuits) or ratio (log-ratio against margin).
        margin: ratio mode's log-ratio a module needs to belong to one set alone.
    """

    top_k: float = 0.2
    normalize: str = "share"
    mode: str = "topk"
    margin: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= 1:
            raise ValueError(f"top_k is a fraction of modules in (0, 1], got {self.top_k}")
        if self.normalize not in ("share", "rank"):
            raise ValueError(f"normalize must be 'share' or 'rank', got {self.normalize!r}")
        if self.mode not in ("topk", "ratio"):
            raise ValueError(f"mode must be 'topk' or 'ratio', got {self.mode!r}")


def normalize_scores(scores: dict[str, float], how: str = "share") -> dict[str, float]:
    """Share of the total (``share``) or percentile rank in [0, 1] (``rank``)."""
    names = list(scores)
    vals = np.array([max(0.0, float(scores[n])) for n in names])
    if how == "share":
        tot = vals.sum()
        out = vals / tot if tot > 0 else np.zeros_like(vals)
    else:
        order = vals.argsort().argsort()
        out = order / max(1, len(vals) - 1)
    return {n: float(v) for n, v in zip(names, out)}


@dataclass
class Grouping:
    """The grouping with everything needed to show and explain it."""

    groups: dict[str, str]
    forget_scores: dict[str, float]
    retain_scores: dict[str, float]
    forget_norm: dict[str, float]
    retain_norm: dict[str, float]
    thresholds: dict[str, float]
    reasons: dict[str, str]
    config: GroupingConfig = field(default_factory=GroupingConfig)

    def members(self, group: str) -> list[str]:
        """Modules in ``group``."""
        return [m for m, g in self.groups.items() if g == group]

    def sizes(self) -> dict[str, int]:
        """Number of modules per group."""
        return {g: len(self.members(g)) for g in GROUPS}

    def to_dataframe(self) -> pd.DataFrame:
        """One row per module."""
        return pd.DataFrame([{"module": m, "forget": self.forget_scores[m], "retain": self.retain_scores[m],
                              "forget_norm": self.forget_norm[m], "retain_norm": self.retain_norm[m],
                              "group": g, "reason": self.reasons[m]} for m, g in self.groups.items()])

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"groups": self.groups, "forget_scores": self.forget_scores, "retain_scores": self.retain_scores,
                "forget_norm": self.forget_norm, "retain_norm": self.retain_norm, "thresholds": self.thresholds,
                "reasons": self.reasons, "config": asdict(self.config)}

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Grouping:
        """Read a grouping written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        d["config"] = GroupingConfig(**d["config"])
        return cls(**d)


def group_modules(forget: dict[str, float], retain: dict[str, float], config: GroupingConfig | None = None) -> Grouping:
    """Split modules by forget and retain importance (see module docstring)."""
    cfg = config or GroupingConfig()
    if set(forget) != set(retain) or not forget:
        only = sorted(set(forget) ^ set(retain))[:3]
        raise ValueError("Forget and retain importances must cover the same, non-empty set of modules "
                         f"(differing: {only}); compute both with module_importance on the same model.")
    bad = [m for m in forget if not (math.isfinite(forget[m]) and math.isfinite(retain[m]))]
    if bad:
        raise ValueError(f"Non-finite importance for {bad[:3]}; re-run the attribution (check the model for NaNs).")
    fn, rn = normalize_scores(forget, cfg.normalize), normalize_scores(retain, cfg.normalize)
    names = list(forget)
    k = max(1, int(math.ceil(cfg.top_k * len(names))))
    thr_f = sorted(fn.values(), reverse=True)[k - 1]
    thr_r = sorted(rn.values(), reverse=True)[k - 1]
    in_f = {m for m in names if fn[m] >= thr_f and fn[m] > 0}
    in_r = {m for m in names if rn[m] >= thr_r and rn[m] > 0}
    groups, reasons = {}, {}
    eps = 1e-12
    for m in names:
        if m not in in_f and m not in in_r:
            groups[m], reasons[m] = "frozen", f"in neither top-{k} circuit"
            continue
        if cfg.mode == "topk":
            if m in in_f and m in in_r:
                groups[m], reasons[m] = "task_shared", f"in both top-{k} circuits"
            elif m in in_f:
                groups[m], reasons[m] = "forget_specific", f"forget share {fn[m]:.3g} >= {thr_f:.3g}, retain below {thr_r:.3g}"
            else:
                groups[m], reasons[m] = "retain_specific", f"retain share {rn[m]:.3g} >= {thr_r:.3g}, forget below {thr_f:.3g}"
        else:
            ratio = math.log((fn[m] + eps) / (rn[m] + eps))
            if ratio > cfg.margin:
                groups[m], reasons[m] = "forget_specific", f"log(I_f/I_r) = {ratio:.2f} > {cfg.margin}"
            elif ratio < -cfg.margin:
                groups[m], reasons[m] = "retain_specific", f"log(I_f/I_r) = {ratio:.2f} < -{cfg.margin}"
            else:
                groups[m], reasons[m] = "task_shared", f"|log(I_f/I_r)| = {abs(ratio):.2f} <= {cfg.margin}"
    raw_f, raw_r = normalize_scores(forget, "share"), normalize_scores(retain, "share")
    cov_f, cov_r = float(sum(raw_f[m] for m in in_f)), float(sum(raw_r[m] for m in in_r))
    return Grouping(groups, dict(forget), dict(retain), fn, rn,
                    {"forget": thr_f, "retain": thr_r, "margin": cfg.margin, "k": k,
                     "coverage_forget": cov_f, "coverage_retain": cov_r}, reasons, cfg)


def random_grouping(reference: Grouping, seed: int = 0) -> Grouping:
    """Same group sizes as ``reference`` with modules assigned at random (the control).

    Heads are shuffled among heads and MLPs among MLPs, so each group keeps not only its number
    of modules but its number of parameters: the control differs from CURE only in *which*
    modules are chosen.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, str] = {}
    for kind in ("a", "m", ""):
        names = [m for m in reference.groups if (m[:1] == kind if kind else m[:1] not in ("a", "m"))]
        labels = [reference.groups[m] for m in names]
        perm = rng.permutation(len(names))
        groups.update({names[i]: labels[j] for j, i in enumerate(perm)})
    groups = {m: groups[m] for m in reference.groups}
    reasons = {m: f"random assignment (control, seed {seed})" for m in groups}
    return Grouping(groups, reference.forget_scores, reference.retain_scores, reference.forget_norm,
                    reference.retain_norm, dict(reference.thresholds), reasons, reference.config)


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a & b| / |a | b|`` (1.0 when both are empty)."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def grouping_jaccard(groupings: list[Grouping]) -> dict[str, float]:
    """Mean pairwise Jaccard of each group's module set across ``groupings`` (reproducibility).

    Use it across seeds of forget-set sampling, or across corruption strategies: 1.0 means the
    same modules land in the group every time.
    """
    if len(groupings) < 2:
        raise ValueError("Grouping reproducibility needs at least two groupings to compare.")
    out = {}
    for g in GROUPS:
        sets = [set(x.members(g)) for x in groupings]
        pairs = [jaccard(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
        out[g] = float(np.mean(pairs))
    return out
