"""The ``recircuit`` command line.

Usage::

    recircuit assets fetch                 # download + verify the model and MovieLens-100K
    recircuit data build --preset tallrec --out data/movie
    recircuit score --model smollm2-135m-instruct --part test --limit 200
    recircuit demo                         # the main job, end to end

Every command prints a readable table; ``--json`` prints JSON instead, for scripts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import resource
import sys
import time
from collections.abc import Sequence

from recircuit.report_table import format_table

logger = logging.getLogger("recircuit")

#: Subcommands contributed by subpackages: module path -> function adding the parser.
PLUGIN_PARSERS = (
    ("recircuit.train.cli", "add_train_parser"),
    ("recircuit.circuits.cli", "add_circuit_parser"),
    ("recircuit.unlearn.cli", "add_unlearn_parser"),
)


def emit(args: argparse.Namespace, rows: list[dict] | dict, title: str | None = None) -> None:
    """Print ``rows`` as JSON (``--json``) or as a text table."""
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, default=str))
        return
    if title:
        print(title)
    print(format_table(rows if isinstance(rows, list) else [rows]))


def peak_memory_mb() -> float:
    """Peak resident memory of this process in MiB (plus CUDA peak when on GPU)."""
    mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import torch

        if torch.cuda.is_available():
            mb += torch.cuda.max_memory_allocated() / 2**20
    except ImportError:  # pragma: no cover
        pass
    return mb


def cmd_assets(args: argparse.Namespace) -> int:
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
    from recircuit.data import build_split

    kwargs = {"seed": args.seed, "history_len": args.history_len} if args.preset == "random" else {}
    split = build_split(args.preset, data_dir=args.data_dir, **kwargs)
    rows = [{"part": p, "samples": len(getattr(split, p)),
             "yes_rate": round(sum(s.label for s in getattr(split, p)) / max(1, len(getattr(split, p))), 4)}
            for p in ("train", "valid", "test")]
    if args.out:
        paths = split.save_tallrec(args.out)
        for row, path in zip(rows, paths):
            row["file"] = str(path)
    emit(args, rows if not args.json else {"split": split.to_dict(), "parts": rows})
    return 0


def load_samples(args: argparse.Namespace):
    """Samples selected by ``--preset/--data-dir/--part/--limit`` or ``--json-file``."""
    if getattr(args, "data_json", None):
        from recircuit.data import load_tallrec_json

        samples = load_tallrec_json(args.data_json)
    else:
        from recircuit.data import build_split

        samples = getattr(build_split(args.preset, data_dir=args.data_dir), args.part)
    return samples[: args.limit] if args.limit else samples


def run_score(model_name: str, samples, batch_size: int, device: str | None, checkpoint: str | None = None) -> dict:
    """Score samples zero-shot (or with a checkpoint) and return metrics plus speed and memory."""
    from recircuit.metrics import classification_metrics
    from recircuit.models import load_model, score

    model = load_model(model_name, device=device)
    if checkpoint:
        from recircuit.train import load_checkpoint

        load_checkpoint(model, checkpoint)
    t = time.perf_counter()
    p = score(model, samples, batch_size=batch_size)
    secs = time.perf_counter() - t
    m = classification_metrics([s.label for s in samples], p)
    m.update({"model": model_name, "samples_per_s": round(len(samples) / secs, 3),
              "seconds": round(secs, 1), "peak_mem_mb": round(peak_memory_mb(), 1)})
    return m


def cmd_score(args: argparse.Namespace) -> int:
    samples = load_samples(args)
    m = run_score(args.model, samples, args.batch_size, args.device, args.checkpoint)
    emit(args, m)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recircuit.assets import fetch_asset

    for name in ("smollm2-135m-instruct", "movielens-100k"):
        fetch_asset(name)
    args.data_json = None
    samples = load_samples(args)
    m = run_score(args.model, samples, args.batch_size, args.device)
    emit(args, m, title=f"Zero-shot {args.model} on the {args.preset} {args.part} split ({len(samples)} samples)")
    return 0


def _add_data_args(p: argparse.ArgumentParser, part: str = "test") -> None:
    p.add_argument("--preset", default="tallrec", choices=["tallrec", "random"], help="split preset")
    p.add_argument("--data-dir", default=None, help="directory with GroupLens u.* (or recbole) files")
    p.add_argument("--data-json", default=None, help="a TALLRec-format JSON file instead of a preset")
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
    pd_.add_argument("--data-dir", default=None)
    pd_.add_argument("--seed", type=int, default=0)
    pd_.add_argument("--history-len", type=int, default=10)
    pd_.add_argument("--out", default=None, help="directory for train/valid/test.json")
    pd_.add_argument("--json", action="store_true")
    pd_.set_defaults(func=cmd_data)

    for name, func, hlp in (("score", cmd_score, "Yes/No scoring with AUC"), ("demo", cmd_demo, "the main job")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--model", default="smollm2-135m-instruct")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.add_argument("--batch-size", type=int, default=8)
        _add_data_args(p)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    sub.choices["score"].add_argument("--checkpoint", default=None, help="fine-tuned checkpoint to load")

    for module, fn in PLUGIN_PARSERS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue
            raise
        getattr(mod, fn)(sub)
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
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as err:
        if args.verbose:
            raise
        print(f"recircuit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
