"""The unlearning table: every method x seeds x deletion rates, against Retrain.

    python benchmarks/unlearning.py --model tiny --data-dir ../shared/data/ml-100k --seeds 0 --out /tmp/u  # smoke run
    python benchmarks/unlearning.py                      # SmolLM2-135M, 10% of users, 3 seeds (CPU, ~1 h)
    python benchmarks/unlearning.py --seeds 1 2 &        # ...or split the seeds over processes sharing --out,
    python benchmarks/unlearning.py --seeds 0            # then `--report-only` merges what finished

Protocol (E2URec / CURE): the original model is fine-tuned on train = forget + retain; Retrain
is fine-tuned on retain only with the same config and the same training seed; the forget set is
all training samples of a seeded fraction of users (the seeds are the forget-set sampling). The
Original is the same for every request (same pool, config and seed), so it is trained once;
each Retrain is cached per (pool, config, rate, seed) under ``--cache``, and each finished
request's results under ``<out>/runs/``, so reruns only redo what changed. Early stopping of the
unlearning methods uses ``--n-stop`` never-trained samples from the start of the valid split; the
MIA non-members are ``--n-heldout`` others from its end. Writes ``<out>/report.{json,md}``
(methods as rows, mean ± std over seeds) and one audit record per method and request.

Default sizes (chosen for about an hour on 2 CPU cores): a pool of 96 training samples from 16
users (6 each), full fine-tune lr 1e-4 for 3 epochs (so the forgotten users are memorized),
10% of users forgotten (2 users, 12 samples), 48 test samples, 24 held-out; every method gets 6
steps of 4 forget + 4 retain samples at lr 2e-5.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from recircuit._io import atomic_write_json
from recircuit.circuits.corruptions import corruption_for
from recircuit.data import build_split, cap_per_user, forget_retain_split
from recircuit.evaluate import UnlearningReport, audit_record, evaluate_unlearning, model_hash
from recircuit.evaluate.metrics import memorization_gap
from recircuit.models import load_model
from recircuit.train import LoraConfig, TrainConfig, load_checkpoint, save_checkpoint, train
from recircuit.unlearn import Grouping, GroupingConfig, UnlearnConfig, get_method, group_modules
from recircuit.unlearn.grouping import grouping_jaccard
from recircuit.unlearn.importance import module_importance


def _trained(model_name: str, samples, cfg: TrainConfig, path: Path):
    """Load the checkpoint at ``path`` or train it (and save it there); returns (model, train seconds)."""
    model = load_model(model_name, device="cpu" if model_name == "tiny" else None)
    if (path.with_name(path.name + ".json")).exists():
        load_checkpoint(model, path)
        secs = json.loads(path.with_name(path.name + ".json").read_text())["metrics"]["seconds"]
        return model, secs
    res = train(model, samples, None, cfg)
    save_checkpoint(model, path, {"metrics": res.metrics, "train_config": cfg.to_dict(),
                                  "samples": [s.uid for s in samples]})
    return model, res.seconds


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def run_one(args, rate: float, seed: int, sub, train_pool, test, heldout, stop_set, tcfg, cache: Path, out: Path,
            run_key: str) -> dict:
    """Original (shared), Retrain, every method and the memorization check for one request."""
    req = forget_retain_split(sub, level="user", fraction=rate, seed=seed)
    pool_key = _key(args.model, [s.uid for s in train_pool], tcfg.to_dict())
    original, _ = _trained(args.model, train_pool, tcfg, cache / f"original_{pool_key}")
    retrained, t_retrain = _trained(args.model, req.retain, tcfg, cache / f"retrain_{pool_key}_{rate}_{seed}")
    rcache: dict = {}
    rows: dict[str, dict] = {}
    kw = dict(original=original, retain=req.retain, train=train_pool)
    rows["original"] = {**evaluate_unlearning(original, retrained, req.forget, test, heldout, 8, rcache, **kw),
                        "seconds": 0.0}
    rows["retrain"] = evaluate_unlearning(retrained, retrained, req.forget, test, heldout, 8, rcache, **kw,
                                          seconds=t_retrain, retrain_seconds=t_retrain)
    gap = memorization_gap(original, retrained, req.forget, heldout, test, 8, cache=rcache)
    before = model_hash(original)
    grouping, corruption_jaccard = None, None
    ucfg = UnlearnConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=seed,
                         eval_samples=len(stop_set), importance_samples=args.importance_samples,
                         importance_steps=args.importance_steps)
    for method in tqdm(args.methods, desc=f"methods (rate {rate}, seed {seed})", unit="method"):
        m = copy.deepcopy(original)
        t = time.perf_counter()
        res = get_method(method).run(m, req.forget, req.retain, ucfg, heldout=stop_set, original=original,
                                     progress=False)
        secs = time.perf_counter() - t
        rows[method] = {**evaluate_unlearning(m, None, req.forget, test, heldout, 8, rcache, **kw, seconds=secs,
                                              retrain_seconds=t_retrain), "steps": res.steps}
        atomic_write_json(out / "audit" / f"{method}_rate{rate}_seed{seed}.json",
                          audit_record(req.forget, before, model_hash(m), ucfg.to_dict(), method, secs))
        if method == "cure":
            grouping = res.extra["grouping"]
            if args.second_corruption:
                # the same request scored with a second corruption strategy
                corrupt = corruption_for(args.second_corruption, original.tokenizer, args.data_dir)
                imp = {part: module_importance(original, samples[: ucfg.importance_samples], ucfg.importance_method,
                                               ucfg.importance_steps, corrupt, progress=False)
                       for part, samples in (("forget", req.forget), ("retain", req.retain))}
                g2 = group_modules(imp["forget"], imp["retain"], ucfg.grouping)
                corruption_jaccard = grouping_jaccard([_grouping(grouping), g2])
        del m
    result = {"run_key": run_key, "rate": rate, "seed": seed, "rows": rows, "memorization": gap,
              "grouping": grouping, "jaccard_label_flip_vs_second": corruption_jaccard,
              "n_forget": len(req.forget), "n_retain": len(req.retain)}
    atomic_write_json(out / "runs" / f"rate{rate}_seed{seed}.json", result)
    return result


def _grouping(d: dict) -> Grouping:
    return Grouping(**{**d, "config": GroupingConfig(**d["config"])})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=96, help="training pool (whole users)")
    ap.add_argument("--per-user", type=int, default=6, help="training samples per user (forgetting is per user)")
    ap.add_argument("--n-test", type=int, default=48)
    ap.add_argument("--n-heldout", type=int, default=24, help="never-trained MIA non-members (end of valid)")
    ap.add_argument("--n-stop", type=int, default=16, help="never-trained samples for early stopping (start of valid)")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the forget-set sampling")
    ap.add_argument("--methods", nargs="+", default=["ga", "graddiff", "npo", "pcgrad", "e2urec", "cure", "cure-random"])
    ap.add_argument("--mode", default="full", choices=["full", "lora"])
    ap.add_argument("--train-lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-seed", type=int, default=0, help="training seed of Original and every Retrain")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch-size", type=int, default=4, help="unlearning batch (forget and retain)")
    ap.add_argument("--importance-samples", type=int, default=4)
    ap.add_argument("--importance-steps", type=int, default=2)
    ap.add_argument("--second-corruption", default="history_resample",
                    help="corruption compared with label_flip for grouping reproducibility ('' to skip)")
    ap.add_argument("--cache", default="runs/unlearning_cache")
    ap.add_argument("--out", default="runs/unlearning")
    ap.add_argument("--report-only", action="store_true", help="merge the finished runs in --out into the report")
    args = ap.parse_args()

    split = build_split("tallrec", data_dir=args.data_dir)
    # the user-level protocol needs several samples per user: take whole users from the train split
    train_pool = cap_per_user(split.train, args.per_user, args.n_train)
    test = split.test[: args.n_test]
    stop_set, heldout = split.valid[: args.n_stop], split.valid[len(split.valid) - args.n_heldout:]
    tcfg = TrainConfig(mode=args.mode, lr=args.train_lr, epochs=args.epochs, batch_size=8, lora=LoraConfig(),
                       seed=args.train_seed)
    out, cache = Path(args.out), Path(args.cache)
    sizes = {"model": args.model, "n_train": len(train_pool), "per_user": args.per_user, "n_test": len(test),
             "n_heldout": len(heldout), "n_stop": len(stop_set), "train_config": tcfg.to_dict(),
             "unlearn": {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
                         "importance_samples": args.importance_samples, "importance_steps": args.importance_steps},
             "methods": args.methods, "second_corruption": args.second_corruption}
    run_key = _key(sizes)
    sub = type(split)(split.name, train_pool, split.valid, split.test, split.params)
    if not args.report_only:
        for rate in args.rates:
            for seed in args.seeds:
                done = out / "runs" / f"rate{rate}_seed{seed}.json"
                if done.exists() and json.loads(done.read_text()).get("run_key") == run_key:
                    continue  # finished with these settings: reruns only redo what changed
                run_one(args, rate, seed, sub, train_pool, test, heldout, stop_set, tcfg, cache, out, run_key)

    # the report: every finished run with these settings (several processes may share --out)
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("rate*_seed*.json"))]
    runs = [r for r in runs if r.get("run_key") == run_key]
    report = UnlearningReport(meta={**sizes, "rates": sorted({r["rate"] for r in runs}),
                                    "seeds": sorted({r["seed"] for r in runs})})
    groupings: dict[float, list[Grouping]] = {}
    for r in runs:
        for method, row in r["rows"].items():
            report.add(method, r["seed"], {**row, "rate": r["rate"]})
        if r["grouping"]:
            groupings.setdefault(r["rate"], []).append(_grouping(r["grouping"]))
    report.meta.update({
        "memorization": {f"rate={r['rate']} seed={r['seed']}": r["memorization"] for r in runs},
        "n_forget": {f"rate={r['rate']} seed={r['seed']}": r["n_forget"] for r in runs},
        "grouping_jaccard_across_seeds": {str(k): grouping_jaccard(v) for k, v in groupings.items() if len(v) > 1},
        f"grouping_jaccard_label_flip_vs_{args.second_corruption or 'none'}":
            {f"rate={r['rate']} seed={r['seed']}": r["jaccard_label_flip_vs_second"] for r in runs},
    })
    report.save(out / "report")
    print(report.to_markdown(["forget_jsd", "test_jsd", "test_auc", "forget_auc", "forget_loss", "mia_auc",
                              "mia_gap_to_retrain", "seconds", "time_vs_retrain"]))
    print("\nSomething to forget? Original vs Retrain on the forget set:")
    print(json.dumps(report.meta["memorization"], indent=1))
    print("\nGrouping reproducibility (Jaccard per group):")
    print(json.dumps({k: v for k, v in report.meta.items() if k.startswith("grouping_jaccard")}, indent=1))


if __name__ == "__main__":
    main()
