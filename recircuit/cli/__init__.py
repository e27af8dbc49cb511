"""The ``recircuit`` command line.

Usage::

    recircuit assets fetch                 # download + verify the model and MovieLens-100K
    recircuit data build --preset tallrec --out data/movie
    recircuit data build --data-format bookcrossing --data-path data/bx --history-len 5 --out data/book
    recircuit score --model tiny --data-json data/book/test.json
    recircuit score --model smollm2-135m-instruct --part test --limit 200
    recircuit demo                         # the main job, end to end
    recircuit models convert M.gguf OUT    # a GGUF file as a Hugging Face directory

Every command prints a readable table; ``--json`` prints JSON instead, for scripts.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from recircuit.cli.common import emit, load_samples, peak_memory_mb, score_report

logger = logging.getLogger("recircuit")


def cmd_assets(args: argparse.Namespace) -> int:
    """``recircuit assets``: describe the pinned offline assets, or fetch them (those named, else all)."""
    from recircuit.assets import ASSETS, describe_assets, fetch_asset

    if args.action == "fetch":
        names = args.names or sorted(ASSETS)
        rows = []
        for name in names:
            t = time.perf_counter()
            path = fetch_asset(name)
            rows.append({"asset": name, "path": str(path), "seconds": round(time.perf_counter() - t, 1)})
        emit(args, rows)
    else:
        emit(args, describe_assets())
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``recircuit data``: build a split and report each part's size and Yes rate (``--out``: write it as TALLRec JSON)."""
    from recircuit.cli.common import data_source_from_args

    source = data_source_from_args(args)
    kwargs = {"seed": args.seed} if args.preset == "random" else {}
    split = source.split(args.preset, **kwargs)
    rows = [{"part": p, "samples": len(getattr(split, p)),
             "yes_rate": round(sum(s.label for s in getattr(split, p)) / max(1, len(getattr(split, p))), 4)}
            for p in ("train", "valid", "test")]
    if args.out:
        paths = split.save_tallrec(args.out)
        for row, path in zip(rows, paths):
            row["file"] = str(path)
    emit(args, rows if not args.json else {"split": split.to_dict(), "parts": rows})
    return 0


def run_score(model_name: str, samples, batch_size: int, device: str | None, checkpoint: str | None = None,
              scores_out: str | None = None) -> dict:
    """Score samples zero-shot (or with a checkpoint) and return metrics plus speed and memory."""
    from recircuit.models import load_model, score

    model = load_model(model_name, device=device)
    if checkpoint:
        from recircuit.train import load_checkpoint

        load_checkpoint(model, checkpoint)
    t = time.perf_counter()
    p = score(model, samples, batch_size=batch_size)
    secs = time.perf_counter() - t
    m = score_report(samples, p, scores_out)
    m.update({"model": model_name, "samples_per_s": round(len(samples) / secs, 3),
              "seconds": round(secs, 1), "peak_mem_mb": round(peak_memory_mb(), 1)})
    return m


def cmd_score(args: argparse.Namespace) -> int:
    """``recircuit score``: P(Yes) of a model (optionally a checkpoint) on samples; prints the metrics and speed."""
    samples = load_samples(args)
    m = run_score(args.model, samples, args.batch_size, args.device, args.checkpoint, args.scores_out)
    emit(args, m)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole mission end to end (see :mod:`recircuit.demo`), then a short results table."""
    from recircuit.cli.common import data_source_from_args, pipeline_data, say
    from recircuit.demo import SUMMARY_COLUMNS, demo_config, run_demo

    source = data_source_from_args(args)
    data_dir, source = pipeline_data(source)
    cfg = demo_config(args.model, device=args.device, data_dir=data_dir, source=source, n_train=args.n_train,
                      forget_fraction=args.forget_fraction, seed=args.seed, steps=args.steps,
                      methods=args.methods or None, faithfulness=False if args.no_faithfulness else None)
    res = run_demo(cfg, args.out, progress=not args.json, fresh=args.fresh)
    if args.json:
        emit(args, res.to_dict())
        return 0
    rows = [{"method": m, **{c: res.table.loc[m, c] for c in SUMMARY_COLUMNS if c in res.table.columns}}
            for m in res.table.index]
    emit(args, rows, title=f"recircuit demo: {cfg.model}, forgetting {cfg.data.forget_fraction:.0%} of the users of "
                           f"{cfg.data.n_train} training samples (seed {cfg.data.seed})")
    say(*res.summary_lines())
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Redraw every figure from a saved results directory."""
    from recircuit.viz.figures import make_figures

    paths = make_figures(args.results, args.out, static=not args.html_only, top_n=args.top_n)
    emit(args, [{"figure": str(p)} for p in paths], title=f"{len(paths)} files written")
    return 0


def _add_data_args(p: argparse.ArgumentParser, part: str = "test") -> None:
    from recircuit.cli.common import add_data_source_args

    p.add_argument("--preset", default="tallrec", choices=["tallrec", "random"], help="split preset")
    add_data_source_args(p)
    p.add_argument("--part", default=part, choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="recircuit", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    pa = sub.add_parser("assets", help="fetch or list pinned assets")
    pa.add_argument("action", choices=["fetch", "list"])
    pa.add_argument("names", nargs="*", help="asset names (default: all)")
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(func=cmd_assets)

    pd_ = sub.add_parser("data", help="build a split and write TALLRec JSON")
    pd_.add_argument("action", choices=["build"])
    pd_.add_argument("--preset", default="tallrec", choices=["tallrec", "random"])
    pd_.add_argument("--seed", type=int, default=0)
    from recircuit.cli.common import add_data_source_args

    add_data_source_args(pd_)
    pd_.add_argument("--out", default=None, help="directory for train/valid/test.json")
    pd_.add_argument("--json", action="store_true")
    pd_.set_defaults(func=cmd_data)

    p = sub.add_parser("score", help="Yes/No scoring with AUC")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=8)
    _add_data_args(p)
    p.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint to load")
    p.add_argument("--scores-out", default=None, help="also write per-sample uid, label, P(Yes) to this JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="the main job: fine-tune, circuit, CURE vs Retrain and baselines, report, figures")
    p.add_argument("--model", default="smollm2-135m-instruct", help="'tiny' for a one-minute dry run")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    from recircuit.cli.common import add_data_source_args

    add_data_source_args(p)
    p.add_argument("--n-train", type=int, default=None, help="training pool size (whole users)")
    p.add_argument("--forget-fraction", type=float, default=None, help="share of the pool's users to forget")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="unlearning steps per method")
    p.add_argument("--methods", nargs="+", default=None, help="unlearning methods (default: cure ga npo)")
    p.add_argument("--no-faithfulness", action="store_true", help="skip the faithfulness sweep")
    p.add_argument("--fresh", action="store_true",
                   help="recompute the circuit, evaluation and methods instead of reusing unchanged results "
                        "from $RECIRCUIT_CACHE/results (cached checkpoints are still reused)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("figures", help="redraw every figure from a results directory (make figures)")
    p.add_argument("--results", default="runs/demo")
    p.add_argument("--out", default="figures")
    p.add_argument("--top-n", type=int, default=50, help="edges drawn in circuit diagrams")
    p.add_argument("--html-only", action="store_true", help="skip SVG/PDF/PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_figures)

    from recircuit.cli.circuit import add_circuit_parser
    from recircuit.cli.models import add_models_parser
    from recircuit.cli.stream import add_stream_parser
    from recircuit.cli.train import add_train_parser
    from recircuit.cli.unlearn import add_unlearn_parser

    for add in (add_train_parser, add_circuit_parser, add_unlearn_parser, add_stream_parser, add_models_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recircuit`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError, KeyError) as err:  # InputError, RunFailed included
        if args.verbose:
            raise
        print(f"recircuit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
