"""TALLRec fine-tuning of SmolLM2-135M on CPU: full and LoRA, learning curves and test AUC.

    python benchmarks/finetune.py --modes full lora --n-train 512 --out runs/finetune

Writes ``<out>/<mode>/model.{safetensors,json}`` and ``<out>/results.json`` (metrics, learning
curve, CPU seconds) and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from recircuit._io import atomic_write_json
from recircuit.data import build_split
from recircuit.models import load_model
from recircuit.report_table import format_table
from recircuit.train import LoraConfig, TrainConfig, evaluate, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--modes", nargs="+", default=["full", "lora"])
    ap.add_argument("--preset", default="tallrec")
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-valid", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=16)
    ap.add_argument("--lr-full", type=float, default=5e-5)
    ap.add_argument("--lr-lora", type=float, default=1e-3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/finetune")
    args = ap.parse_args()
    split = build_split(args.preset, data_dir=args.data_dir)
    tr, va, te = split.train[: args.n_train], split.valid[: args.n_valid], split.test[: args.n_test]
    out = Path(args.out)
    results, rows = {}, []
    for mode in args.modes:
        model = load_model(args.model)
        lr = args.lr_full if mode == "full" else args.lr_lora
        cfg = TrainConfig(mode=mode, lr=lr, epochs=args.epochs, batch_size=8, eval_every=args.eval_every,
                          patience=3, lora=LoraConfig(rank=8, alpha=16, targets=("q", "v")))
        cpu0 = time.process_time()
        res = train(model, tr, va, cfg, out_dir=out / mode, meta={"split": split.to_dict(), "n_train": len(tr)})
        cpu = time.process_time() - cpu0
        test = evaluate(model, te, progress=True)
        results[mode] = {"config": cfg.to_dict(), "train": res.metrics, "history": res.history, "test": test,
                         "train_cpu_s": cpu, "checkpoint": str(res.checkpoint)}
        atomic_write_json(out / "results.json", results)
        rows.append({"mode": mode, "lr": lr, "train_samples": len(tr), "steps": res.metrics["steps"],
                     "best_step": res.metrics["best_step"], "best_valid_auc": res.metrics["best_valid_auc"],
                     "test_auc": test["auc"], "test_acc": test["acc"], "train_wall_s": round(res.seconds),
                     "train_cpu_s": round(cpu)})
        del model
    print(format_table(rows))
    print(f"\ntest samples={len(te)}, valid samples={len(va)}, epochs={args.epochs}, preset={args.preset}")


if __name__ == "__main__":
    main()
