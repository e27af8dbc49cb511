"""The unlearning table: every method x seeds x deletion rates, against Retrain, as Ray tasks.

    python benchmarks/unlearning.py --model tiny --data-dir ../shared/data/ml-100k --seeds 0 --out /tmp/u  # smoke run
    python benchmarks/unlearning.py                      # SmolLM2-135M, 10% of users, 3 seeds (CPU, ~1 h)
    python benchmarks/unlearning.py --ray-address auto   # the same requests on an existing Ray cluster
    python benchmarks/unlearning.py --config runs/demo/demo.json --methods ga npo --seeds 0 1   # the demo's config

Exit status: 0 when every request finished and can be trusted, 1 when a request failed or must
not be trusted (listed at the end; ``<out>/runs/*.failed.json`` name the task errors), 2 on bad
input (one line naming the field).

This script is a grid config and a table around :func:`recircuit.pipeline.run_grid`; the
protocol (Original trained once per pool, a Retrain per request, every method from Original's
weights with the same budget, the evaluation against Retrain) lives in :mod:`recircuit.pipeline`.
Each (method, seed, rate) request is a Ray task (local: one per core, one torch thread each) and
is written to ``<out>/runs/`` as it finishes, so a rerun (after an interruption, or with more
seeds) only runs what is missing. Writes ``<out>/report.{json,md}`` (methods as rows, mean ± std
over seeds) and one audit record per method and request under ``<out>/audit/``.

Default sizes (chosen for about an hour on 2 CPU cores): a pool of 96 training samples from 16
users (6 each), full fine-tune lr 1e-4 for 3 epochs (36 steps) with no validation and no early
stopping (``--n-valid 0``: the last weights, so the forgotten users are memorized; ``--n-valid 32``
early-stops instead), 10% of users forgotten, 48 test samples, 24 held-out MIA non-members, 16
early-stop samples for unlearning; every method gets 6 steps of 4 forget + 4 retain samples at
lr 2e-5.

Grouping reproducibility: across seeds (``grouping_jaccard_across_seeds``), and, with
``--second-corruption`` (default ``history_resample``; ``none`` turns it off), CURE's grouping of
the first seed against the grouping the same request gets when module importance uses that
corruption instead of ``label_flip`` (``grouping_jaccard_label_flip_vs_<corruption>``; two EAP
runs on Original per rate, in this process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from recircuit.errors import InputError, RunFailed, report_error
from recircuit.pipeline import (
    DataConfig,
    GridConfig,
    MethodRun,
    PipelineConfig,
    grid_markdown,
    make_request,
    original_checkpoint,
    prepare_data,
    run_grid,
)
from recircuit.train import LoraConfig, TrainConfig
from recircuit.unlearn import LoopConfig, method_config

METHODS = ("ga", "graddiff", "npo", "pcgrad", "e2urec", "cure", "cure-random")


def _method(name: str, args: argparse.Namespace):
    if name.startswith("cure"):
        return method_config(name, importance_samples=args.importance_samples, importance_steps=args.importance_steps)
    return method_config(name)


def grid_config(args: argparse.Namespace) -> tuple[PipelineConfig, GridConfig]:
    """The pipeline config and the grid this command line asks for."""
    from recircuit.circuits import corruption_names

    if args.second_corruption not in ("none", *corruption_names()):
        raise InputError(f"unknown corruption {args.second_corruption!r}", field="--second-corruption",
                         fix=f"choose one of none, {', '.join(corruption_names())}")
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read the config: {err}", path=args.config,
                             fix="pass a pipeline config JSON (e.g. the demo's demo.json)") from err
        cfg = PipelineConfig.from_dict(d.get("config", d) if isinstance(d, dict) else d)
        methods = tuple(args.methods) if args.methods else tuple(cfg.methods)
        cfg = dataclasses.replace(cfg, methods={**cfg.methods, **{m: _method(m, args) for m in methods
                                                                   if m not in cfg.methods}})
        return cfg, GridConfig(methods, tuple(args.seeds), tuple(args.rates))
    methods = tuple(args.methods or METHODS)
    cfg = PipelineConfig(
        model=args.model, device=args.device,
        data=DataConfig(data_dir=args.data_dir, n_train=args.n_train, per_user=args.per_user, n_valid=args.n_valid,
                        n_stop=args.n_stop, n_test=args.n_test, n_heldout=args.n_heldout),
        train=TrainConfig(mode=args.mode, lr=args.train_lr, epochs=args.epochs, batch_size=8, lora=LoraConfig(),
                          seed=args.train_seed),
        methods={m: _method(m, args) for m in methods},
        loop=LoopConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, eval_samples=args.n_stop))
    return cfg, GridConfig(methods, tuple(args.seeds), tuple(args.rates))


def corruption_jaccard(config: PipelineConfig, runs: list[MethodRun], corruption: str) -> dict[str, dict]:
    """CURE's grouping vs the grouping of the same request with module importance under ``corruption``.

    For each rate, the CURE run of the smallest seed is scored again on Original with the other
    corruption (same samples, method, steps and grouping settings), and the two groupings are
    compared with :func:`recircuit.unlearn.grouping.grouping_jaccard`.

    Returns:
        ``{"rate=<r> seed=<s>": {group: jaccard}}`` (empty when the grid has no CURE run).
    """
    from recircuit.pipeline import data_source
    from recircuit.train import load_trained
    from recircuit.unlearn import Grouping, GroupingConfig, get_method
    from recircuit.unlearn.grouping import grouping_jaccard

    first: dict[float, MethodRun] = {}
    for r in runs:
        if r.method == "cure" and r.grouping and (r.rate not in first or r.seed < first[r.rate].seed):
            first[r.rate] = r
    if not first:
        return {}
    mcfg = dataclasses.replace(config.methods["cure"], corruption=corruption, corruption_args={})
    data = prepare_data(config)
    original, _ = load_trained(original_checkpoint(config, data), device=config.device)
    cure = get_method("cure", mcfg, data_source=data_source(config))
    cure.loop = dataclasses.replace(config.loop)
    out = {}
    for rate, run in sorted(first.items()):
        request = make_request(data, rate, run.seed)
        other = cure.make_grouping(original, request.forget, request.retain)   # CURE's own importance step
        g = Grouping(**{**run.grouping, "config": GroupingConfig(**run.grouping["config"])})
        out[f"rate={rate} seed={run.seed}"] = grouping_jaccard([g, other])
    return out


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="a pipeline config JSON (or a demo.json); the size flags are then ignored")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=96, help="training pool (whole users)")
    ap.add_argument("--per-user", type=int, default=6, help="training samples per user (forgetting is per user)")
    ap.add_argument("--n-valid", type=int, default=0,
                    help="validation samples for early stopping of fine-tuning (0: none, train every epoch)")
    ap.add_argument("--n-test", type=int, default=48)
    ap.add_argument("--n-heldout", type=int, default=24, help="never-trained MIA non-members (end of valid)")
    ap.add_argument("--n-stop", type=int, default=16, help="never-trained samples for early stopping (start of valid)")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the forget-set sampling")
    ap.add_argument("--methods", nargs="+", default=None, help=f"default: {' '.join(METHODS)}")
    ap.add_argument("--mode", default="full", choices=["full", "lora"])
    ap.add_argument("--train-lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-seed", type=int, default=0, help="training seed of Original and every Retrain")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch-size", type=int, default=4, help="unlearning batch (forget and retain)")
    ap.add_argument("--importance-samples", type=int, default=4)
    ap.add_argument("--importance-steps", type=int, default=2)
    ap.add_argument("--second-corruption", default="history_resample",
                    help="compare CURE's grouping with the one under this corruption ('none': skip)")
    ap.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto', 'ray://head:10001'); "
                                                        "default: a local one on this machine's cores")
    ap.add_argument("--num-cpus", type=int, default=None, help="cores of the local Ray (default: all)")
    ap.add_argument("--fresh", action="store_true", help="recompute every request and cached result")
    ap.add_argument("--out", default="runs/unlearning")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print the table; the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    try:
        cfg, grid = grid_config(args)
        res = run_grid(cfg, grid, args.out, ray_address=args.ray_address, num_cpus=args.num_cpus, fresh=args.fresh)
        second = args.second_corruption
        if second and second != "none":
            res.report.meta[f"grouping_jaccard_label_flip_vs_{second}"] = corruption_jaccard(cfg, res.runs, second)
            res.report.save(res.out_dir / "report")
    except (InputError, RunFailed) as err:
        return report_error("unlearning.py", err)
    print(grid_markdown(res))
    print(f"\n{len(res.submitted)} requests run now, {len(res.runs) - len(res.submitted)} reused from {args.out}/runs")
    print("\nSomething to forget? Original vs Retrain on the forget set:")
    print(json.dumps(res.report.meta["memorization"], indent=1))
    print("\nGrouping reproducibility (Jaccard per group):")
    print(json.dumps({k: v for k, v in res.report.meta.items() if k.startswith("grouping_jaccard")}, indent=1))
    if res.failed:
        print("\nRequests that failed or must not be trusted:\n" + "\n".join(res.failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
