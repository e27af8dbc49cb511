"""Group modules into forget-specific, retain-specific, task-shared and frozen (CURE step 2).

Usage::

    from recircuit.unlearn.grouping import GroupingConfig, group_modules
    grouping = group_modules(I_forget, I_retain, GroupingConfig(top_k=0.2))
    grouping.groups["a3.h5"]        # "forget_specific" | "retain_specific" | "task_shared" | "frozen"
    grouping.to_dataframe()         # scores, normalized scores, group and the reason per module

    # contrast mode: per-sample importance rows (recircuit.unlearn.importance.per_sample_module_importance)
    grouping = contrast_grouping(names, F, R, GroupingConfig(mode="contrast", alpha=0.05))
    grouping.contrast["a3.h5"], grouping.contrast_low["a3.h5"], grouping.contrast_high["a3.h5"]
    grouping.p_forget["a3.h5"], grouping.thresholds["bh_threshold"]   # permutation p-value, BH cut

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

**Per kind** (``per_kind=True``, top-k and ratio mode). Heads and MLPs are thresholded
separately: each circuit is the top ``top_k`` of the heads plus the top ``top_k`` of the MLPs. On
SmolLM2 an MLP carries several times a head's importance, so one threshold over all modules puts
every MLP in both circuits: all 30 land in the task-shared group, where they carry about 80% of
CURE's weight change, and the type-stratified random control (:func:`random_grouping`) then gets
the same 30. Per kind, the grouping chooses among MLPs too, so the circuit decides where most of
the update goes. ``thresholds`` then holds ``forget:a``/``retain:a`` (heads) and
``forget:m``/``retain:m`` (MLPs) instead of ``forget``/``retain``; ``k`` is the heads' and
``k:m`` the MLPs' circuit size.

**Ratio mode.** A module in C_f or C_r is forget-specific if log(I_f / I_r) > margin,
retain-specific if < -margin, task-shared otherwise. Default ``margin=0.5``: a module must be
about 1.65x (e^0.5) more important to one set than to the other to be given to that set alone.

**Contrast mode** (:func:`contrast_grouping`, on per-sample importance). Forget and retain
importance mostly measure the same thing, the shared recommendation task: in the measurements
behind this mode (issue 13) their module scores were nearly collinear (Spearman 0.93), so the
top-k set difference is decided by
small fluctuations near the threshold, and its forget-specific group barely reproduces across
resampled forget sets (Jaccard about 0.2). What does reproduce is the *difference* of the two
profiles (correlation 0.71 between independent halves). Contrast mode therefore ranks modules by
that difference, with the shared component removed and its sampling noise measured: each
sample's importance vector is normalized to shares (sum 1); ``f`` and ``r`` are the mean forget
and retain shares; ``beta r`` is the shared task and the contrast ``c = f - beta r`` is what the
forget set needs beyond it. Shares are compositional: when a few modules gain share on one side,
every other module loses a little, by one common factor. ``beta`` is that factor, estimated by the
**median of ratios** ``median_j(f_j / r_j)`` over the modules with ``r_j > 0`` (as DESeq's size
factors), so that the few modules that do differ cannot move it. A least-squares projection
(``<f, r> / <r, r>``), used before, is pulled by exactly those modules and then calls every
unchanged one "specific" (38 of 38 in a planted two-module shift).

*Which modules are specific* is decided by a **permutation test with Benjamini-Hochberg**
control of the false discovery rate. Under the complete null (no module's share depends on the
set), the forget and retain labels are exchangeable, so the rows are pooled and the labels
shuffled ``n_boot`` times (set sizes kept; seeded by ``seed``), ``c`` (with ``beta``) recomputed
each time. Per module two one-sided p-values, ``p_forget = (1 + #{c_perm >= c}) / (1 + n_boot)``
and ``p_retain`` likewise with ``<=``, and BH at level ``alpha`` over all ``2 M`` of them: a
module is forget-specific when its ``p_forget`` is BH-significant and ``c > 0``, retain-specific
likewise. One test per module per side, hundreds of modules and a handful of rows: without the
correction, pure noise (forget and retain rows from one distribution, 300 modules, 8 + 8 rows)
gave 10 to 40 "specific" modules per side (a per-module bootstrap interval at 8 rows is also too
narrow); with it the expected share of false calls among the calls is at most ``alpha`` under that null.
When some modules do differ, an unchanged module's contrast stays near 0 because ``beta`` is a
median (a test plants a two-module shift among 40 and gets no other call); the p-values are then
approximate, not exact. Note
the resolution: no p-value is below ``1 / (1 + n_boot)``, nor below one over the number of
distinct splits ``C(nf + nr, nf)`` of the pooled rows, so a single module can be called only when
both are at most ``alpha / (2 M)``: for 300 modules at 0.05, ``n_boot >= 11,999`` and, since
``C(16, 8) = 12,870`` is barely enough, more than 8 + 8 samples in practice (a warning says when
the bound is not met; ``thresholds["p_min"]`` and ``["bh_threshold"]`` record both). Where more than
``ceil(top_k * M)`` modules are significant on a side, the ones with the largest ``|c| / sd`` are
kept. The bootstrap (``n_boot`` resamples of the forget rows and of the retain rows, with
replacement; ``beta`` recomputed each time) gives each module's descriptive ``1 - alpha``
percentile interval and sd (``contrast_low``/``contrast_high``/``contrast_sd``), shown beside
the p-values (``p_forget``/``p_retain``); it ranks, it does not decide. Task-shared: among the
top ``ceil(top_k * M)`` modules by mean share ``(f + r) / 2`` and not specific; the rest frozen.
A module is given to one set alone only when the data say so beyond sampling noise, so an
inconclusive contrast falls back to "shared" or "frozen", never to a coin flip at a threshold.
A sample with zero importance everywhere (its corruption changed nothing) carries no evidence
and is dropped, with a warning and a count in ``thresholds``. :mod:`recircuit.unlearn.reproducibility` measures the split's agreement across
resampled forget and retain sets.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from recircuit._io import atomic_write_json
from recircuit.errors import InputError

logger = logging.getLogger(__name__)

GROUPS = ("forget_specific", "retain_specific", "task_shared", "frozen")


@dataclass
class GroupingConfig:
    """How to split modules (see the module docstring).

    Attributes:
        top_k: fraction of modules in each circuit (top-k mode), in (0, 1]; in contrast mode the
            most modules per specific group and the size of the task-shared candidates.
        normalize: how forget and retain importances are made comparable: share or rank
            (contrast mode always uses per-sample shares).
        mode: topk (set differences of the two circuits), ratio (log-ratio against margin) or
            contrast (bootstrapped forget-minus-retain contrast on per-sample importance).
        margin: ratio mode's log-ratio a module needs to belong to one set alone.
        alpha: contrast mode's false discovery rate (Benjamini-Hochberg over the permutation
            p-values of all modules, both sides); also the level of the descriptive 1 - alpha
            bootstrap interval.
        n_boot: contrast mode's label permutations, and its bootstrap resamples (default 20,000:
            with 300 modules, BH at 0.05 over both sides needs p-values down to 0.05 / 600, so
            at least 11,999 permutations).
        seed: contrast mode's seed (permutations and bootstrap).
        per_kind: top-k and ratio mode: threshold heads and MLPs separately (see the module
            docstring); left out of :meth:`to_dict` when False.
    """

    top_k: float = 0.2
    normalize: str = "share"
    mode: str = "topk"
    margin: float = 0.5
    alpha: float = 0.05
    n_boot: int = 20000
    seed: int = 0
    per_kind: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= 1:
            raise InputError(f"top_k is a fraction of modules in (0, 1], got {self.top_k}", field="top_k",
                             fix="pass e.g. 0.2 (the top 20%)")
        if self.normalize not in ("share", "rank"):
            raise InputError(f"normalize must be 'share' or 'rank', got {self.normalize!r}", field="normalize",
                             fix="pass 'share' (the default) or 'rank'")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}", field="mode",
                             fix=f"pass one of {', '.join(MODES)}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha is a probability in (0, 1), got {self.alpha}", field="alpha",
                             fix="e.g. 0.05 (a 5% false discovery rate, 95% intervals)")
        if not isinstance(self.per_kind, bool):
            raise InputError(f"per_kind is true or false, got {self.per_kind!r}", field="per_kind",
                             fix="pass true (heads and MLPs thresholded apart) or false")
        if self.per_kind and self.mode == "contrast":
            raise InputError("per_kind thresholds top-k and ratio circuits; contrast mode tests every module "
                             "on its own", field="per_kind", fix="drop per_kind, or use mode 'topk' or 'ratio'")
        if not (isinstance(self.n_boot, int) and self.n_boot >= 2):
            raise InputError(f"n_boot must be an integer >= 2, got {self.n_boot!r}", field="n_boot",
                             fix="e.g. 200")

    def to_dict(self) -> dict:
        """JSON-able form; the contrast knobs (``alpha``, ``n_boot``, ``seed``) are left out when
        the mode is not ``contrast`` and they hold their defaults, so the form (and cache keys) of
        configs written before contrast mode existed do not change."""
        d = asdict(self)
        if self.mode != "contrast":
            for name, default in _CONTRAST_DEFAULTS.items():
                if d[name] == default:
                    del d[name]
        if not self.per_kind:
            del d["per_kind"]
        return d


#: The grouping modes (see the module docstring).
MODES = ("topk", "ratio", "contrast")

_CONTRAST_DEFAULTS = {"alpha": 0.05, "n_boot": 20000, "seed": 0}

#: Contrast bounds within this of 0 count as 0 (rounding of shares, which are at most 1).
_ZERO = 1e-12

#: :class:`Grouping`'s contrast-mode fields (empty in the other modes, then left out of its dict).
_CONTRAST_FIELDS = ("contrast", "contrast_low", "contrast_high", "contrast_sd", "p_forget", "p_retain")

#: Label permutations evaluated at once (bounds the memory to about this many [n_rows]+[m] rows).
_PERM_CHUNK = 512


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
    #: Contrast mode only (empty otherwise): per module the contrast ``f - beta r``, its bootstrap
    #: interval bounds and its bootstrap sd (descriptive), and its one-sided permutation p-values
    #: for ``c > 0`` and ``c < 0`` (what decides, with Benjamini-Hochberg; see the module docstring).
    #: The p-values are empty in groupings written before they existed.
    contrast: dict[str, float] = field(default_factory=dict)
    contrast_low: dict[str, float] = field(default_factory=dict)
    contrast_high: dict[str, float] = field(default_factory=dict)
    contrast_sd: dict[str, float] = field(default_factory=dict)
    p_forget: dict[str, float] = field(default_factory=dict)
    p_retain: dict[str, float] = field(default_factory=dict)

    def members(self, group: str) -> list[str]:
        """Modules in ``group``."""
        return [m for m, g in self.groups.items() if g == group]

    def sizes(self) -> dict[str, int]:
        """Number of modules per group."""
        return {g: len(self.members(g)) for g in GROUPS}

    def to_dataframe(self) -> pd.DataFrame:
        """One row per module (contrast mode adds ``contrast``, ``contrast_low``, ``contrast_high``,
        ``contrast_sd``, ``p_forget`` and ``p_retain``, each when present)."""
        rows = []
        for m, g in self.groups.items():
            row = {"module": m, "forget": self.forget_scores[m], "retain": self.retain_scores[m],
                   "forget_norm": self.forget_norm[m], "retain_norm": self.retain_norm[m]}
            for name in _CONTRAST_FIELDS:
                values = getattr(self, name)
                if values:
                    row[name] = values[m]
            rows.append({**row, "group": g, "reason": self.reasons[m]})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """JSON-able form (the contrast fields only when filled, so other modes keep their form)."""
        d = {"groups": self.groups, "forget_scores": self.forget_scores, "retain_scores": self.retain_scores,
             "forget_norm": self.forget_norm, "retain_norm": self.retain_norm, "thresholds": self.thresholds,
             "reasons": self.reasons, "config": self.config.to_dict()}
        d.update({name: getattr(self, name) for name in _CONTRAST_FIELDS if getattr(self, name)})
        return d

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> Grouping:
        """The grouping of :meth:`to_dict`'s form (also one written before contrast mode existed)."""
        d = dict(d)
        d["config"] = GroupingConfig(**d["config"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Grouping:
        """Read a grouping written by :meth:`save` (also one written before contrast mode existed)."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def group_modules(forget: dict[str, float], retain: dict[str, float], config: GroupingConfig | None = None) -> Grouping:
    """Split modules by forget and retain importance (see module docstring).

    Top-k and ratio mode; contrast mode needs per-sample importance (:func:`contrast_grouping`).
    """
    cfg = config or GroupingConfig()
    if cfg.mode == "contrast":
        raise InputError("contrast mode needs per-sample importance, not one score per module", field="mode",
                         fix="call contrast_grouping(names, forget_rows, retain_rows, config) with rows from "
                             "per_sample_module_importance")
    if set(forget) != set(retain) or not forget:
        only = sorted(set(forget) ^ set(retain))[:3]
        raise ValueError("Forget and retain importances must cover the same, non-empty set of modules "
                         f"(differing: {only}); compute both with module_importance on the same model.")
    bad = [m for m in forget if not (math.isfinite(forget[m]) and math.isfinite(retain[m]))]
    if bad:
        raise ValueError(f"Non-finite importance for {bad[:3]}; re-run the attribution (check the model for NaNs).")
    fn, rn = normalize_scores(forget, cfg.normalize), normalize_scores(retain, cfg.normalize)
    names = list(forget)
    kinds = {m: module_kind(m) if cfg.per_kind else "" for m in names}
    pools = {kind: [m for m in names if kinds[m] == kind] for kind in dict.fromkeys(kinds.values())}
    ks = {kind: max(1, int(math.ceil(cfg.top_k * len(pool)))) for kind, pool in pools.items()}
    thr_f = {kind: sorted((fn[m] for m in pool), reverse=True)[ks[kind] - 1] for kind, pool in pools.items()}
    thr_r = {kind: sorted((rn[m] for m in pool), reverse=True)[ks[kind] - 1] for kind, pool in pools.items()}
    in_f = {m for m in names if fn[m] >= thr_f[kinds[m]] and fn[m] > 0}
    in_r = {m for m in names if rn[m] >= thr_r[kinds[m]] and rn[m] > 0}
    groups, reasons = {}, {}
    eps = 1e-12
    for m in names:
        kind = kinds[m]
        k, tf, tr = ks[kind], thr_f[kind], thr_r[kind]
        top = f"top-{k}{' ' + _KIND_WORDS[kind] if kind else ''}"
        if m not in in_f and m not in in_r:
            groups[m], reasons[m] = "frozen", f"in neither {top} circuit"
            continue
        if cfg.mode == "topk":
            if m in in_f and m in in_r:
                groups[m], reasons[m] = "task_shared", f"in both {top} circuits"
            elif m in in_f:
                groups[m], reasons[m] = "forget_specific", f"forget share {fn[m]:.3g} >= {tf:.3g}, retain below {tr:.3g}"
            else:
                groups[m], reasons[m] = "retain_specific", f"retain share {rn[m]:.3g} >= {tr:.3g}, forget below {tf:.3g}"
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
    if cfg.per_kind:
        thresholds = {f"{side}:{kind or 'other'}": float(t[kind]) for side, t in (("forget", thr_f), ("retain", thr_r))
                      for kind in pools}
        thresholds.update({"margin": cfg.margin, "k": ks.get("a", 0), "k:m": ks.get("m", 0)})
    else:
        thresholds = {"forget": thr_f[""], "retain": thr_r[""], "margin": cfg.margin, "k": ks[""]}
    return Grouping(groups, dict(forget), dict(retain), fn, rn,
                    {**thresholds, "coverage_forget": cov_f, "coverage_retain": cov_r}, reasons, cfg)


#: Words for a module kind in a grouping's reasons.
_KIND_WORDS = {"a": "head", "m": "MLP", "": ""}


def module_kind(name: str) -> str:
    """``"a"`` for an attention head (``a3.h5``), ``"m"`` for an MLP (``m3``), ``""`` for anything else."""
    return name[:1] if name[:1] in ("a", "m") else ""


def _shares(rows: np.ndarray, which: str, n_modules: int) -> tuple[np.ndarray, int]:
    """Rows of per-sample importance as shares (each row sums to 1), checked, and how many all-zero
    rows were dropped (a sample whose corruption changed nothing carries no evidence)."""
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != n_modules or a.shape[0] < 1:
        raise ValueError(f"{which} importance must be [n_samples >= 1, {n_modules} modules], got shape {a.shape}; "
                         "compute it with per_sample_module_importance on the same model.")
    if not np.isfinite(a).all():
        raise ValueError(f"Non-finite {which} importance; re-run the attribution (check the model for NaNs).")
    if (a < 0).any():
        raise ValueError(f"Negative {which} importance (module importance sums absolute edge scores); "
                         "pass per_sample_module_importance rows.")
    tot = a.sum(1)
    zero = np.flatnonzero(tot <= 0)
    if len(zero) == len(a):
        raise ValueError(f"Every {which} sample has zero importance on every module (clean and corrupted prompts "
                         "give the same run?); use another corruption.")
    if len(zero):
        logger.warning("contrast grouping: dropped %d of %d %s samples with zero importance on every module "
                       "(the corruption left them unchanged), first: row %d", len(zero), len(a), which, zero[0])
    keep = tot > 0
    return a[keep] / tot[keep, None], len(zero)


def _contrast(f: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``beta = median_j(f_j / r_j)`` over the modules with ``r_j > 0`` and ``c = f - beta r``, row-wise
    over a leading axis (the median of ratios: robust to the few modules that do differ)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(r > 0, f / np.where(r > 0, r, 1.0), np.nan)
    beta = np.nanmedian(ratio, axis=-1)
    return beta, f - beta[..., None] * r


def _draw_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """``[n_draws, n]``: how often each of ``n`` rows appears in each row of ``idx`` (one bincount,
    no ``[n_draws, k, n]`` intermediate)."""
    flat = (idx + n * np.arange(len(idx))[:, None]).ravel()
    return np.bincount(flat, minlength=n * len(idx)).reshape(len(idx), n)


def permutation_pvalues(forget: Float[np.ndarray, "nf m"], retain: Float[np.ndarray, "nr m"],
                        perms: Int[np.ndarray, "n_perm n"]) -> tuple[Float[np.ndarray, "m"], Float[np.ndarray, "m"]]:
    """One-sided permutation p-values of the contrast ``c = f - beta r`` per module.

    The ``nf + nr`` rows are pooled (forget rows first); each row of ``perms`` is a permutation
    of the pooled row indices whose first ``nf`` entries form the permuted forget set and the rest
    the retain set. ``c`` (with ``beta``) is recomputed per permutation and
    ``p_forget = (1 + #{c_perm >= c}) / (1 + n_perm)``, ``p_retain = (1 + #{c_perm <= c}) / (1 + n_perm)``
    (ties within 1e-12 count, so the p-values stay valid under rounding).

    Args:
        forget: forget rows as shares (each row sums to 1).
        retain: retain rows as shares, same modules.
        perms: integer permutations of ``range(nf + nr)``, one per row.

    Returns:
        ``(p_forget, p_retain)``, each in ``(0, 1]``.
    """
    fs, rs = np.asarray(forget, dtype=np.float64), np.asarray(retain, dtype=np.float64)
    nf, nr = len(fs), len(rs)
    pool = np.concatenate([fs, rs])
    idx = np.asarray(perms)
    if idx.ndim != 2 or idx.shape[1] != nf + nr:
        raise ValueError(f"perms must be [n_perm, {nf + nr}] permutations of the pooled rows, got shape {idx.shape}")
    _, c = _contrast(fs.mean(0), rs.mean(0))
    total = pool.sum(0)
    ge = np.zeros(pool.shape[1], dtype=np.int64)
    le = np.zeros(pool.shape[1], dtype=np.int64)
    for start in range(0, len(idx), _PERM_CHUNK):
        block = idx[start:start + _PERM_CHUNK, :nf]
        member = np.zeros((len(block), nf + nr))
        np.put_along_axis(member, block, 1.0, axis=1)          # 1 where a pooled row is in the forget set
        fsum = member @ pool
        _, cp = _contrast(fsum / nf, (total - fsum) / nr)
        ge += (cp >= c - _ZERO).sum(0)
        le += (cp <= c + _ZERO).sum(0)
    n = len(idx)
    return (1 + ge) / (1 + n), (1 + le) / (1 + n)


def benjamini_hochberg(p: Float[np.ndarray, "n"], alpha: float) -> tuple[np.ndarray, float]:
    """Benjamini-Hochberg step-up at false discovery rate ``alpha``.

    With the p-values sorted, ``R`` is the largest ``k`` with ``p_(k) <= alpha k / n``; the
    rejected tests are exactly those with ``p <= alpha R / n``.

    Returns:
        ``(rejected, threshold)``: a boolean mask over ``p``, and ``alpha R / n`` (``alpha / n``
        when nothing is rejected: then every p-value lies above it).
    """
    p = np.asarray(p, dtype=np.float64)
    n = p.size
    ok = np.flatnonzero(np.sort(p) <= alpha * np.arange(1, n + 1) / n)
    n_rej = int(ok[-1]) + 1 if len(ok) else 0
    thr = alpha * max(n_rej, 1) / n
    return (p <= thr) if n_rej else np.zeros(n, dtype=bool), float(thr)


def contrast_grouping(names: list[str], forget: Float[np.ndarray, "nf m"], retain: Float[np.ndarray, "nr m"],
                      config: GroupingConfig | None = None) -> Grouping:
    """Contrast mode (see the module docstring): specific groups from the forget-minus-retain contrast,
    decided by a label-permutation test with Benjamini-Hochberg control of the false discovery rate.

    Args:
        names: the ``m`` module names, in column order.
        forget: per-sample module importance of the forget samples (non-negative, one row each;
            an all-zero row, a sample its corruption left unchanged, is dropped with a warning and
            counted in ``thresholds["dropped_forget"]``).
        retain: the same for the retain samples.
        config: ``top_k``, ``alpha`` (the FDR), ``n_boot`` (permutations and bootstrap resamples)
            and ``seed`` are read (``mode`` should be ``contrast``).

    Returns:
        The :class:`Grouping`, with the mean shares ``f``/``r`` as scores (raw and normalized), the
        contrast, its bootstrap interval and sd, and its permutation p-values per module; ``beta``,
        ``k``, ``bh_threshold``, ``p_min`` and ``n_tests`` in ``thresholds``. Deterministic for a
        given ``config.seed``.
    """
    cfg = config or GroupingConfig(mode="contrast")
    names = list(names)
    m = len(names)
    if m == 0 or len(set(names)) != m:
        raise ValueError("Contrast grouping needs a non-empty list of distinct module names.")
    (fs, drop_f), (rs, drop_r) = _shares(forget, "forget", m), _shares(retain, "retain", m)
    nf, nr = fs.shape[0], rs.shape[0]
    f, r = fs.mean(0), rs.mean(0)
    beta, c = _contrast(f, r)
    rng = np.random.default_rng(cfg.seed)
    # descriptive bootstrap: each set resampled with replacement
    idx_f = rng.integers(0, nf, size=(cfg.n_boot, nf))
    idx_r = rng.integers(0, nr, size=(cfg.n_boot, nr))
    count_f = _draw_counts(idx_f, nf)                        # [n_boot, nf] times each row was drawn
    count_r = _draw_counts(idx_r, nr)
    _, cb = _contrast(count_f @ fs / nf, count_r @ rs / nr)  # [n_boot, m]
    low, high = np.percentile(cb, [50 * cfg.alpha, 100 - 50 * cfg.alpha], axis=0)
    sd = cb.std(0, ddof=1)
    # the decision: label permutations of the pooled rows, then BH over both sides of every module
    perms = rng.permuted(np.broadcast_to(np.arange(nf + nr), (cfg.n_boot, nf + nr)), axis=1)
    p_f, p_r = permutation_pvalues(fs, rs, perms)
    rejected, bh = benjamini_hochberg(np.concatenate([p_f, p_r]), cfg.alpha)
    n_tests = 2 * m
    splits = math.comb(nf + nr, nf)                 # distinct forget/retain splits of the pooled rows
    p_min = max(1 / (1 + cfg.n_boot), 1 / splits)
    if p_min > cfg.alpha / n_tests:
        need = int(math.ceil(n_tests * p_min / cfg.alpha - 1e-9))
        fix = (f"set n_boot >= {int(math.ceil(n_tests / cfg.alpha - 1 - 1e-9))}" if 1 / splits <= cfg.alpha / n_tests
               else "use more forget/retain samples")
        logger.warning("contrast grouping: the smallest attainable p-value is %.3g (%d permutations, %d distinct "
                       "splits of %d + %d rows), so Benjamini-Hochberg at alpha=%g over %d tests can call modules "
                       "specific only when at least %d of them are; %s to be able to detect a single module",
                       p_min, cfg.n_boot, splits, nf, nr, cfg.alpha, n_tests, need, fix)
    z = np.divide(c, sd, out=np.where(c > 0, np.inf, np.where(c < 0, -np.inf, 0.0)), where=sd > 0)
    k = max(1, int(math.ceil(cfg.top_k * m)))
    level = f"{100 * (1 - cfg.alpha):g}%"

    def ci(i: int) -> str:
        return f"{level} CI [{low[i]:+.3g}, {high[i]:+.3g}]"

    def test(i: int) -> str:
        return f"p_forget {p_f[i]:.3g}, p_retain {p_r[i]:.3g}"

    groups: dict[str, str] = {}
    reasons: dict[str, str] = {}
    cut: dict[int, str] = {}
    sides = (("forget_specific", rejected[:m] & (c > _ZERO), -z, p_f, "p_forget"),
             ("retain_specific", rejected[m:] & (c < -_ZERO), z, p_r, "p_retain"))
    for group, qualifies, key, pv, pname in sides:
        cand = np.flatnonzero(qualifies)
        keep = {int(i) for i in cand[np.argsort(key[cand], kind="stable")[:k]]}
        for i in map(int, cand):
            if i in keep:
                groups[names[i]] = group
                reasons[names[i]] = (f"contrast {c[i]:+.3g}, {pname} {pv[i]:.3g} <= BH threshold {bh:.3g} "
                                     f"(FDR {cfg.alpha:g}, {n_tests} tests); {ci(i)} (beta {beta:.3g})")
            else:
                cut[i] = (f"; {pname} {pv[i]:.3g} <= BH threshold {bh:.3g} but not among the top-{k} by "
                          f"contrast/sd ({z[i]:+.3g})")
    mean = (f + r) / 2
    thr = float(np.sort(mean)[::-1][k - 1])
    for i, name in enumerate(names):
        if name in groups:
            continue
        note = cut.get(i, f"; not significant ({test(i)}, BH threshold {bh:.3g})")
        where = "in" if mean[i] >= thr and mean[i] > 0 else "below"
        groups[name] = "task_shared" if where == "in" else "frozen"
        reasons[name] = f"mean share {mean[i]:.3g} {where} the top-{k}; contrast {c[i]:+.3g}, {ci(i)}{note}"
    groups = {n: groups[n] for n in names}
    moving = np.array([groups[n] != "frozen" for n in names])
    fd = {n: float(v) for n, v in zip(names, f)}
    rd = {n: float(v) for n, v in zip(names, r)}
    thresholds = {"k": k, "beta": float(beta), "shared": thr, "alpha": cfg.alpha, "n_boot": cfg.n_boot,
                  "bh_threshold": bh, "p_min": p_min, "n_tests": n_tests,
                  "n_forget": nf, "n_retain": nr, "dropped_forget": drop_f, "dropped_retain": drop_r,
                  "coverage_forget": float(f[moving].sum()),
                  "coverage_retain": float(r[moving].sum())}

    def per_module(a: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(names, a)}

    return Grouping(groups, fd, rd, dict(fd), dict(rd), thresholds, reasons, cfg,
                    contrast=per_module(c), contrast_low=per_module(low), contrast_high=per_module(high),
                    contrast_sd=per_module(sd), p_forget=per_module(p_f), p_retain=per_module(p_r))


def random_grouping(reference: Grouping, seed: int = 0) -> Grouping:
    """Same group sizes as ``reference`` with modules assigned at random (the control).

    Heads are shuffled among heads and MLPs among MLPs, so each group keeps not only its number
    of modules but its number of parameters: the control differs from CURE only in *which*
    modules are chosen.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, str] = {}
    for kind in ("a", "m", ""):
        names = [m for m in reference.groups if module_kind(m) == kind]
        labels = [reference.groups[m] for m in names]
        perm = rng.permutation(len(names))
        groups.update({names[i]: labels[j] for j, i in enumerate(perm)})
    groups = {m: groups[m] for m in reference.groups}
    reasons = {m: f"random assignment (control, seed {seed})" for m in groups}
    return Grouping(groups, reference.forget_scores, reference.retain_scores, reference.forget_norm,
                    reference.retain_norm, dict(reference.thresholds), reasons, reference.config,
                    **{name: dict(getattr(reference, name)) for name in _CONTRAST_FIELDS})


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
