"""Is forgetting measurable, and is CURE's circuit split real? The validity study, in three phases.

    python benchmarks/validity.py select     # choose CURE's importance definition on the selection request
    python benchmarks/validity.py grid       # every method x 3 seeds x deletion rates 5/10/20%, as Ray tasks
    python benchmarks/validity.py report     # figures and tables from whatever has finished
    python benchmarks/validity.py all        # the three in turn
    python benchmarks/validity.py select --model tiny --data-dir ../shared/data/ml-100k --out /tmp/v   # smoke run

Every phase writes each finished unit (a candidate's resamples, a request) to ``<out>`` as it
finishes and skips what is there, so the study can be spread over several sessions or machines:
rerun the same command and it goes on where it stopped. The default ``--out`` lies inside the
repository (``benchmarks/results/validity``): the units are small JSON files, meant to be committed
as they land, so a later session or another machine resumes from them; checkpoints stay in the
cache (``$RECIRCUIT_CACHE``), and a resumed grid whose Original trains to other weights recomputes
the requests made on the old one (:func:`recircuit.pipeline.run_grid`).

**The protocol** (:func:`protocol_config`) is the two-stage one of
:class:`recircuit.pipeline.BaseConfig`: a base recommender on users outside the pool, then
Original = base + the whole pool, Retrain = base + the retain users, the same config and seed,
both trained with the Yes/No loss and the same 128 base samples replayed (``replay=128``: without
replay removing a few users flipped the answer prior and hid forgetting; with 64 the priors still
drifted between requests; with 128 both pilot requests passed both checks with margin, at some
cost in ranking: see :data:`STAGE2` and benchmarks/RESULTS.md). The base is the
README's recipe (:data:`README_RECIPE`, the first 512 samples outside the pool, no per-user cap):
a base drawn over fewer windows per user answered one way.
Every request is checked for measurable memorization (``memorization`` in each references
file: MIA gap >= 0.2 with a bootstrap interval above 0, forget JSD >= 2x test JSD).

**Selection, fixed before any result was seen.** The candidates (:data:`CANDIDATES`) are scored
on the *selection request only* (seed 0, rate 0.2), which the grid never reports: for each, CURE's
grouping is computed on 3 disjoint resamples of the forget and retain samples (each a third of the
forget samples, at most ``importance_samples``;
:func:`recircuit.unlearn.reproducibility.resample_groupings`), and the candidate with the highest
mean forget-specific Jaccard across resamples wins, among those whose forget-specific group is
non-empty in every resample; a tie (within 0.05) goes to today's definition if it is among them,
else to the larger forget-specific group. Unlearning outcomes play no part in the choice.
The grid then runs the winner as ``cure``, today's definition as ``cure:today`` and the winner's
random-groups control as ``cure-random``, with every baseline, on seeds 1, 2, 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from recircuit._io import atomic_write_json
from recircuit.errors import InputError, RunFailed, report_error
from recircuit.pipeline import (
    PROTOCOL_REPLAY,
    RECIPE_TRAIN,
    STAGE2_TRAIN,
    BaseConfig,
    EvalConfig,
    GridConfig,
    PipelineConfig,
    data_source,
    make_request,
    original_checkpoint,
    prepare_data,
    run_grid,
)
from recircuit.train import TrainConfig
from recircuit.unlearn import method_config
from recircuit.unlearn.grouping import Grouping, GroupingConfig, group_modules
from recircuit.unlearn.methods.cure import CUREConfig

#: CURE's importance definitions under comparison: CUREConfig settings over the shared ones.
CANDIDATES: dict[str, dict] = {
    "today": {},                                                        # logit difference, label flip, top-k
    "answer_loss": {"importance_metric": "logprob"},                    # (i) what the model memorized
    "user_swap": {"corruption": "user_swap"},                           # (ii) this user's paths
    "contrast": {"grouping": {"mode": "contrast"}},                     # (iii) shared part removed, bootstrap
    "contrast_answer_loss_user_swap": {"importance_metric": "logprob", "corruption": "user_swap",
                                       "grouping": {"mode": "contrast"}},
    "ppr": {"corruption": "ppr"},                                       # personalized-PageRank counterfactuals
    # heads and MLPs thresholded separately (GroupingConfig.per_kind): with one threshold every MLP
    # is task-shared, where it carries ~80% of CURE's update and the random control gets the same
    # MLPs. Added after the first grid requests; scored by the same rule, on the same importance
    # as the candidate it regroups (only the grouping differs, so no attribution is rerun).
    "today_per_kind": {"grouping": {"per_kind": True}},
    "user_swap_per_kind": {"corruption": "user_swap", "grouping": {"per_kind": True}},
}

#: The shared CURE settings of every candidate.
CURE_BASE = {"importance_samples": 8, "importance_steps": 3}

BASELINES = ("ga", "graddiff", "npo", "pcgrad", "e2urec")
#: Other localization methods run in the same table (same requests and seeds): CLUE (neurons) and its
#: random-neuron control.
LOCALIZERS = ("clue", "clue-random")
#: The protocol's base recipe, stage 2 and replay: :func:`recircuit.pipeline.PipelineConfig.protocol`
#: (the demo's too); the study's pool is twice the demo's.
README_RECIPE, STAGE2, REPLAY = RECIPE_TRAIN, STAGE2_TRAIN, PROTOCOL_REPLAY
POOL = 128
SELECTION = {"seed": 0, "rate": 0.2}
SEEDS = (1, 2, 3)
RATES = (0.05, 0.1, 0.2)


def protocol_config(model: str = "smollm2-135m-instruct", data_dir: str | None = None,
                    device: str | None = None) -> PipelineConfig:
    """The study's pipeline config (two-stage protocol, evaluation sets of 200 test samples and 100
    MIA non-members, the relearning attack on); ``model="tiny"`` shrinks it for a smoke run."""
    if model == "tiny":
        cfg = PipelineConfig.tiny(data_dir=data_dir)
        return dataclasses.replace(
            cfg, base=BaseConfig(n_train=24, per_user=4, n_valid=8, train=TrainConfig(
                mode="full", lr=3e-3, epochs=1, batch_size=8, eval_every=2, patience=2)),
            data=dataclasses.replace(cfg.data, n_valid=0, n_train=48, per_user=4),
            eval=EvalConfig(relearn_steps=2, relearn_lr=1e-3))
    return PipelineConfig.protocol(model, n_pool=POOL, data_dir=data_dir, device=device,
                                   eval=EvalConfig(relearn_steps=4, relearn_lr=1e-4))


def candidate_config(name: str, tiny: bool = False):
    """CURE's config for candidate ``name``."""
    base = {"importance_samples": 4, "importance_steps": 2} if tiny else CURE_BASE
    settings = {**base, **CANDIDATES[name]}
    return method_config("cure", **settings)


def select(cfg: PipelineConfig, out: Path, n_resamples: int = 3, tiny: bool = False) -> dict:
    """Phase 1: each candidate's grouping reproducibility on the selection request; the winner."""
    from recircuit.pipeline import Context, checkpoint_id
    from recircuit.train import load_trained
    from recircuit.unlearn.reproducibility import resample_groupings, split_reproducibility

    data = prepare_data(cfg)
    request = make_request(data, SELECTION["rate"], SELECTION["seed"])
    orig_path = original_checkpoint(cfg, data, Context(progress=True))   # base, then Original (cached)
    orig_id = checkpoint_id(orig_path)
    per_resample = max(1, len(request.forget) // n_resamples)      # disjoint resamples
    model = None
    scores = {}
    for name in CANDIDATES:
        mcfg = candidate_config(name, tiny)
        mcfg = dataclasses.replace(mcfg, importance_samples=min(mcfg.importance_samples, per_resample))
        path = out / "selection" / f"{name}.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("config") == mcfg.to_dict() and old.get("original") == orig_id:
                scores[name] = old
                continue
        src = _same_importance(mcfg, scores)
        if src is not None:     # only the grouping differs: regroup the saved importance of each resample
            gs = [_regroup(g, mcfg.grouping) for g in scores[src]["groupings"]]
        else:
            if model is None:
                model, _ = load_trained(orig_path, device=cfg.device)
            gs = resample_groupings(model, request.forget, request.retain, mcfg, n_resamples=n_resamples, seed=0,
                                    data_source=data_source(cfg), progress=True)
        scores[name] = {"config": mcfg.to_dict(), "original": orig_id, "n_forget": len(request.forget),
                        "jaccard": split_reproducibility(gs), "sizes": [g.sizes() for g in gs],
                        "groupings": [g.to_dict() for g in gs]}
        atomic_write_json(path, scores[name])
    eligible = {n: s for n, s in scores.items() if all(z["forget_specific"] > 0 for z in s["sizes"])}
    best = max(eligible, key=lambda n: eligible[n]["jaccard"]["forget_specific"], default=None)
    if best is not None:
        top = eligible[best]["jaccard"]["forget_specific"]
        tied = [n for n, s in eligible.items() if top - s["jaccard"]["forget_specific"] <= 0.05]
        best = "today" if "today" in tied else max(
            tied, key=lambda n: sum(z["forget_specific"] for z in eligible[n]["sizes"]))
    summary = {"request": SELECTION, "winner": best or "today",
               "why": "highest mean forget-specific Jaccard across resamples" if best else
                      "no candidate had a forget-specific group in every resample; today's definition is kept",
               "jaccard": {n: s["jaccard"] for n, s in scores.items()},
               "sizes": {n: s["sizes"] for n, s in scores.items()}}
    atomic_write_json(out / "selection.json", summary)
    return summary


def _same_importance(mcfg: CUREConfig, scores: dict) -> str | None:
    """A scored candidate whose module importance ``mcfg`` shares (every setting but the grouping
    equal, neither in contrast mode, which needs per-sample rows), or None."""
    mine = {k: v for k, v in mcfg.to_dict().items() if k != "grouping"}
    if mcfg.grouping.mode == "contrast":
        return None
    for name, entry in scores.items():
        other = dict(entry["config"])
        if other.get("grouping", {}).get("mode", "topk") != "contrast" and \
                {k: v for k, v in other.items() if k != "grouping"} == mine:
            return name
    return None


def _regroup(saved: dict, grouping: GroupingConfig) -> Grouping:
    """A saved resample's grouping, recomputed from its importance scores with ``grouping``."""
    g = group_modules(saved["forget_scores"], saved["retain_scores"], grouping)
    for key in ("resample_index", "resample_disjoint"):
        if key in saved["thresholds"]:
            g.thresholds[key] = saved["thresholds"][key]
    return g


def grid_config(cfg: PipelineConfig, winner: str, tiny: bool = False, seeds: tuple[int, ...] = SEEDS,
                rates: tuple[float, ...] = RATES, baselines: tuple[str, ...] = BASELINES,
                localizers: tuple[str, ...] = LOCALIZERS) -> tuple[PipelineConfig, GridConfig]:
    """Phase 2's config: the winner as ``cure`` with its control, today's CURE as ``cure:today``,
    the baselines and the other localization methods (CLUE)."""
    best = candidate_config(winner, tiny)
    methods = {"cure": best, "cure-random": method_config("cure-random", **best.to_dict())}
    if winner != "today":
        methods["cure:today"] = candidate_config("today", tiny)
    methods.update({m: method_config(m) for m in baselines})
    methods.update({m: method_config(m, **({"node_samples": 4, "max_nodes": 32} if tiny else {})) for m in localizers})
    cfg = dataclasses.replace(cfg, methods=methods, circuit=dataclasses.replace(cfg.circuit, enabled=False))
    return cfg, GridConfig(tuple(methods), tuple(seeds), tuple(rates))


def report(out: Path, result) -> list[Path]:
    """Phase 3: the two Pareto figures, the relearning curves, the group Jaccards, the tables."""
    import pandas as pd

    from recircuit.viz import jaccard_table, pareto_figure, relearn_figure
    from recircuit.viz.export import save_figure

    figs = out / "figures"
    measurable = {(r.rate, r.seed) for r in result.references if r.memorization.get("measurable")}
    bad = {(r.method, r.rate, r.seed) for r in result.runs if r.status not in ("ok", "early_stop")}
    rows = pd.DataFrame([r for r in result.report.rows if (r["method"], r["rate"], r["seed"]) not in bad])
    written = []
    for scope, keep in (("all", rows), ("measurable", rows[[(a, b) in measurable
                                                              for a, b in zip(rows["rate"], rows["seed"])]])):
        if keep.empty:
            continue
        for x in ("forget_jsd", "mia_gap_to_retrain"):
            fig = pareto_figure(keep, x=x, y="test_auc", exclude_from_front=("original",),
                                title=f"{x}: {'every request' if scope == 'all' else 'requests that passed the memorization check'}")
            written += [save_figure(fig, figs / f"pareto_{x}_{scope}.{ext}") for ext in ("html", "png")]
    curves: dict[float, list] = {}
    for r in result.runs:
        if r.result.get("relearn") and (r.method, r.rate, r.seed) not in bad:
            curves.setdefault(r.rate, []).append((r.method, r.seed, r.result["relearn"]))
    for ref in result.references:
        if ref.relearn:
            curves.setdefault(ref.rate, []).append(("retrain", ref.seed, ref.relearn))
    for rate, cs in sorted(curves.items()):
        long = [{"method": m, "seed": seed, "step": st, "loss": lb} for m, seed, c in cs
                for st, lb in zip(c["steps"], c["loss_b"])]
        written += [save_figure(relearn_figure(pd.DataFrame(long), title=f"relearning attack, deletion rate {rate}"),
                                figs / f"relearn_rate{rate}.{ext}") for ext in ("html", "png")]
    jac = {f"{m} across seeds, rate {rate}": v for m, by in result.report.meta["grouping_jaccard_across_seeds"].items()
           for rate, v in by.items()}
    if jac:
        atomic_write_json(out / "jaccard.json", jaccard_table(jac).to_dict("records"))
    atomic_write_json(out / "validity.json", {k: result.report.meta.get(k) for k in
                                              ("memorization", "not_measurable", "against_control",
                                               "grouping_jaccard_across_seeds", "failed", "code")})
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the phase(s) asked for (see the module docstring); exit 2 on bad input."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["select", "grid", "report", "all"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--num-cpus", type=int, default=None, help="cores of the local Ray (default: all)")
    ap.add_argument("--out", default="benchmarks/results/validity",
                    help="where finished units go (default: inside the repository, to be committed as they land)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="request seeds of the grid")
    ap.add_argument("--rates", type=float, nargs="+", default=list(RATES), help="deletion rates of the grid")
    ap.add_argument("--baselines", nargs="*", default=list(BASELINES))
    ap.add_argument("--localizers", nargs="*", default=list(LOCALIZERS), help="other localization methods (clue)")
    args = ap.parse_args(argv)
    out, tiny = Path(args.out), args.model == "tiny"
    try:
        cfg = protocol_config(args.model, args.data_dir, args.device)
        if args.phase in ("select", "all"):
            print(json.dumps(select(cfg, out, tiny=tiny), indent=1)[:4000])
        if args.phase in ("grid", "report", "all"):
            sel = out / "selection.json"
            if not sel.is_file():
                raise InputError(f"{sel} is missing: the grid runs the selected CURE", path=str(sel),
                                 fix="run the select phase first")
            gcfg, grid = grid_config(cfg, json.loads(sel.read_text())["winner"], tiny, tuple(args.seeds),
                                     tuple(args.rates), tuple(args.baselines), tuple(args.localizers))
            res = run_grid(gcfg, grid, out / "grid", num_cpus=args.num_cpus, compute=args.phase != "report")
            if args.phase in ("report", "all"):
                for p in report(out, res):
                    print(p)
            print(res.report.to_markdown())
    except (InputError, RunFailed) as err:
        return report_error("validity.py", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
