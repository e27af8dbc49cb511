"""Faithfulness of circuits by real intervention (MIB's f, CPR and CMD), as in EAP-IG's ``evaluate``.

Usage::

    from recircuit.circuits import attribute, faithfulness_curve, circuit_metric
    res = attribute(model, clean, corrupted)
    curve = faithfulness_curve(model, res, clean, corrupted)   # MIB-style f, CPR, CMD
    curve.cpr, curve.cmd, curve.edges_to_reach(0.8)
    circuit_metric(model, clean, corrupted, keep)              # {"clean", "corrupted", "circuit"}
    check = check_corruption(res.clean_metric, res.corrupted_metric, "label_flip",
                             res.clean_per_sample, res.corrupted_per_sample)
    check.ok, check.note                                       # False and why, when f would mean nothing

**Faithfulness** is measured by real intervention (:func:`~recircuit.circuits.engine.patched_metric`):
every edge outside the circuit carries its corrupted value, in one forward pass per size (none
for the empty circuit and the whole graph: they are the corrupted and the clean run, which the
sweep runs anyway). Each reader is patched over the smaller of its dropped and its kept writers,
so small and large circuits patch cheaply and a whole sweep costs about one half-size patch.
f = (circuit - corrupted) / (clean - corrupted); CPR = area under f and CMD = area under |1 - f|,
both by the trapezoid rule over the fraction of edges kept (x from 0 to 1; MIB's sizes
{0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100}% plus the empty circuit at 0). Both functions first
check that the model's writers sum to its residual stream
(:func:`~recircuit.circuits.engine.check_writer_sum`): on a model where they do not, the
endpoints would still read exactly 0 and 1 while everything between was wrong. On post-norm
families (Gemma-2/3) patched heads go through the real post-attention norm.

**A corruption must move the metric** before f means anything: f divides by
``clean - corrupted``, and when that gap is not distinguishable from zero over the samples, f
swings wildly (a gap of 0.004 gave f from -57 to 17). :func:`check_corruption` applies one rule,
fixed in advance: with ``d_i = clean_i - corrupted_i`` per sample and ``se`` the standard error of
their mean, the corruption is flagged when ``mean(d) < max(MIN_METRIC_GAP, GAP_SIGMAS * se)``
(``GAP_SIGMAS = 2``), which covers both a gap too small to tell from zero and one that moves the
metric the wrong way. :func:`faithfulness_curve` then refuses with :class:`UnreliableFaithfulness`
before its sweep, unless called with ``allow_unreliable=True``; such a curve carries
``flag="unreliable"`` and the ``note``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool
from tqdm.auto import tqdm

from recircuit.circuits.attribute import AttributionResult
from recircuit.circuits.circuit import select_edges
from recircuit.circuits.engine import (
    check_writer_sum,
    chunks,
    collect_writer_outputs,
    default_budget,
    make_pair_batch,
    patch_copies,
    patched_metric,
    run_logits,
)
from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import Metric, get_metric
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.scoring import answer_tokens

logger = logging.getLogger(__name__)

#: MIB's circuit sizes, as fractions of all edges.
MIB_SIZES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class FaithfulnessCurve:
    """Faithfulness across circuit sizes."""

    sizes: list[float]  # fraction of edges kept
    n_edges: list[int]
    faithfulness: list[float]
    clean: float
    corrupted: float
    #: ``"unreliable"`` when the corruption failed :func:`check_corruption` and the curve was drawn
    #: anyway (``allow_unreliable=True``); ``None`` for a trustworthy curve.
    flag: str | None = None
    #: Why the curve is flagged (the check's sentence), or ``None``.
    note: str | None = None

    @property
    def cpr(self) -> float:
        """Area under f over x in [0, 1] (higher is better)."""
        return float(np.trapezoid(self.faithfulness, self.sizes))

    @property
    def cmd(self) -> float:
        """Area under |1 - f| over x in [0, 1] (lower is better)."""
        return float(np.trapezoid(np.abs(1 - np.asarray(self.faithfulness)), self.sizes))

    def edges_to_reach(self, level: float = 0.8) -> int | None:
        """Smallest tested circuit size (edges) with f >= level, or None."""
        for n, f in zip(self.n_edges, self.faithfulness):
            if f >= level:
                return n
        return None

    def to_dict(self) -> dict:
        """JSON-able form with CPR and CMD."""
        d = {"sizes": self.sizes, "n_edges": self.n_edges, "faithfulness": self.faithfulness,
             "clean": self.clean, "corrupted": self.corrupted, "cpr": self.cpr, "cmd": self.cmd}
        if self.flag is not None:
            d.update({"flag": self.flag, "note": self.note})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FaithfulnessCurve:
        """Inverse of :meth:`to_dict` (CPR and CMD are recomputed, not read)."""
        return cls([float(x) for x in d["sizes"]], [int(x) for x in d["n_edges"]],
                   [float(x) for x in d["faithfulness"]], float(d["clean"]), float(d["corrupted"]),
                   d.get("flag"), d.get("note"))


def faithfulness_curve(
    model, result: AttributionResult, clean, corrupted, sizes=MIB_SIZES, absolute: bool = True,
    batch_size: int = 8, align: str = "strict", progress: bool = True, max_bytes: int | None = None,
    allow_unreliable: bool = False, corruption: str = "the",
) -> FaithfulnessCurve:
    """MIB-style faithfulness of top-n circuits at each size (fraction of all edges).

    Batches are the outer loop: each batch's corrupted activations are collected once and
    reused for every circuit size. Several sizes share one forward pass (the batch tiled once
    per size) as far as ``max_bytes`` (default: 40% of available RAM or free GPU memory) allows.

    Before the sweep the corruption is checked (:func:`check_corruption`) on the attribution's
    per-sample metrics (``result.clean_per_sample``/``corrupted_per_sample``, when they cover
    ``len(clean)`` pairs; otherwise on the sweep's own clean and corrupted runs, after it).

    Args:
        allow_unreliable: draw the curve even when the corruption does not move the metric
            distinguishably from zero; it then carries ``flag="unreliable"`` and the ``note``.
        corruption: the corruption's name, for the check's message.

    Raises:
        UnreliableFaithfulness: the corruption failed the check (and ``allow_unreliable`` is
            False), or clean and corrupted metrics are equal, so f is undefined.
    """
    g = result.graph
    check_writer_sum(model, g)
    check = None
    n_pairs = len(clean)
    if n_pairs and len(result.clean_per_sample) == n_pairs == len(result.corrupted_per_sample):
        check = check_corruption(result.clean_metric, result.corrupted_metric, corruption,
                                 result.clean_per_sample, result.corrupted_per_sample)
        if not check.ok and not allow_unreliable:
            raise UnreliableFaithfulness(check)
    total = g.n_edges
    device = next(model.parameters()).device
    metric = get_metric(result.config.metric)
    answers = answer_tokens(model.tokenizer)
    fracs = [0.0] + [float(f) for f in sizes]
    keeps = []
    for frac in fracs:
        n = int(round(frac * total))
        if n == 0:
            keeps.append(torch.zeros_like(g.edge_mask))
        elif n >= total:
            keeps.append(g.edge_mask.clone())
        else:
            keeps.append(select_edges(result.scores, g, top_n=max(1, n), absolute=absolute))
    sums = torch.zeros(len(keeps), dtype=torch.float64)
    clean_sum = corr_sum = 0.0
    clean_ps: list[float] = []
    corr_ps: list[float] = []
    batches = chunks(len(clean), batch_size)
    bar = tqdm(total=len(batches) * len(keeps), desc="faithfulness", disable=not progress)
    last = result.config.last_position_only
    budget = max_bytes or default_budget(device)
    stacked = torch.stack(keeps).to(device)
    n_kept = stacked.sum(dim=(1, 2))
    trivial_empty = [i for i in range(len(keeps)) if int(n_kept[i]) == 0]
    trivial_full = [i for i in range(len(keeps)) if int(n_kept[i]) == total]
    patched = torch.tensor([i for i in range(len(keeps)) if i not in trivial_empty + trivial_full], dtype=torch.long)
    for lo, hi in batches:
        pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, align)
        corr_acts, corr_logits = collect_writer_outputs(model, g, pair.corrupted, pair.mask, last)
        with torch.no_grad():
            m_c = metric(run_logits(model, pair.clean, last), pair.labels, answers)
        m_k = metric(corr_logits, pair.labels, answers)
        clean_sum += float(m_c.sum())
        corr_sum += float(m_k.sum())
        clean_ps += m_c.detach().double().cpu().reshape(-1).tolist()
        corr_ps += m_k.detach().double().cpu().reshape(-1).tolist()
        # the empty circuit is the corrupted run and the whole graph the clean one: no patched pass
        for i in trivial_empty:
            sums[i] += float(m_k.sum())
        for i in trivial_full:
            sums[i] += float(m_c.sum())
        bar.update(len(trivial_empty) + len(trivial_full))
        per_call = patch_copies(g, hi - lo, pair.clean.input_ids.shape[1], model.cfg.d_model, budget)
        for a, b in chunks(len(patched), per_call):
            m = patched_metric(model, g, pair, corr_acts, stacked[patched[a:b]], metric, answers, last)
            sums[patched[a:b]] += m.sum(1).double().cpu()
            bar.update(b - a)
        del corr_acts
    bar.close()
    n = len(clean)
    m_clean, m_corr = clean_sum / n, corr_sum / n
    denom = m_clean - m_corr
    if check is None:
        check = check_corruption(m_clean, m_corr, corruption, clean_ps, corr_ps)
        if not check.ok and not allow_unreliable:
            raise UnreliableFaithfulness(check)
    if abs(denom) < 1e-12:
        raise UnreliableFaithfulness(check, undefined=True)
    fs = [float((v / n - m_corr) / denom) for v in sums.tolist()]
    flag = None if check.ok else "unreliable"
    if flag:
        logger.warning("faithfulness curve drawn although unreliable: %s", check.note)
    return FaithfulnessCurve(fracs, [int(k.sum()) for k in keeps], fs, m_clean, m_corr, flag, check.note)


#: Below this clean-minus-corrupted metric gap (logit units) a corruption is called ineffective.
MIN_METRIC_GAP = 0.1

#: A gap must be at least this many standard errors of the per-sample differences.
GAP_SIGMAS = 2.0


@dataclass(frozen=True)
class CorruptionCheck:
    """Whether a corruption moves the metric enough for a faithfulness curve (:func:`check_corruption`).

    Attributes:
        gap: mean clean metric minus mean corrupted metric.
        stderr: standard error of the mean of the per-sample differences (``None``: fewer than two
            samples, or no per-sample values given, so the spread is unknown).
        threshold: the gap needed, ``max(min_gap, GAP_SIGMAS * stderr)``.
        n: number of pairs (0 when only means were given).
        note: why the curve cannot be trusted and what to do, or ``None`` when it can.
    """

    gap: float
    stderr: float | None
    threshold: float
    n: int
    note: str | None

    @property
    def ok(self) -> bool:
        """True when the corruption moves the metric distinguishably from zero, the right way."""
        return self.note is None


class UnreliableFaithfulness(InputError):
    """The corruption does not move the metric enough: a faithfulness curve would mean nothing.

    Carries the :class:`CorruptionCheck` as ``check`` (gap, spread, threshold).
    """

    def __init__(self, check: CorruptionCheck, undefined: bool = False) -> None:
        self.check = check
        why = check.note or "clean and corrupted metrics are equal"
        if undefined:
            why = f"faithfulness is undefined ({why})"
        super().__init__(why, field="corruption",
                         fix="or pass allow_unreliable=True to draw a curve flagged as unreliable" if not undefined
                         else None)


def _suggestion(corruption: str) -> str:
    other = "label_flip" if corruption == "target_swap" else "target_swap"
    return (f"use a corruption that moves the metric (e.g. --corruption {other}), more samples, "
            "or a model that has learned the task (a zero-shot model is no recommender)")


def check_corruption(
    clean_metric: float, corrupted_metric: float, corruption: str = "the", clean_per_sample: Sequence[float] | None = None,
    corrupted_per_sample: Sequence[float] | None = None, min_gap: float = MIN_METRIC_GAP, sigmas: float = GAP_SIGMAS,
) -> CorruptionCheck:
    """Check that a corruption moves the metric by more than its spread over samples.

    The metric is signed toward the clean answer (e.g. the label-signed Yes-No logit difference),
    so a useful corruption *lowers* it. The rule (fixed before looking at any result): with
    ``gap = clean_metric - corrupted_metric`` and ``se`` the standard error of the mean of the
    per-sample differences ``clean_per_sample[i] - corrupted_per_sample[i]`` (sample standard
    deviation, ``ddof=1``, over ``sqrt(n)``), the corruption is flagged when

        ``gap < max(min_gap, sigmas * se)``     (``sigmas = 2``)

    that is, when the effect is not distinguishable from zero, is below the floor ``min_gap``, or
    goes the wrong way (a negative gap). Without per-sample values, or with one sample, the
    spread is unknown and only ``min_gap`` applies. A non-finite gap is flagged.

    Raises:
        InputError: the per-sample lists differ in length, or only one of them is given.
    """
    gap = float(clean_metric) - float(corrupted_metric)
    se, n = None, 0
    if (clean_per_sample is None) != (corrupted_per_sample is None):
        raise InputError("give both clean_per_sample and corrupted_per_sample, or neither", field="clean_per_sample")
    if clean_per_sample is not None and corrupted_per_sample is not None:
        a = np.asarray(clean_per_sample, dtype=np.float64).reshape(-1)
        b = np.asarray(corrupted_per_sample, dtype=np.float64).reshape(-1)
        if a.shape != b.shape:
            raise InputError(f"{a.size} clean but {b.size} corrupted per-sample metrics", field="corrupted_per_sample",
                             fix="pass one value per clean/corrupted pair")
        n = int(a.size)
        if n >= 2:
            se = float(np.std(a - b, ddof=1) / np.sqrt(n))
    threshold = max(float(min_gap), sigmas * se) if se is not None else float(min_gap)
    if gap >= threshold:        # False for NaN: a non-finite gap is flagged
        return CorruptionCheck(gap, se, threshold, n, None)
    means = f"clean {clean_metric:.3g}, corrupted {corrupted_metric:.3g}"
    how = (f"moves the metric the wrong way ({means})" if gap < 0
           else f"moves the metric by only {gap:.3g} ({means})")
    if se is not None:
        spread = f"; over {n} samples the difference has standard error {se:.3g}"
        need = f"clean - corrupted >= max({min_gap:g}, {sigmas:g} x standard error) = {threshold:.3g}"
    else:
        spread = ""
        need = f"clean - corrupted >= {min_gap:g}"
    note = (f"{_named(corruption)} {how}{spread}, so a faithfulness curve f = (circuit - corrupted) / "
            f"(clean - corrupted) is not meaningful (it needs {need}); {_suggestion(corruption)}")
    return CorruptionCheck(gap, se, threshold, n, note)


def _named(corruption: str) -> str:
    """``"the label_flip corruption"``, or ``"the corruption"`` when no name was given."""
    return "the corruption" if corruption in ("", "the") else f"the {corruption} corruption"


def corruption_effect(clean_metric: float, corrupted_metric: float, corruption: str = "the",
                      min_gap: float = MIN_METRIC_GAP, clean_per_sample: Sequence[float] | None = None,
                      corrupted_per_sample: Sequence[float] | None = None) -> str | None:
    """Why a corruption cannot support a faithfulness curve, or ``None`` when it can.

    :func:`check_corruption`'s note: the corruption must lower the (clean-signed) metric by at
    least ``max(min_gap, 2 x standard error of the per-sample differences)``; the standard error
    is used when the per-sample values are given (``AttributionResult.clean_per_sample`` and
    ``corrupted_per_sample``), else only ``min_gap``. When it moves the metric the wrong way or by
    too little, ``f = (circuit - corrupted) / (clean - corrupted)`` divides by a tiny or negative
    number and the curve means nothing; the returned sentence says which, and what to do.
    Notebooks show it instead of the plot; the pipeline records it and skips the sweep.
    """
    return check_corruption(clean_metric, corrupted_metric, corruption, clean_per_sample, corrupted_per_sample,
                            min_gap=min_gap).note


def circuit_metric(
    model, clean: Sequence[Sample], corrupted: Sequence[Sample], keep: Bool[torch.Tensor, "n_forward n_backward"],
    metric: str | Metric = "logit_diff", batch_size: int = 8, graph: Graph | None = None, align: str = "strict",
    last_only: bool = True,
) -> dict[str, float]:
    """Mean metric of the clean run, the corrupted run and the run where only ``keep`` edges stay clean."""
    graph = graph or Graph.from_model(model)
    check_writer_sum(model, graph)
    metric_fn = get_metric(metric)
    answers = answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    tot = {"clean": 0.0, "corrupted": 0.0, "circuit": 0.0}
    keep = keep.to(device) | ~graph.edge_mask.to(device)
    for lo, hi in chunks(len(clean), batch_size):
        pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, align)
        corr_acts, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, pair.mask, last_only)
        with torch.no_grad():
            tot["clean"] += float(metric_fn(run_logits(model, pair.clean, last_only), pair.labels, answers).sum())
        tot["corrupted"] += float(metric_fn(corr_logits, pair.labels, answers).sum())
        tot["circuit"] += float(patched_metric(model, graph, pair, corr_acts, keep, metric_fn, answers, last_only).sum())
    n = len(clean)
    return {k: v / n for k, v in tot.items()}


__all__ = ["GAP_SIGMAS", "MIB_SIZES", "MIN_METRIC_GAP", "CorruptionCheck", "FaithfulnessCurve",
           "UnreliableFaithfulness", "check_corruption", "circuit_metric", "corruption_effect", "faithfulness_curve"]
