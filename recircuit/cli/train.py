"""``recircuit train``: TALLRec fine-tuning from the command line.

Usage::

    recircuit train --mode full --n-train 512 --lr 5e-5 --epochs 1 --out runs/ft_full
    recircuit train --mode lora --n-train 512 --lr 3e-4 --out runs/ft_lora --test
    recircuit train --mode full --lr 5e-5 --cache     # reuse / fill $RECIRCUIT_CACHE/models
    recircuit train --mode lora --data-format bookcrossing --data-path data/bx --out runs/ft_books
    recircuit train --mode lora --data-json data/tallrec_book --out runs/ft_tallrec_book

The data flags are those of ``score``, ``circuit`` and ``unlearn`` (:func:`recircuit.cli.common.add_data_source_args`).

A failed run (non-finite loss, divergence, a model collapsed to chance level, a broken --init
checkpoint) exits with status 2 and one line, and leaves the checkpoint already in --out untouched.
"""

from __future__ import annotations

import argparse

import numpy as np


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser("train", help="fine-tune a recommender (LoRA or full)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default=None)
    p.add_argument("--preset", default="tallrec", choices=["tallrec", "random"])
    from recircuit.cli.common import add_data_source_args

    add_data_source_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="lora", choices=["lora", "full"])
    p.add_argument("--n-train", type=int, default=512, help="first N training samples (0 = all)")
    p.add_argument("--train-offset", type=int, default=0,
                   help="skip the first K training samples (continue on new data with --init)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (e.g. a cached recommender's model.safetensors) "
                        "instead of the base model; recorded in the new checkpoint's sidecar")
    p.add_argument("--n-valid", type=int, default=200)
    p.add_argument("--lr", type=float, default=None, help="default: 5e-5 (full) / 3e-4 (lora)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=16)
    p.add_argument("--patience", type=int, default=3, help="validations without a better AUC before stopping")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning rate after warmup: cosine decay to 0, or constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--loss", default="answer", choices=["answer", "yes_no"],
                   help="answer: CE over ' Yes.'/' No.' (TALLRec); yes_no: 2-way CE of the Yes/No logits")
    p.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU too (AMX)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=None, help="default: 2 x rank")
    p.add_argument("--lora-targets", nargs="+", default=["q", "v"])
    p.add_argument("--test", action="store_true", help="evaluate on the test split afterwards")
    p.add_argument("--n-test", type=int, default=0, help="with --test: first N test samples (0 = all)")
    p.add_argument("--out", default="runs/train",
                   help="checkpoint folder; with --test, also test_scores.json (uid, label, P(Yes)), even with --cache")
    p.add_argument("--cache", action="store_true",
                   help="use the recommender cache ($RECIRCUIT_CACHE/models) instead of --out: reuse if present")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """Train, save the checkpoint, print metrics.

    The checkpoint in ``--out`` is replaced only by a successful run: a run that fails (bad input,
    non-finite loss, divergence, collapse to chance; see :mod:`recircuit.train.loop`) leaves it
    byte-identical and exits with status 2 and a one-line message.
    """
    from pathlib import Path

    from recircuit.cli.common import data_source_from_args, emit, score_report
    from recircuit.data import build_split
    from recircuit.errors import InputError
    from recircuit.models import load_model, score
    from recircuit.train import (
        LoraConfig,
        TrainConfig,
        cached_recommender,
        load_trained,
        train,
    )

    if args.cache and (args.init or args.train_offset):
        raise InputError("--cache keys a recommender by its config alone", field="--cache",
                         fix="use --out with --init/--train-offset")
    # the whole config is checked before any data or model is loaded
    for flag in ("n_train", "n_valid", "n_test", "train_offset"):
        if getattr(args, flag) < 0:
            raise InputError(f"must be >= 0, got {getattr(args, flag)}", field="--" + flag.replace("_", "-"),
                             fix="pass 0 or a positive number")
    lr = args.lr if args.lr is not None else (5e-5 if args.mode == "full" else 3e-4)
    alpha = args.lora_alpha if args.lora_alpha is not None else 2 * args.lora_rank
    cfg = TrainConfig(mode=args.mode, lr=lr, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                      eval_every=args.eval_every, patience=args.patience, max_steps=args.max_steps,
                      warmup_ratio=args.warmup_ratio, schedule=args.schedule, weight_decay=args.weight_decay, seed=args.seed,
                      cpu_bf16=args.cpu_bf16, loss=args.loss,
                      lora=LoraConfig(rank=args.lora_rank, alpha=alpha, targets=tuple(args.lora_targets)))
    kw = {"seed": args.seed} if args.preset == "random" else {}
    source = data_source_from_args(args)
    # plain MovieLens stays data_dir, so its split (and the recommender cache's keys) are those of before
    plain = source.format == "movielens" and set(source.to_dict()) <= {"format", "path"}
    split = (build_split(args.preset, data_dir=source.path, **kw) if plain
             else build_split(args.preset, source=source, **kw))
    n_train = args.n_train or None
    tr = split.train[args.train_offset:]
    tr = tr[:n_train] if n_train else tr
    if not tr:
        raise InputError(f"no training samples left: it is past the {len(split.train)} samples of the "
                         f"{args.preset!r} split", field="--train-offset", fix="lower it")
    va = split.valid[: args.n_valid]
    if args.cache:
        path = cached_recommender(args.model, split, cfg, n_train, args.n_valid, device=args.device)
        model, meta = load_trained(path, device=args.device)
        m = meta.get("metrics", {})
        row = {"mode": args.mode, "train_samples": meta.get("n_train"), "steps": m.get("steps"),
               "best_valid_auc": m.get("best_valid_auc"), "one_answer": bool(m.get("one_answer", False)),
               "seconds": round(m.get("seconds", 0.0), 1), "checkpoint": str(path)}
    else:
        model = load_model(args.model, device=args.device)
        meta = {"split": split.to_dict(), "n_train": len(tr), "n_valid": len(va), "train_offset": args.train_offset}
        if args.init:
            from recircuit.train import load_checkpoint

            parent = load_checkpoint(model, args.init)
            meta["init"] = {"checkpoint": str(args.init), "metrics": parent.get("metrics"),
                            "train_config": parent.get("train_config"), "n_train": parent.get("n_train")}
        res = train(model, tr, va, cfg, out_dir=args.out, meta=meta)
        row = {"mode": args.mode, "train_samples": len(tr), "steps": res.metrics["steps"],
               "best_valid_auc": res.metrics["best_valid_auc"], "one_answer": bool(res.metrics.get("one_answer", False)),
               "seconds": round(res.seconds, 1), "checkpoint": str(res.checkpoint)}
    if args.test:
        test = split.test[: args.n_test] if args.n_test else split.test
        p_yes = score(model, test, batch_size=args.batch_size, progress=True, desc="test")
        # always under --out, also with --cache: the shared recommender cache is left untouched
        m = score_report(test, p_yes, str(Path(args.out) / "test_scores.json"))
        row.update({"test_samples": len(test), "test_auc": m["auc"], "test_auc_ci95": m.get("auc_ci95"),
                    "test_acc": m["acc"], "test_logloss": m["logloss"],
                    "test_yes_share": float((np.asarray(p_yes) > 0.5).mean()), "test_scores": m["scores"]})
    emit(args, row)
    return 0
