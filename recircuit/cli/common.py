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


def say(*lines: str) -> None:
    """Write lines of plain text to the command's standard output (the CLI's one text channel
    besides :func:`emit`)."""
    for line in lines:
        print(line)


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


def add_data_source_args(p: argparse.ArgumentParser, history_len: bool = True) -> None:
    """Add the data-source flags every data-reading subcommand shares (see :func:`data_source_from_args`).

    ``--data-dir`` (MovieLens), ``--data-json`` (TALLRec JSON file or folder), or ``--data-format``
    with ``--data-path`` (and ``--items-csv``, ``--columns``, ``--domain``, ``--like-threshold``,
    ``--rating-scale``, ``--history-len``) for BookCrossing and generic CSV ratings.
    """
    from recircuit.data.sources import FORMATS

    g = p.add_argument_group("data (default: MovieLens-100K from the asset cache)")
    g.add_argument("--data-dir", default=None, help="directory with GroupLens u.* (or recbole) MovieLens files")
    g.add_argument("--data-json", default=None,
                   help="TALLRec-format JSON: a file, or a folder with train.json/valid.json/test.json")
    g.add_argument("--data-format", default=None, choices=FORMATS, help="the reader of --data-path")
    g.add_argument("--data-path", default=None,
                   help="bookcrossing: folder with BX-Book-Ratings.csv and BX-Books.csv; csv: the interactions CSV")
    g.add_argument("--items-csv", default=None, help="csv: the items CSV (id, title[, author]); bookcrossing: BX-Books.csv")
    g.add_argument("--columns", nargs="+", default=None, metavar="NAME=HEADER",
                   help="csv column names, e.g. user=player item=game_id rating=stars timestamp=time title=name")
    g.add_argument("--domain", default=None, help="csv: the item domain (movie, book, game...)")
    g.add_argument("--like-threshold", type=float, default=None, help="ratings strictly above it are liked")
    g.add_argument("--rating-scale", default=None, help="1-5 (liked > 3) or 1-10 (liked >= 7), when no threshold")
    if history_len:
        g.add_argument("--history-len", type=int, default=10, help="history items per prompt (rating data)")


def _columns(pairs: list[str] | None) -> dict[str, str] | None:
    from recircuit.errors import InputError

    if pairs is None:
        return None
    out = {}
    for pair in pairs:
        name, sep, header = pair.partition("=")
        if not sep or not name or not header:
            raise InputError(f"{pair!r} is not NAME=HEADER", field="--columns", fix="e.g. --columns user=player rating=stars")
        out[name.strip()] = header.strip()
    return out


def data_source_from_args(args: argparse.Namespace):
    """The :class:`recircuit.data.DataSource` the data flags name (MovieLens from the asset when none).

    Raises:
        InputError: flags that contradict each other (``--data-dir`` with ``--data-json``...), a
            missing path, or a bad setting (the flag named).
    """
    from recircuit.data import DataSource
    from recircuit.errors import InputError

    fmt, path = getattr(args, "data_format", None), getattr(args, "data_path", None)
    for flag, value, implied in (("--data-json", getattr(args, "data_json", None), "tallrec-json"),
                                 ("--data-dir", getattr(args, "data_dir", None), "movielens")):
        if value is None:
            continue
        if path is not None or fmt not in (None, implied):
            raise InputError(f"{flag} reads {implied} data, and --data-format/--data-path name other data",
                             field=flag, fix=f"use {flag} alone, or --data-format with --data-path")
        if implied == "tallrec-json" and getattr(args, "data_dir", None) is not None:
            raise InputError("--data-json and --data-dir name two data sets", field="--data-json", fix="pass one of them")
        fmt, path = implied, value
    if fmt is None and path is not None:
        raise InputError("--data-path needs --data-format", field="--data-format",
                         fix="e.g. --data-format bookcrossing --data-path data/bx")
    settings = {"items": getattr(args, "items_csv", None), "domain": getattr(args, "domain", None),
                "columns": _columns(getattr(args, "columns", None)),
                "like_threshold": getattr(args, "like_threshold", None),
                "rating_scale": getattr(args, "rating_scale", None)}
    history = getattr(args, "history_len", 10)
    kw = {k: v for k, v in settings.items() if v is not None}
    if (fmt or "movielens") != "tallrec-json" and history != 10:
        kw["history_len"] = history
    try:
        return DataSource(fmt or "movielens", path, **kw)
    except InputError as err:
        flag = {"path": "--data-path", "items": "--items-csv", "columns": "--columns", "domain": "--domain",
                "like_threshold": "--like-threshold", "rating_scale": "--rating-scale",
                "history_len": "--history-len", "format": "--data-format"}.get(err.field or "", err.field)
        raise InputError(str(err).split(": ", 1)[-1] if err.field else str(err), field=flag) from err


def load_samples(args: argparse.Namespace):
    """Samples selected by the data flags (:func:`add_data_source_args`), ``--preset``, ``--part`` and ``--limit``.

    A single ``--data-json`` file is used whole (whatever ``--part``); a folder gives its part's file.
    """
    source = data_source_from_args(args)
    samples = source.samples(args.part, getattr(args, "preset", "tallrec"))
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


def corruption_args_from(pairs: list[str] | None, flag: str = "--corruption-arg") -> dict:
    """``KEY=VALUE`` flags as a corruption's arguments: each value read as JSON when it is a JSON
    scalar (``3``, ``0.1``, ``true``, ``null``), else kept as the string.

    Raises:
        InputError: a pair without ``=`` or a key given twice (the flag named).
    """
    from recircuit.errors import InputError

    out: dict = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{pair!r} is not KEY=VALUE", field=flag, fix=f"e.g. {flag} seed=1")
        if key in out:
            raise InputError(f"{key!r} is given twice", field=flag, fix="give each argument once")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key] = value if value is None or isinstance(value, str | int | float | bool) else text
    return out


def pipeline_data(source) -> tuple[str | None, object | None]:
    """``(data_dir, source)`` for :func:`recircuit.demo.demo_config`: plain MovieLens stays
    ``data_dir`` (so the configs, and their cache keys, are those of before sources existed);
    any other data set is passed as its source."""
    plain = source.format == "movielens" and set(source.to_dict()) <= {"format", "path"}
    return (source.path, None) if plain else (None, source)
