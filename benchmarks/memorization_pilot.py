"""Pilot for issue 13: a two-stage protocol in which forgetting is measurable.

Stage 1: a base recommender fine-tuned on users *outside* the unlearning pool (shared by
Original and Retrain). Stage 2: Original = base + a few epochs on the pool; Retrain = base + the
same on the retain users. Then the memorization check on forget / test / held-out samples.

    OMP_NUM_THREADS=2 python benchmarks/memorization_pilot.py --out runs/validity/pilot
    # the first measurement (benchmarks/RESULTS.md): --n-base 256 --base-per-user 0 --n-pool 64 --rate 0.25
    # the replay variant: --n-base 256 --n-pool 64 --rate 0.25 --replay 64
    # the README recipe as the base: --n-base 512 --base-per-user 0 --base-lr 5e-5 --base-warmup 0 \
    #     --n-pool 64 --rate 0.25 --replay 64  (then --seed 1 --original-from <that run> for a second request)
    # a gentler stage 2 on the same base: add --pool-loss yes_no (and/or --pool-lr 5e-5)

Stage 2 may mix ``--replay`` base samples into both trainings (the same ones): forgetting is then
measured against a model whose prior is anchored by data both runs share, as in the standard
protocol where Original and Retrain train on the same large set minus the forget users.

Each stage writes its result JSON as it finishes and is skipped when its file exists; the JSON
files are also written to ``benchmarks/results/pilots/<name>`` (``--publish``), to be committed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recircuit._io import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/validity/pilot")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-base", type=int, default=512)
    ap.add_argument("--base-per-user", type=int, default=8, help="windows per base user (0: the first --n-base)")
    ap.add_argument("--per-user", type=int, default=4)
    ap.add_argument("--n-pool", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pool-lr", type=float, default=1e-4)
    ap.add_argument("--pool-loss", default="answer", choices=("answer", "yes_no"),
                    help="stage 2's loss: the answer tokens' loss, or the two-way Yes/No loss of stage 1")
    ap.add_argument("--n-valid", type=int, default=100)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-heldout", type=int, default=100)
    ap.add_argument("--replay", type=int, default=0,
                    help="base samples mixed into stage 2 for Original and Retrain alike (anchors the prior)")
    ap.add_argument("--base-lr", type=float, default=5e-5)
    ap.add_argument("--base-warmup", type=float, default=0.1, help="the README recipe uses 0")
    ap.add_argument("--original-from", default=None,
                    help="a pilot directory whose Original to reuse (same base, pool and replay; another --seed)")
    ap.add_argument("--base-from", default=None,
                    help="a pilot directory whose base checkpoint to reuse (default: --original-from's); the "
                         "base cache is keyed on the training code, so a code change would retrain it")
    ap.add_argument("--publish", default="benchmarks/results/pilots",
                    help="each stage's JSON is also written to <publish>/<name of --out> (inside the repository, "
                         "to be committed as it lands; checkpoints stay in --out); '' to skip")
    ap.add_argument("--seed", type=int, default=0, help="the request's seed (Original and Retrain train with seed 0)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pub = Path(a.publish) / out.name if a.publish else None

    def save(name: str, obj: dict) -> None:
        atomic_write_json(out / name, obj)
        if pub is not None:
            atomic_write_json(pub / name, obj)
    from recircuit.data import build_split, cap_per_user, forget_retain_split
    from recircuit.data.splits import Split
    from recircuit.evaluate.metrics import memorization_gap, model_outputs
    from recircuit.metrics import classification_metrics
    from recircuit.pipeline import replay_samples
    from recircuit.train import TrainConfig, load_trained, train
    from recircuit.train.cache import cached_recommender

    full = build_split("tallrec")
    pool = cap_per_user(full.train, a.per_user, a.n_pool)
    users = {s.user_id for s in pool}
    outside = [s for s in full.train if s.user_id not in users]
    base_train = cap_per_user(outside, a.base_per_user, a.n_base) if a.base_per_user else outside[: a.n_base]
    valid = full.valid[: a.n_valid]
    heldout = full.valid[len(full.valid) - a.n_heldout:]
    test = full.test[: a.n_test]
    base_cfg = TrainConfig(mode="full", lr=a.base_lr, epochs=1, batch_size=8, warmup_ratio=a.base_warmup,
                           schedule="constant", eval_every=16, patience=2, loss="yes_no", seed=0)
    t = time.time()
    base_split = Split("tallrec", base_train, valid, full.test, {"pilot": "base, pool users excluded"})
    reuse = a.base_from or a.original_from
    if reuse:
        base_path = Path(json.loads((Path(reuse) / "base.json").read_text())["checkpoint"])
        load_trained(base_path)                # verifies the checkpoint's sha256 before anything trains on it
    else:
        base_path = cached_recommender("smollm2-135m-instruct", base_split, base_cfg, None, a.n_valid,
                                       progress=True)
    save("base.json", {"checkpoint": str(base_path), "seconds": time.time() - t,
                                         "n_base": len(base_train), "pool_users": len(users), "pool": len(pool)})
    req = forget_retain_split(Split("tallrec", pool, [], [], {}), level="user", fraction=a.rate, seed=a.seed)
    pool_cfg = TrainConfig(mode="full", lr=a.pool_lr, epochs=a.epochs, batch_size=8, warmup_ratio=0.1,
                           schedule="constant", loss=a.pool_loss, seed=0)
    replay = replay_samples(base_train, a.replay)     # the pipeline's draw: one for every request
    paths = {}
    stage2 = {"train": pool_cfg.to_dict(), "n_pool": len(pool), "replay": len(replay), "base": str(base_path)}
    if a.original_from and not (out / "original" / "model.safetensors").exists():
        import shutil

        src = Path(a.original_from) / "original"
        shutil.copytree(src, out / "original", dirs_exist_ok=True)
        save("original_train.json", json.loads((Path(a.original_from) / "original_train.json").read_text()))
    for who, samples in (("original", pool + replay), ("retrain", list(req.retain) + replay)):
        d = out / who
        done = out / f"{who}_train.json"
        if done.is_file() and json.loads(done.read_text()).get("stage2", stage2) != stage2:
            sys.exit(f"memorization_pilot.py: {done}: stage 2 was trained with other settings than this run's "
                     "(--pool-loss, --pool-lr, --epochs, --n-pool, --replay or the base); use another --out")
        if not (d / "model.safetensors").exists():
            model, _ = load_trained(base_path)
            t = time.time()
            res = train(model, samples, None, pool_cfg, out_dir=d, meta={"init": str(base_path)})
            save(f"{who}_train.json", {"seconds": time.time() - t, "metrics": res.metrics,
                                                       "n_train": len(samples), "replay": len(replay),
                                                       "stage2": stage2})
        paths[who] = d / "model.safetensors"
    if not (out / "memorization.json").exists():
        orig, _ = load_trained(paths["original"])
        gold, _ = load_trained(paths["retrain"])
        base, _ = load_trained(base_path)
        cache: dict = {}
        t = time.time()
        gap = memorization_gap(orig, gold, req.forget, heldout, test, 8, cache=cache)
        base_out = model_outputs(base, req.forget, test, heldout, 8)
        res = {"gap": gap, "n_forget": len(req.forget), "n_test": len(test), "n_heldout": len(heldout),
               "seconds": time.time() - t,
               "test_auc": {k: classification_metrics([s.label for s in test], v["p_test"])["auc"]
                            for k, v in (("original", cache["original"]), ("retrain", cache["retrained"]),
                                         ("base", base_out))},
               "outputs": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()}
                           for k, v in (("original", cache["original"]), ("retrain", cache["retrained"]),
                                        ("base", base_out))}}
        save("memorization.json", res)
    if pub is not None:                  # stages skipped because done in --out are published too
        for f in sorted(out.glob("*.json")):
            if not (pub / f.name).is_file():
                atomic_write_json(pub / f.name, json.loads(f.read_text()))


if __name__ == "__main__":
    main()
