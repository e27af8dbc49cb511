"""``recircuit unlearn``: forget users from a fine-tuned recommender.

Usage::

    recircuit unlearn --method cure --checkpoint runs/ft/model --forget-fraction 0.1 --out runs/unlearn
"""

from __future__ import annotations

import argparse
import time


def add_unlearn_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``unlearn`` subcommand."""
    from recircuit.unlearn import available_methods

    p = subparsers.add_parser("unlearn", help="forget users with CURE or a baseline")
    p.add_argument("--method", default="cure", choices=available_methods())
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint (the model to unlearn from)")
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-train", type=int, default=512, help="training samples the checkpoint saw")
    p.add_argument("--per-user", type=int, default=16, help="at most this many training samples per user")
    p.add_argument("--forget-fraction", type=float, default=0.1)
    p.add_argument("--forget-users", type=int, nargs="*", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--out", default="runs/unlearn")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_unlearn)
    return p


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Run one method, save the unlearned weights, the audit record and the metrics."""
    from pathlib import Path

    from recircuit._io import atomic_write_json
    from recircuit.cli.common import emit
    from recircuit.data import build_split, cap_per_user, forget_retain_split
    from recircuit.evaluate import audit_record, model_hash
    from recircuit.metrics import classification_metrics
    from recircuit.models import load_model, score
    from recircuit.train import load_checkpoint, save_checkpoint
    from recircuit.unlearn import UnlearnConfig, get_method

    split = build_split("tallrec", data_dir=args.data_dir)
    pool = cap_per_user(split.train, args.per_user, args.n_train)
    sub = type(split)(split.name, pool, split.valid, split.test, split.params)
    req = forget_retain_split(sub, level="user", fraction=args.forget_fraction, seed=args.seed, user_ids=args.forget_users)
    model = load_model(args.model, device=args.device)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    before = model_hash(model)
    cfg = UnlearnConfig(steps=args.steps, lr=args.lr, seed=args.seed)
    t = time.perf_counter()
    res = get_method(args.method).run(model, req.forget, req.retain, cfg, heldout=split.valid[:64])
    secs = time.perf_counter() - t
    out = Path(args.out)
    save_checkpoint(model, out / "model", {"unlearn": cfg.to_dict(), "method": args.method, "request": req.to_dict()})
    atomic_write_json(out / "audit.json", audit_record(req.forget, before, model_hash(model), cfg.to_dict(), args.method, secs))
    test = split.test[:200]
    m = classification_metrics([s.label for s in test], score(model, test))
    f = classification_metrics([s.label for s in req.forget], score(model, req.forget))
    row = {"method": args.method, "forget_samples": len(req.forget), "forget_users": len(req.forget_users),
           "steps": res.steps, "stopped": res.stopped, "seconds": round(secs, 1), "test_auc": m["auc"], "forget_auc": f["auc"]}
    if "group_sizes" in res.extra:
        row.update({f"n_{k}": v for k, v in res.extra["group_sizes"].items()})
        atomic_write_json(out / "grouping.json", res.extra["grouping"])
    emit(args, row)
    return 0
