"""Helpers shared by the ``recircuit`` subcommands: output, sample selection, score reports."""

from __future__ import annotations

import argparse
import json
import resource

from recircuit.report_table import format_table


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


def load_samples(args: argparse.Namespace):
    """Samples selected by ``--preset/--data-dir/--part/--limit`` or ``--json-file``."""
    if getattr(args, "data_json", None):
        from recircuit.data import load_tallrec_json

        samples = load_tallrec_json(args.data_json)
    else:
        from recircuit.data import build_split

        samples = getattr(build_split(args.preset, data_dir=args.data_dir), args.part)
    return samples[: args.limit] if args.limit else samples


def score_report(samples, p_yes, scores_out: str | None = None) -> dict:
    """AUC / ACC / LogLoss with a 95% bootstrap interval of the AUC.

    With ``scores_out``, also writes ``{"uids", "labels", "p_yes"}`` there as JSON (atomically),
    so any other metric or subset (e.g. the first 300 samples) can be recomputed without a model.
    """
    from recircuit._io import atomic_write_text
    from recircuit.metrics import auc_interval, classification_metrics

    labels = [s.label for s in samples]
    m = classification_metrics(labels, p_yes)
    if len(set(labels)) == 2:
        m["auc_ci95"] = [round(x, 4) for x in auc_interval(labels, p_yes)]
    if scores_out:
        atomic_write_text(scores_out, json.dumps(
            {"uids": [s.uid for s in samples], "labels": labels,
             "p_yes": [round(float(x), 6) for x in p_yes]}))
        m["scores"] = str(scores_out)
    return m
