"""Exact unlearning (SISA, APA) against Retrain, CURE and the approximate baselines, in four phases.

    python benchmarks/exact_unlearning.py grid      # the table: every method x seeds, rate 10%, as Ray tasks
    python benchmarks/exact_unlearning.py latency   # serving latency per sample: Retrain, APA(D), APA(ND), SISA
    python benchmarks/exact_unlearning.py stream    # a stream of 5 requests, per method
    python benchmarks/exact_unlearning.py report    # tables and figures from whatever has finished
    python benchmarks/exact_unlearning.py grid --model tiny --data-dir ../shared/data/ml-100k --out /tmp/e   # smoke run

The protocol is the validity study's (``benchmarks/validity.py``: a base recommender, Original
and Retrain continuing it on the pool and the retain users), so the requests are the CURE
table's. The exact methods fit their shard adapters once over the base recommender on
Original's training set (cached; every seed's request deletes from a copy), and each request
retrains the shards that held its samples.
Besides APA (semantic partition, adaptive weights, decomposition level) the grid runs APA(ND)
(``apa:nd``) and the ablations: random partition (``apa:random``), average weights
(``apa:average``) and the major adapter alone (``apa:major``). Every phase writes what it
finishes and skips what is there, so the study spreads over sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validity import protocol_config  # noqa: E402  (the sibling benchmark script)

from recircuit._io import atomic_write_json  # noqa: E402
from recircuit.errors import InputError, RunFailed, report_error  # noqa: E402
from recircuit.pipeline import GridConfig, PipelineConfig, run_grid  # noqa: E402
from recircuit.unlearn import method_config  # noqa: E402

SEEDS = (1, 2, 3)
RATE = 0.1


def exact_methods(k: int = 4, tiny: bool = False) -> dict:
    """The exact methods and APA's ablations (``k`` shards each), with CURE and NPO for comparison."""
    shard = {"k": k, "shard_lr": 3e-3 if tiny else 1e-3, "shard_epochs": 1 if tiny else 2,
             "n_neighbors": 4 if tiny else 20}
    return {
        "sisa": method_config("sisa", **{x: v for x, v in shard.items() if x != "n_neighbors"}),
        "apa": method_config("apa", **shard),
        "apa:nd": method_config("apa", **shard, level="ba"),
        "apa:random": method_config("apa", **shard, partition="random"),
        "apa:average": method_config("apa", **shard, weights="average"),
        "apa:major": method_config("apa", **shard, weights="major"),
        "cure": method_config("cure", **({"importance_samples": 4, "importance_steps": 2} if tiny else {})),
        "npo": method_config("npo"),
    }


def study_config(model: str, data_dir: str | None, device: str | None, k: int) -> PipelineConfig:
    """The validity protocol with the exact methods, the ablations, CURE and NPO."""
    cfg = protocol_config(model, data_dir, device)
    return dataclasses.replace(cfg, methods=exact_methods(k, model == "tiny"),
                               circuit=dataclasses.replace(cfg.circuit, enabled=False))


def latency(cfg: PipelineConfig, out: Path, n: int = 32) -> dict:
    """Seconds per sample to serve ``n`` test samples one at a time: Retrain (one fine-tuned model),
    APA(D) and APA(ND) (the embedding pass, the weights, the merge, one pass), SISA (K passes);
    ratios to Retrain."""
    from recircuit.models import load_model
    from recircuit.pipeline import (
        Context,
        _load,
        base_checkpoint,
        checkpoint_id,
        exact_ensemble,
        make_request,
        prepare_data,
        retrain_checkpoint,
    )
    from recircuit.train.losses import score_and_loss

    ctx = Context(progress=True)
    data = prepare_data(cfg)
    test = data.test[:n]
    request = make_request(data, RATE, SEEDS[0])
    gold = _load(retrain_checkpoint(cfg, data, request, ctx), cfg.device)
    base_path = base_checkpoint(cfg, data, ctx)
    base = _load(base_path, cfg.device) if base_path else load_model(cfg.model, device=cfg.device)
    base_id = checkpoint_id(base_path) if base_path else f"model:{cfg.model}"
    timings = {}
    score_and_loss(gold, test[:2], batch_size=1)          # warm up before timing
    t0 = time.perf_counter()
    score_and_loss(gold, test, batch_size=1)
    timings["retrain"] = (time.perf_counter() - t0) / n
    for name in ("apa", "apa:nd", "sisa"):
        method = exact_ensemble(cfg, name, data, base, base_id, ctx)
        t0 = time.perf_counter()
        method.outputs(base, test, batch_size=1)
        timings[name] = (time.perf_counter() - t0) / n
    res = {"seconds_per_sample": timings, "ratio_to_retrain": {k: v / timings["retrain"] for k, v in timings.items()},
           "n": n, "k": cfg.methods["apa"].k}
    atomic_write_json(out / "latency.json", res)
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the phase asked for (see the module docstring); exit 2 on bad input."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["grid", "latency", "stream", "report"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--k", type=int, default=4, help="shards per exact method")
    ap.add_argument("--num-cpus", type=int, default=None, help="cores of the local Ray (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--out", default="runs/exact")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        cfg = study_config(args.model, args.data_dir, args.device, args.k)
        if args.phase in ("grid", "report"):
            grid = GridConfig(tuple(cfg.methods), tuple(args.seeds), (RATE,))
            res = run_grid(cfg, grid, out / "grid", num_cpus=args.num_cpus, compute=args.phase == "grid")
            print(res.report.to_markdown())
        elif args.phase == "latency":
            print(json.dumps(latency(cfg, out), indent=1))
        else:
            from recircuit.streams import StreamConfig, run_stream

            stream = StreamConfig(n_requests=5, users_per_request=1, seed=args.seeds[0],
                                  methods=("sisa", "apa", "cure", "npo"))
            print(run_stream(cfg, stream, out, progress=True).table.to_string())
    except (InputError, RunFailed) as err:
        return report_error("exact_unlearning.py", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
