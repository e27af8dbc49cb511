"""Edge EAP speed and memory: recircuit's batched engine against TransformerLens 4.3.

Same non-GQA model, same clean/corrupted prompts, same edges; each scorer runs in its own
child process (so peak RSS is its own), and the two alternate ``--repeats`` times.

    python benchmarks/eap_speed.py                       # tiny 4-layer model, 32 prompts
    python benchmarks/eap_speed.py --layers 2 --n 8      # quicker
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _setup(args):
    from recircuit.circuits.corruptions import label_flip
    from recircuit.data import make_sample
    from recircuit.models import tiny_model

    titles = ["Alpha (1990)", "Beta Gamma (1991)", "Delta (1992)", "Epsilon Zeta Eta (1993)", "Theta (1994)", "Iota (1995)"]
    clean = [make_sample(u, [(i, titles[(i + u) % 6], 5 if (i + u) % 3 else 1) for i in range(6)],
                         (100 + u, titles[u % 6], 5 if u % 2 else 2), timestamp=u) for u in range(args.n)]
    model = tiny_model(0, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads, d_model=args.d_model)
    return model, clean, label_flip(clean)


def _run(which: str, args, q) -> None:
    import torch

    from recircuit.circuits import AttributionConfig, attribute
    from recircuit.models import answer_tokens

    torch.set_num_threads(args.threads)
    model, clean, corr = _setup(args)
    t = time.perf_counter()
    if which == "recircuit":
        res = attribute(model, clean, corr, AttributionConfig(method="eap", gradient_point="corrupted",
                                                              batch_size=args.batch_size, progress=False))
        total = float(res.scores.abs().sum())
        n_edges = res.graph.n_edges
    else:
        from transformer_lens.tools.analysis.attribution_patching import (
            EdgeAttributionConfig,
            attribution_patch,
        )

        ans = answer_tokens(model.tokenizer)
        total, n_edges = 0.0, 0
        per_edge: dict = {}
        for c, k in zip(clean, corr):  # TL scores one pair at a time
            sign = 1 if c.label else -1
            ids_c = model.tokenizer(c.prompt, return_tensors="pt")["input_ids"]
            ids_k = model.tokenizer(k.prompt, return_tensors="pt")["input_ids"]
            r = attribution_patch(model, ids_c, ids_k, lambda lg, s=sign: s * (lg[:, -1, ans.yes] - lg[:, -1, ans.no]).sum(),
                                  EdgeAttributionConfig(granularity="edge"))
            for (w, rd), v in r.edge_scores.items():
                key = (w.kind, w.layer, w.head, rd.kind, rd.layer, rd.head)
                per_edge[key] = per_edge.get(key, 0.0) + v / len(clean)
        total = sum(abs(v) for v in per_edge.values())
        n_edges = len(per_edge)
    secs = time.perf_counter() - t
    q.put({"scorer": which, "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "sum_abs_scores": total, "edges": n_edges})


def main() -> None:
    from recircuit.report_table import format_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results: dict[str, list[dict]] = {"recircuit": [], "transformer_lens": []}
    for _ in range(args.repeats):
        for which in results:
            q = ctx.Queue()
            p = ctx.Process(target=_run, args=(which, args, q))
            p.start()
            results[which].append(q.get())
            p.join()
    rows = []
    for which, rs in results.items():
        best = min(rs, key=lambda r: r["seconds"])
        rows.append({"scorer": which, "best_s": round(best["seconds"], 2), "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs)),
                     "edges": best["edges"], "sum_abs_scores": round(best["sum_abs_scores"], 6)})
    print(format_table(rows))
    speedup = rows[1]["best_s"] / rows[0]["best_s"]
    print(f"\nmodel: {args.layers} layers x {args.heads} heads (no GQA), d_model {args.d_model}; {args.n} prompt pairs; "
          f"recircuit batch {args.batch_size}; best of {args.repeats}")
    print(f"speed-up recircuit vs TL = {speedup:.1f}x; relative score difference = "
          f"{abs(rows[0]['sum_abs_scores'] - rows[1]['sum_abs_scores']) / rows[1]['sum_abs_scores']:.1e}")


if __name__ == "__main__":
    main()
