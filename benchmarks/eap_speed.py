"""Edge EAP speed and memory: recircuit's batched engine against TransformerLens 4.3.

Same non-GQA model, same clean/corrupted prompts, same edges; each scorer runs in its own
child process (so peak RSS is its own), and the two alternate ``--repeats`` times. Then the
faithfulness (real intervention, MIB sizes) of top-n circuits from recircuit's EAP and EAP-IG
scores on the same prompts (``--no-faithfulness`` skips it).

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
        secs = time.perf_counter() - t
        g = res.graph
        per_edge = {(g.forward_names[f], g.backward_names[b]): float(res.scores[f, b])
                    for f, b in g.edge_mask.nonzero().tolist()}
    else:
        from transformer_lens.tools.analysis.attribution_patching import (
            EdgeAttributionConfig,
            attribution_patch,
        )

        # TL node kinds -> recircuit node names (without GQA, KV group g is head g)
        fwd = {"embed": lambda n: "input", "attn_head_out": lambda n: f"a{n.layer}.h{n.head}", "mlp_out": lambda n: f"m{n.layer}"}
        bwd = {"q_input": lambda n: f"a{n.layer}.h{n.head}<q>", "k_input": lambda n: f"a{n.layer}.g{n.head}<k>",
               "v_input": lambda n: f"a{n.layer}.g{n.head}<v>", "mlp_in": lambda n: f"m{n.layer}", "logits": lambda n: "logits"}
        ans = answer_tokens(model.tokenizer)
        per_edge = {}
        for c, k in zip(clean, corr):  # TL scores one pair at a time
            sign = 1 if c.label else -1
            ids_c = model.tokenizer(c.prompt, return_tensors="pt")["input_ids"]
            ids_k = model.tokenizer(k.prompt, return_tensors="pt")["input_ids"]
            r = attribution_patch(model, ids_c, ids_k, lambda lg, s=sign: s * (lg[:, -1, ans.yes] - lg[:, -1, ans.no]).sum(),
                                  EdgeAttributionConfig(granularity="edge"))
            for (w, rd), v in r.edge_scores.items():  # per position: summed
                key = (fwd[w.kind](w), bwd[rd.kind](rd))
                per_edge[key] = per_edge.get(key, 0.0) + v / len(clean)
        secs = time.perf_counter() - t
    total, n_edges = sum(abs(v) for v in per_edge.values()), len(per_edge)
    q.put({"scorer": which, "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "sum_abs_scores": total, "edges": n_edges, "scores": per_edge})


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
    ap.add_argument("--no-faithfulness", action="store_true")
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
    ours, theirs = results["recircuit"][0]["scores"], results["transformer_lens"][0]["scores"]
    if set(ours) != set(theirs):
        print(f"edge sets differ: {len(set(ours) ^ set(theirs))} edges in one scorer only")
    common = set(ours) & set(theirs)
    max_diff = max(abs(ours[e] - theirs[e]) for e in common)
    scale = max(abs(theirs[e]) for e in common)
    print(f"\nmodel: {args.layers} layers x {args.heads} heads (no GQA), d_model {args.d_model}; {args.n} prompt pairs; "
          f"recircuit batch {args.batch_size}; best of {args.repeats}")
    print(f"speed-up recircuit vs TL = {speedup:.1f}x; per-edge max abs difference = {max_diff:.1e} "
          f"({max_diff / scale:.1e} of the largest |score|)")
    if not args.no_faithfulness:
        _faithfulness(args)


def _faithfulness(args) -> None:
    """Faithfulness curves of top-n circuits (EAP and EAP-IG scores) on the same model and prompts."""
    import torch

    from recircuit.circuits import AttributionConfig, attribute, faithfulness_curve
    from recircuit.report_table import format_table

    torch.set_num_threads(args.threads)
    model, clean, corr = _setup(args)
    rows, curves = [], {}
    for method, steps in (("eap", 1), ("eap-ig-inputs", 5)):
        res = attribute(model, clean, corr, AttributionConfig(method=method, steps=steps, batch_size=args.batch_size, progress=False))
        curve = faithfulness_curve(model, res, clean, corr, batch_size=args.batch_size, progress=False,
                                   allow_unreliable=True)          # timed either way; flagged in the table
        curves[method] = curve
        reach = curve.edges_to_reach(0.8)
        rows.append({"scores": method, "faithfulness": curve.flag or "ok", "CPR": round(curve.cpr, 3), "CMD": round(curve.cmd, 3),
                     "edges_f>=0.8": reach if reach is not None else "none", "of_edges": res.graph.n_edges})
    print("\nfaithfulness of top-n circuits (real intervention; x = fraction of edges kept)")
    print(format_table(rows))
    sizes = next(iter(curves.values())).sizes
    print(format_table([{"kept": f"{100 * x:g}%", **{m: round(c.faithfulness[i], 3) for m, c in curves.items()}}
                        for i, x in enumerate(sizes)]))


if __name__ == "__main__":
    main()
