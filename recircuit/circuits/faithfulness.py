"""Faithfulness of circuits by real intervention (MIB's f, CPR and CMD), as in EAP-IG's ``evaluate``.

Usage::

    from recircuit.circuits import attribute, faithfulness_curve, circuit_metric
    res = attribute(model, clean, corrupted)
    curve = faithfulness_curve(model, res, clean, corrupted)   # MIB-style f, CPR, CMD
    curve.cpr, curve.cmd, curve.edges_to_reach(0.8)
    circuit_metric(model, clean, corrupted, keep)              # {"clean", "corrupted", "circuit"}

**Faithfulness** is measured by real intervention (:func:`~recircuit.circuits.engine.patched_metric`):
every edge outside the circuit carries its corrupted value, in one forward pass per size.
f = (circuit - corrupted) / (clean - corrupted); CPR = area under f and CMD = area under |1 - f|,
both by the trapezoid rule over the fraction of edges kept (x from 0 to 1; MIB's sizes
{0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100}% plus the empty circuit at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool
from tqdm.auto import tqdm

from recircuit.circuits.attribute import AttributionResult
from recircuit.circuits.circuit import select_edges
from recircuit.circuits.engine import (
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
from recircuit.models.scoring import answer_tokens

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
        return {"sizes": self.sizes, "n_edges": self.n_edges, "faithfulness": self.faithfulness,
                "clean": self.clean, "corrupted": self.corrupted, "cpr": self.cpr, "cmd": self.cmd}

    @classmethod
    def from_dict(cls, d: dict) -> FaithfulnessCurve:
        """Inverse of :meth:`to_dict` (CPR and CMD are recomputed, not read)."""
        return cls([float(x) for x in d["sizes"]], [int(x) for x in d["n_edges"]],
                   [float(x) for x in d["faithfulness"]], float(d["clean"]), float(d["corrupted"]))


def faithfulness_curve(
    model, result: AttributionResult, clean, corrupted, sizes=MIB_SIZES, absolute: bool = True,
    batch_size: int = 8, align: str = "strict", progress: bool = True, max_bytes: int | None = None,
) -> FaithfulnessCurve:
    """MIB-style faithfulness of top-n circuits at each size (fraction of all edges).

    Batches are the outer loop: each batch's corrupted activations are collected once and
    reused for every circuit size. Several sizes share one forward pass (the batch tiled once
    per size) as far as ``max_bytes`` (default: 40% of available RAM or free GPU memory) allows.
    """
    g = result.graph
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
    batches = chunks(len(clean), batch_size)
    bar = tqdm(total=len(batches) * len(keeps), desc="faithfulness", disable=not progress)
    last = result.config.last_position_only
    budget = max_bytes or default_budget(device)
    stacked = torch.stack(keeps).to(device)
    for lo, hi in batches:
        pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, align)
        corr_acts, corr_logits = collect_writer_outputs(model, g, pair.corrupted, pair.mask, last)
        with torch.no_grad():
            clean_sum += float(metric(run_logits(model, pair.clean, last), pair.labels, answers).sum())
        corr_sum += float(metric(corr_logits, pair.labels, answers).sum())
        per_call = patch_copies(g, hi - lo, pair.clean.input_ids.shape[1], model.cfg.d_model, budget)
        for a, b in chunks(len(keeps), per_call):
            m = patched_metric(model, g, pair, corr_acts, stacked[a:b], metric, answers, last)
            sums[a:b] += m.sum(1).double().cpu()
            bar.update(b - a)
        del corr_acts
    bar.close()
    n = len(clean)
    m_clean, m_corr = clean_sum / n, corr_sum / n
    denom = m_clean - m_corr
    if abs(denom) < 1e-12:
        raise ValueError("Clean and corrupted metrics are equal; faithfulness is undefined. Use another corruption.")
    fs = [float((v / n - m_corr) / denom) for v in sums.tolist()]
    return FaithfulnessCurve(fracs, [int(k.sum()) for k in keeps], fs, m_clean, m_corr)


#: Below this clean-minus-corrupted metric gap (logit units) a corruption is called ineffective.
MIN_METRIC_GAP = 0.1


def corruption_effect(clean_metric: float, corrupted_metric: float, corruption: str = "the",
                      min_gap: float = MIN_METRIC_GAP) -> str | None:
    """Why a corruption cannot support a faithfulness curve, or ``None`` when it can.

    The metric is signed toward the clean answer (e.g. the logit difference of the correct answer
    over the other), so a useful corruption *lowers* it, by at least ``min_gap``. When it moves the
    metric the wrong way or by almost nothing, ``f = (circuit - corrupted) / (clean - corrupted)``
    divides by a tiny or negative number and the curve means nothing; the returned sentence says
    which, and what to do. Notebooks show it instead of the plot; the pipeline records it.
    """
    gap = float(clean_metric) - float(corrupted_metric)
    if gap >= min_gap:
        return None
    how = (f"moves the metric the wrong way (clean {clean_metric:.3g}, corrupted {corrupted_metric:.3g})" if gap < 0
           else f"moves the metric by only {gap:.3g} (clean {clean_metric:.3g}, corrupted {corrupted_metric:.3g})")
    return (f"the {corruption} corruption {how}, so a faithfulness curve f = (circuit - corrupted) / "
            f"(clean - corrupted) is not meaningful (it needs clean - corrupted >= {min_gap:g}); study a fine-tuned "
            "recommender, or use another corruption")


def circuit_metric(
    model, clean: Sequence[Sample], corrupted: Sequence[Sample], keep: Bool[torch.Tensor, "n_forward n_backward"],
    metric: str | Metric = "logit_diff", batch_size: int = 8, graph: Graph | None = None, align: str = "strict",
    last_only: bool = True,
) -> dict[str, float]:
    """Mean metric of the clean run, the corrupted run and the run where only ``keep`` edges stay clean."""
    graph = graph or Graph.from_model(model)
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


__all__ = ["MIB_SIZES", "MIN_METRIC_GAP", "FaithfulnessCurve", "circuit_metric", "corruption_effect",
           "faithfulness_curve"]
