"""``recircuit stream``: a stream of deletion requests through each method, one request after another.

Usage::

    recircuit stream --n-requests 5 --methods cure npo sisa apa --out runs/stream
    recircuit stream --model tiny --data-dir ../shared/data/ml-100k --n-requests 2 --methods ga sisa   # a dry run

The pipeline is the demo's preset (:func:`recircuit.demo.demo_config`); the stream is
:func:`recircuit.streams.run_stream`. Rows (method x request) are printed; ``<out>/stream.json``
holds them with the chained audit records and ``<out>/stream.html`` draws the drift.
"""

from __future__ import annotations

import argparse


def add_stream_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``stream`` subcommand."""
    from recircuit.cli.common import add_data_source_args

    p = subparsers.add_parser("stream", help="a stream of deletion requests applied in turn by each method")
    p.add_argument("--model", default="smollm2-135m-instruct", help="'tiny' for a dry run")
    p.add_argument("--device", default=None)
    add_data_source_args(p)
    p.add_argument("--n-train", type=int, default=None, help="training pool size (whole users)")
    p.add_argument("--n-requests", type=int, default=5, help="requests in the stream")
    p.add_argument("--users-per-request", type=int, default=1, help="users each request forgets")
    p.add_argument("--seed", type=int, default=0, help="seed of the user draw")
    p.add_argument("--methods", nargs="+", default=["cure", "npo", "sisa", "apa"])
    p.add_argument("--out", default="runs/stream")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stream)
    return p


def cmd_stream(args: argparse.Namespace) -> int:
    """Run the stream and print one row per method and request."""
    from recircuit.cli.common import data_source_from_args, emit, pipeline_data
    from recircuit.demo import demo_config
    from recircuit.streams import STREAM_COLUMNS, StreamConfig, run_stream

    stream = StreamConfig(args.n_requests, args.users_per_request, args.seed, tuple(args.methods))
    source = data_source_from_args(args)
    data_dir, source = pipeline_data(source)
    cfg = demo_config(args.model, device=args.device, data_dir=data_dir, source=source, n_train=args.n_train,
                      methods=[m for m in args.methods], faithfulness=False)
    res = run_stream(cfg, stream, args.out, progress=not args.json)
    table = res.table.reset_index()
    rows = [{c: r[c] for c in ("method", "request", "n_forgotten", *STREAM_COLUMNS) if c in table.columns}
            for r in table.to_dict("records")]
    emit(args, rows, title=f"recircuit stream: {args.n_requests} requests of {args.users_per_request} user(s), "
                           f"{cfg.model}; compared after each with Retrain on everything not forgotten so far")
    return 0
