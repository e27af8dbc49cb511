"""The unlearning table: every method x seeds x deletion rates, against Retrain.

    python benchmarks/unlearning.py --model tiny --n-train 96 --rates 0.1 --seeds 0      # smoke run, minutes
    python benchmarks/unlearning.py --n-train 512 --rates 0.1 --seeds 0 1 2 --steps 30   # SmolLM2 on CPU

Protocol (E2URec / CURE): the original model is fine-tuned on train = forget + retain; Retrain
is fine-tuned on retain only with the same config and seed; the forget set is all training
samples of a seeded fraction of users. Original and Retrain checkpoints are cached per
(model, sizes, seed, rate) under ``--cache``, so reruns only redo what changed. Writes
``<out>/report.{json,md}`` (methods as rows, mean ± std over seeds) and one audit record per run.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path

from recircuit._io import atomic_write_json
from recircuit.data import build_split, cap_per_user, forget_retain_split
from recircuit.evaluate import UnlearningReport, audit_record, evaluate_unlearning, model_hash
from recircuit.evaluate.metrics import memorization_gap
from recircuit.models import load_model
from recircuit.train import LoraConfig, TrainConfig, load_checkpoint, train
from recircuit.unlearn import Grouping, GroupingConfig, UnlearnConfig, get_method, group_modules
from recircuit.unlearn.grouping import grouping_jaccard
from recircuit.unlearn.importance import module_importance


def _trained(model_name: str, samples, valid, cfg: TrainConfig, path: Path):
    model = load_model(model_name, device="cpu" if model_name == "tiny" else None)
    if (path.with_name(path.name + ".json")).exists():
        load_checkpoint(model, path)
        secs = json.loads(path.with_name(path.name + ".json").read_text())["metrics"]["seconds"]
        return model, secs
    res = train(model, samples, valid, cfg)
    from recircuit.train import save_checkpoint

    save_checkpoint(model, path, {"metrics": res.metrics, "train_config": cfg.to_dict()})
    return model, res.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--per-user", type=int, default=16, help="training samples per user (forgetting is per user)")
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-heldout", type=int, default=100)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["ga", "graddiff", "npo", "pcgrad", "e2urec", "cure", "cure-random"])
    ap.add_argument("--mode", default="full", choices=["full", "lora"])
    ap.add_argument("--train-lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--second-corruption", default="history_resample",
                    help="corruption compared with label_flip for grouping reproducibility ('' to skip)")
    ap.add_argument("--cache", default="runs/unlearning_cache")
    ap.add_argument("--out", default="runs/unlearning")
    args = ap.parse_args()

    split = build_split("tallrec", data_dir=args.data_dir)
    # the user-level protocol needs several samples per user: take whole users from the train split
    train_pool = cap_per_user(split.train, args.per_user, args.n_train)
    test, heldout = split.test[: args.n_test], split.valid[: args.n_heldout]
    tcfg = TrainConfig(mode=args.mode, lr=args.train_lr, epochs=args.epochs, batch_size=8, lora=LoraConfig())
    out, cache = Path(args.out), Path(args.cache)
    report = UnlearningReport(meta={"model": args.model, "n_train": len(train_pool), "n_test": len(test),
                                    "n_heldout": len(heldout), "rates": args.rates, "seeds": args.seeds,
                                    "train_config": tcfg.to_dict(), "unlearn_steps": args.steps, "unlearn_lr": args.lr})
    sub = type(split)(split.name, train_pool, split.valid, split.test, split.params)
    groupings: dict[float, list[Grouping]] = {}
    memorization, corruption_jaccard = {}, {}
    for rate in args.rates:
        for seed in args.seeds:
            req = forget_retain_split(sub, level="user", fraction=rate, seed=seed)
            key = hashlib.sha256(json.dumps([args.model, len(train_pool), tcfg.to_dict(), seed, rate]).encode()).hexdigest()[:12]
            cfg_seed = copy.deepcopy(tcfg)
            cfg_seed.seed = seed
            original, t_orig = _trained(args.model, train_pool, None, cfg_seed, cache / f"original_{key}")
            retrained, t_retrain = _trained(args.model, req.retain, None, cfg_seed, cache / f"retrain_{key}")
            rcache: dict = {}
            gap = memorization_gap(original, retrained, req.forget, heldout, test)
            memorization[f"rate={rate} seed={seed}"] = gap
            rows = {"original": (original, 0.0), "retrain": (retrained, t_retrain)}
            for name, (m, secs) in rows.items():
                metrics = evaluate_unlearning(m, retrained, req.forget, test, heldout, retrained_cache=rcache)
                report.add(name, seed, {**metrics, "seconds": secs, "rate": rate})
            before = model_hash(original)
            for method in args.methods:
                m = copy.deepcopy(original)
                ucfg = UnlearnConfig(steps=args.steps, lr=args.lr, seed=seed)
                t = time.perf_counter()
                res = get_method(method).run(m, req.forget, req.retain, ucfg, heldout=heldout, original=original)
                secs = time.perf_counter() - t
                metrics = evaluate_unlearning(m, retrained, req.forget, test, heldout, retrained_cache=rcache)
                report.add(method, seed, {**metrics, "seconds": secs, "time_vs_retrain": secs / max(t_retrain, 1e-9),
                                          "steps": res.steps, "rate": rate})
                atomic_write_json(out / "audit" / f"{method}_rate{rate}_seed{seed}.json",
                                  audit_record(req.forget, before, model_hash(m), ucfg.to_dict(), method, secs))
                if method == "cure":
                    g = Grouping(**{**res.extra["grouping"], "config": GroupingConfig(**res.extra["grouping"]["config"])})
                    groupings.setdefault(rate, []).append(g)
                    if args.second_corruption and seed == args.seeds[0]:
                        # the same request scored with a second corruption strategy
                        kw = {"tokenizer": original.tokenizer} if args.second_corruption == "history_resample" else {}
                        imp = {part: module_importance(original, samples[: ucfg.importance_samples],
                                                       ucfg.importance_method, ucfg.importance_steps,
                                                       args.second_corruption, progress=False, corruption_kwargs=kw)
                               for part, samples in (("forget", req.forget), ("retain", req.retain))}
                        g2 = group_modules(imp["forget"], imp["retain"], ucfg.grouping)
                        corruption_jaccard[f"rate={rate} seed={seed}"] = grouping_jaccard([g, g2])
                report.meta.update({"memorization": memorization, "grouping_jaccard_across_seeds":
                                    {str(r): grouping_jaccard(gs) for r, gs in groupings.items() if len(gs) > 1},
                                    "grouping_jaccard_label_flip_vs_" + (args.second_corruption or "none"):
                                    corruption_jaccard})
                report.save(out / "report")
    report.save(out / "report")
    print(report.to_markdown(["forget_jsd", "test_jsd", "test_auc", "forget_auc", "mia_auc", "mia_gap_to_retrain",
                              "seconds", "time_vs_retrain"]))
    print("\nSomething to forget? Original vs Retrain on the forget set:")
    print(json.dumps(memorization, indent=1))
    print("\nGrouping reproducibility (Jaccard per group):")
    print(json.dumps({k: v for k, v in report.meta.items() if k.startswith("grouping_jaccard")}, indent=1))


if __name__ == "__main__":
    main()
