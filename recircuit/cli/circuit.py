"""``recircuit circuit``: extract the recommendation circuit and write it to disk.

Usage::

    recircuit circuit --model smollm2-135m-instruct --n-samples 16 --method eap-ig-inputs \\
        --corruption label_flip --top-n 300 --out runs/circuit
    recircuit circuit --model tiny --data-json data/book --corruption target_swap --out runs/book_circuit
    recircuit circuit --model tiny --corruption ppr --corruption-arg far_fraction=0.1 --corruption-arg seed=1

When the corruption does not move the metric beyond its spread over the samples
(:func:`recircuit.circuits.check_corruption`), one ``note:`` line on stderr says so (and the JSON
summary carries it as ``faithfulness_note``); ``--faithfulness`` then skips the curve, unless
``--allow-unreliable`` draws it flagged.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator


class RegistryChoices:
    """argparse ``choices`` read from a registry when first needed (keeps ``recircuit --help`` fast).

    ``names`` returns the registered names; argparse calls ``in`` to validate a given value and
    iterates to list the choices in help and error messages.
    """

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self._names = names

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _corruption_names() -> tuple[str, ...]:
    from recircuit.circuits.corruptions import corruption_names

    return corruption_names()


def _metric_names() -> tuple[str, ...]:
    from recircuit.circuits.metrics import METRICS

    return tuple(METRICS)


def _method_names() -> tuple[str, ...]:
    from recircuit.circuits import METHODS

    return tuple(METHODS)


def add_circuit_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``circuit`` subcommand."""
    p = subparsers.add_parser("circuit", help="extract the Yes/No recommendation circuit (EAP / EAP-IG)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint to load first")
    p.add_argument("--device", default=None)
    p.add_argument("--preset", default="tallrec", choices=["tallrec", "random"])
    from recircuit.cli.common import add_data_source_args

    add_data_source_args(p)
    p.add_argument("--part", default="test", choices=["train", "valid", "test"])
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--method", default="eap-ig-inputs", choices=RegistryChoices(_method_names))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--metric", default="logit_diff", choices=RegistryChoices(_metric_names),
                   help="the metric attribution differentiates (recircuit.circuits.metrics.METRICS)")
    p.add_argument("--corruption", default="label_flip", choices=RegistryChoices(_corruption_names),
                   help="a registered corruption (recircuit.circuits.corruptions.register_corruption)")
    p.add_argument("--corruption-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="an argument of the corruption (repeatable), e.g. seed=1 or far_fraction=0.1 for ppr")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top-n", type=int, default=300)
    p.add_argument("--faithfulness", action="store_true", help="also compute the MIB faithfulness curve")
    p.add_argument("--allow-unreliable", action="store_true",
                   help="compute the faithfulness curve even when the corruption does not move the metric "
                        "beyond its spread over the samples (the curve is then flagged)")
    p.add_argument("--out", default="runs/circuit", help="output stem: <out>.json + <out>.safetensors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_circuit)
    return p


def corruption_args(args: argparse.Namespace, name: str | None = None) -> dict:
    """The ``--corruption-arg KEY=VALUE`` flags, checked against corruption ``name`` (default
    ``args.corruption``) before any model is loaded.

    Raises:
        InputError: a malformed pair, or an argument the corruption does not take (the flag named,
            the corruption's arguments listed).
    """
    from recircuit.circuits.corruptions import check_corruption_args
    from recircuit.cli.common import corruption_args_from
    from recircuit.errors import InputError

    flag = "--corruption-arg"
    cargs = corruption_args_from(getattr(args, "corruption_arg", None), flag)
    try:
        return check_corruption_args(name or args.corruption, cargs, field=flag)
    except InputError as err:
        raise InputError(str(err).split(": ", 1)[-1], field=flag) from err


def cmd_circuit(args: argparse.Namespace) -> int:
    """Run attribution, select the circuit, save it and print a summary."""
    from recircuit.circuits import (
        AttributionConfig,
        Circuit,
        attribute,
        check_corruption,
        faithfulness_curve,
    )
    from recircuit.circuits.corruptions import corruption_for
    from recircuit.cli.common import data_source_from_args, emit
    from recircuit.models import load_model

    cargs = corruption_args(args)
    model = load_model(args.model, device=args.device)
    if args.checkpoint:
        from recircuit.train import load_checkpoint

        load_checkpoint(model, args.checkpoint)
    source = data_source_from_args(args)
    samples = source.samples(args.part, args.preset)[: args.n_samples]
    corrupted = corruption_for(args.corruption, model.tokenizer, seed=0, source=source, args=cargs)(samples)
    cfg = AttributionConfig(method=args.method, steps=args.steps, metric=args.metric, batch_size=args.batch_size, align="left")
    t = time.perf_counter()
    res = attribute(model, samples, corrupted, cfg)
    secs = time.perf_counter() - t
    meta = {"model": args.model, "checkpoint": args.checkpoint,
            "data": {"preset": args.preset, "part": args.part, "n": len(samples), "source": source.to_dict()},
            "method": args.method, "corruption": args.corruption, "metric": args.metric,
            **({"corruption_args": cargs} if cargs else {})}
    circ = Circuit.from_attribution(res, top_n=args.top_n, metadata=meta)
    summary = {"edges_total": res.graph.n_edges, "edges_in_circuit": circ.n_edges, "seconds": round(secs, 1),
               "clean_metric": round(res.clean_metric, 4), "corrupted_metric": round(res.corrupted_metric, 4)}
    check = check_corruption(res.clean_metric, res.corrupted_metric, args.corruption,
                             res.clean_per_sample, res.corrupted_per_sample)
    if not check.ok:
        circ.metadata["faithfulness_note"] = check.note
        if args.json:                # the text table stays narrow; the note is its own stderr line
            summary["faithfulness_note"] = check.note
        skipped = " (faithfulness curve skipped; --allow-unreliable draws it flagged)" if (
            args.faithfulness and not args.allow_unreliable) else ""
        print(f"note: {check.note}{skipped}", file=sys.stderr)
    if args.faithfulness and (check.ok or args.allow_unreliable):
        curve = faithfulness_curve(model, res, samples, corrupted, batch_size=args.batch_size, align="left",
                                   allow_unreliable=args.allow_unreliable, corruption=args.corruption)
        circ.metadata["faithfulness"] = curve.to_dict()
        summary.update({"CPR": round(curve.cpr, 4), "CMD": round(curve.cmd, 4)})
        if curve.flag:
            summary["faithfulness_flag"] = curve.flag
    js, _ = circ.save(args.out)
    summary["file"] = str(js)
    top = sorted(circ.module_importance().items(), key=lambda kv: -kv[1])[:10]
    if args.json:
        emit(args, {"summary": summary, "top_modules": top})
    else:
        emit(args, summary, title="circuit")
        emit(argparse.Namespace(json=False), [{"module": n, "importance": v} for n, v in top], title="\ntop modules")
    return 0
