"""``recircuit unlearn``: forget users from a fine-tuned recommender.

Usage::

    recircuit unlearn --method cure --checkpoint runs/ft/model --forget-fraction 0.1 --out runs/unlearn
    recircuit unlearn --method cure --forget-rule ga --ga-bound 3 --grouping-top-k 0.3 ...
    recircuit unlearn --method npo --npo-beta 0.2 ...
    recircuit unlearn --method cure --corruption ppr --corruption-arg far_fraction=0.1 --data-dir data/ml-100k ...

The loop flags (``--steps``, ``--lr``, ``--batch-size``, ``--seed``) are shared; every other
method flag comes from the chosen method's config dataclass (``recircuit unlearn --help`` lists
them with the methods they apply to). A flag the chosen method does not have is refused.
``--corruption-arg KEY=VALUE`` (repeatable) sets CURE's ``corruption_args``. CURE gets the data
set the data flags name (MovieLens from the asset by default), so its importance step can use a
corruption drawn from that data set's catalogue (``target_swap``, ``history_resample``, ``ppr``).

**Outputs, and when nothing is written.** A run that can be trusted (status ``ok`` or
``early_stop``) writes ``OUT/model.{safetensors,json}``, ``OUT/audit.json`` (with the status) and,
for CURE, ``OUT/grouping.json``. A run that cannot (status ``restored``: a non-finite or diverged
loss made the loop restore earlier weights; ``destroyed``: the final model failed the guard on
retain samples) writes no model and no ``audit.json`` (a good one from an earlier run stays as it
was), only ``OUT/audit.failed.json`` with the status and reason, and exits non-zero with one line.
Restored weights are not saved: they are not the unlearned model that was asked for. A
trusted run removes an ``OUT/audit.failed.json`` left by an earlier failed run.

A LoRA checkpoint (``--checkpoint`` of a ``kind: "lora"`` sidecar) has its adapters merged into
the base weights before unlearning, and the unlearned model is saved as a full checkpoint
(``kind: "full"``): the methods update every weight, not only the adapters.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time

#: The shared loop's flags (the rest come from the method configs).
_LOOP_FLAGS = {"steps", "lr", "batch_size", "seed"}


def _drop_status_warnings(record: logging.LogRecord) -> bool:
    return not hasattr(record, "unlearn_status")


def _optional(tp: type):
    def parse(text: str):
        return None if text.strip().lower() == "none" else tp(text)

    parse.__name__ = f"{tp.__name__} or none"
    return parse


def _method_flags() -> dict[str, dict]:
    """``{dest: {"field": ConfigField, "methods": [...]}}`` over every registered method's config."""
    from recircuit.unlearn import available_methods, config_class, config_fields

    flags: dict[str, dict] = {}
    for name in available_methods():
        for f in config_fields(config_class(name)):
            if f.dest in _LOOP_FLAGS:
                raise ValueError(f"method {name!r}'s config field {f.dest!r} shadows a loop flag; rename it")
            entry = flags.setdefault(f.dest, {"field": f, "methods": []})
            if (entry["field"].type, entry["field"].optional) != (f.type, f.optional):
                raise ValueError(f"config field {f.dest!r} has different types in methods {entry['methods'][0]!r} "
                                 f"and {name!r}; give it one type or another name")
            entry["methods"].append(name)
    return flags


def _corruption_methods() -> list[str]:
    """The registered methods whose config has ``corruption_args`` (CURE and its variants)."""
    from recircuit.unlearn import available_methods, config_class

    return [n for n in available_methods()
            if "corruption_args" in {f.name for f in dataclasses.fields(config_class(n))}]


def add_unlearn_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``unlearn`` subcommand (method flags from the registered configs)."""
    from recircuit.unlearn import available_methods

    p = subparsers.add_parser("unlearn", help="forget users with CURE or a baseline")
    p.add_argument("--method", default="cure", choices=available_methods())
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint (the model to unlearn from)")
    p.add_argument("--device", default=None)
    from recircuit.cli.common import add_data_source_args

    add_data_source_args(p)
    p.add_argument("--n-train", type=int, default=512, help="training samples the checkpoint saw")
    p.add_argument("--per-user", type=int, default=16, help="at most this many training samples per user")
    p.add_argument("--forget-fraction", type=float, default=0.1, help="share of the pool's users to forget, in (0, 1)")
    p.add_argument("--forget-users", type=int, nargs="*", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=8, help="forget and retain samples per step")
    p.add_argument("--out", default="runs/unlearn")
    p.add_argument("--json", action="store_true")
    g = p.add_argument_group("method settings (each applies to the methods named)")
    for dest, entry in _method_flags().items():
        f = entry["field"]
        where = f"[{', '.join(entry['methods'])}; default {f.default}]"
        kw = dict(dest=dest, default=argparse.SUPPRESS, help=f"{f.help} {where}".strip().replace("%", "%%"))
        if f.type is bool:
            g.add_argument(f.flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            g.add_argument(f.flag, type=_optional(f.type) if f.optional else f.type,
                           metavar=f.type.__name__.upper(), **kw)
    g.add_argument("--corruption-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="an argument of --corruption (repeatable), e.g. seed=1 or far_fraction=0.1 for ppr "
                        f"[{', '.join(_corruption_methods())}]")
    p.set_defaults(func=cmd_unlearn)
    return p


def check_args(args: argparse.Namespace):
    """Validate the flags before any work; return ``(LoopConfig, method config)``.

    Raises:
        InputError: a flag out of range, or a method flag the chosen method does not have.
    """
    from recircuit.errors import InputError
    from recircuit.unlearn import LoopConfig, config_class, config_fields
    from recircuit.unlearn.config import from_flat
    from recircuit.unlearn.registry import method_entry

    if getattr(method_entry(args.method)[0], "exact", False):
        raise InputError(f"{args.method!r} is an exact method: it trains shard adapters over a base model instead of "
                         "changing one checkpoint", field="--method",
                         fix=f"run it from Python: get_method({args.method!r}).run(base, forget, retain) "
                             "(README: exact unlearning)")
    if args.forget_users is None and not (0 < args.forget_fraction < 1):
        raise InputError(f"is {args.forget_fraction:g}; it is the share of the pool's users to forget",
                         field="--forget-fraction", fix="give a number between 0 and 1 (exclusive), e.g. 0.1")
    for flag, value, low in (("--steps", args.steps, 0), ("--n-train", args.n_train, 1),
                             ("--per-user", args.per_user, 1), ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise InputError(f"is {value}; it must be at least {low}", field=flag)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise InputError(f"is {args.lr:g}; it must be a positive number", field="--lr", fix="e.g. --lr 1e-5")
    loop = LoopConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    cls = config_class(args.method)
    own = {f.dest: f for f in config_fields(cls)}
    flags = _method_flags()
    given = {d: getattr(args, d) for d in flags if hasattr(args, d)}
    stray = sorted(d for d in given if d not in own)
    if stray:
        f = flags[stray[0]]
        raise InputError(f"does not apply to --method {args.method} (it is a setting of "
                         f"{', '.join(f['methods'])})", field=f["field"].flag,
                         fix=f"{args.method}'s flags: {', '.join(x.flag for x in own.values()) or 'none'}")
    try:
        cfg = from_flat(cls, {own[d].path: v for d, v in given.items()}, f"method {args.method!r}")
    except InputError as err:
        bad = next((f for f in own.values() if err.field in (f.path[-1], f.dest)), None)
        raise InputError(str(err).split(": ", 1)[-1], field=bad.flag if bad else "--method") from err
    if getattr(args, "corruption_arg", None):
        if args.method not in _corruption_methods():
            raise InputError(f"does not apply to --method {args.method} (it is a setting of "
                             f"{', '.join(_corruption_methods())})", field="--corruption-arg")
        from recircuit.cli.circuit import corruption_args

        cfg = dataclasses.replace(cfg, corruption_args=corruption_args(args, cfg.corruption))
    return loop, cfg


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Run one method; save the unlearned weights, the audit record and the metrics only if it can be trusted."""
    from pathlib import Path

    from recircuit._io import atomic_write_json
    from recircuit.cli.common import data_source_from_args, emit
    from recircuit.data import cap_per_user, forget_retain_split
    from recircuit.errors import RunFailed
    from recircuit.evaluate import audit_record, model_hash
    from recircuit.metrics import classification_metrics
    from recircuit.models import load_model, score
    from recircuit.train import load_checkpoint, lora_modules, merge_lora, save_checkpoint
    from recircuit.unlearn import get_method

    loop, cfg = check_args(args)
    # the failure is reported once, as the RunFailed line below: drop the library's own warning of it
    logging.getLogger("recircuit.unlearn.base").addFilter(_drop_status_warnings)
    source = data_source_from_args(args)
    # CURE's importance step draws catalogue-based corruptions from the data set the samples come from
    method = get_method(args.method, cfg, **({"data_source": source} if args.method in _corruption_methods() else {}))
    split = source.split("tallrec")
    pool = cap_per_user(split.train, args.per_user, args.n_train)
    sub = type(split)(split.name, pool, split.valid, split.test, split.params)
    req = forget_retain_split(sub, level="user", fraction=args.forget_fraction, seed=args.seed, user_ids=args.forget_users)
    model = load_model(args.model, device=args.device)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
        if lora_modules(model):
            # the methods update the base weights (Projection.param is the parametrization's
            # original): fold the adapters in, so the unlearned model is a full one and is saved whole
            merge_lora(model)
    before = model_hash(model)
    t = time.perf_counter()
    res = method.run(model, req.forget, req.retain, loop, heldout=split.valid[:64])
    secs = time.perf_counter() - t
    out = Path(args.out)
    config = {"loop": loop.to_dict(), "method": cfg.to_dict()}
    audit = audit_record(req.forget, before, model_hash(model), config, args.method, secs,
                         extra={"stopped": res.stopped, **({"warnings": res.extra["warnings"]}
                                                          if "warnings" in res.extra else {})},
                         status=res.status)
    if not res.ok:
        failed = atomic_write_json(out / "audit.failed.json", audit)
        raise RunFailed(f"{args.method}: {res.stopped} (status {res.status}); the model was not saved and nothing "
                        f"in {out} was replaced (audit record: {failed}); lower --lr or check the checkpoint")
    save_checkpoint(model, out / "model", {"unlearn": config, "method": args.method, "status": res.status,
                                           "request": req.to_dict()})
    atomic_write_json(out / "audit.json", audit)
    (out / "audit.failed.json").unlink(missing_ok=True)  # an earlier failed run's record no longer applies
    test = split.test[:200]
    m = classification_metrics([s.label for s in test], score(model, test))
    f = classification_metrics([s.label for s in req.forget], score(model, req.forget))
    row = {"method": args.method, "status": res.status, "forget_samples": len(req.forget),
           "forget_users": len(req.forget_users), "steps": res.steps, "stopped": res.stopped,
           "seconds": round(secs, 1), "test_auc": m["auc"], "forget_auc": f["auc"]}
    if res.extra.get("warnings"):
        row["warnings"] = "; ".join(res.extra["warnings"])
    if "group_sizes" in res.extra:
        row.update({f"n_{k}": v for k, v in res.extra["group_sizes"].items()})
        atomic_write_json(out / "grouping.json", res.extra["grouping"])
    emit(args, row)
    return 0
