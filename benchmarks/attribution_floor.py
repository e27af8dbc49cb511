"""Attribution and faithfulness against their floors, on one batch, in one run (issue 16).

    python benchmarks/attribution_floor.py                        # SmolLM2-135M, 8 test prompts
    python benchmarks/attribution_floor.py --model tiny --n 8     # a smoke run
    python benchmarks/attribution_floor.py --json runs/attribution_floor.json

On the same batch of clean prompts and their label-flip corruptions, each timed ``--repeats``
times (the median is kept):

- **floor**: what any edge attribution must do at least: a forward pass on the corrupted
  prompts, one on the clean prompts and one backward pass of the metric to the activations
  (no parameter gradients);
- ``eap`` and ``eap-ig-inputs`` (``--ig-steps``) through :func:`recircuit.circuits.attribute`;
- **one patched pass**: :func:`recircuit.circuits.patched_metric` for one circuit, with the
  engine's dense path (every reader's input minus the sum over *all* its dropped writers, the
  path of post-norm families and what one patched pass cost before the sparse rule) and with
  the sparse rule, at the 50% circuit (its worst case) and at the 5% circuit;
- **the MIB sweep**: :func:`recircuit.circuits.faithfulness_curve` at MIB's ten sizes (plus the
  empty circuit), corrupted activations and the clean run included.

Prints each as a ratio to its reference. Scores are checked unchanged: the dense and sparse
rules must agree within 1e-4 on every sample.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch


def _time(fn, repeats: int) -> tuple[float, object]:
    out, secs = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        secs.append(time.perf_counter() - t)
    return statistics.median(secs), out


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the ratios (see the module docstring)."""
    from recircuit.circuits import AttributionConfig, attribute, faithfulness_curve
    from recircuit.circuits.circuit import select_edges
    from recircuit.circuits.corruptions import label_flip
    from recircuit.circuits.engine import (
        _patched_metric_dense,
        collect_writer_outputs,
        make_pair_batch,
        patched_metric,
        run_logits,
    )
    from recircuit.circuits.faithfulness import MIB_SIZES
    from recircuit.circuits.metrics import get_metric
    from recircuit.data import build_split
    from recircuit.models import answer_tokens, load_model, tiny_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a model name, or 'tiny'")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=8, help="prompts in the batch")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = tiny_model(0) if args.model == "tiny" else load_model(args.model)
    clean = build_split("tallrec", data_dir=args.data_dir).test[: args.n]
    corrupted = label_flip(clean)
    for p in model.parameters():
        p.requires_grad_(False)
    pair = make_pair_batch(model.tokenizer, clean, corrupted, "cpu", "left")
    answers = answer_tokens(model.tokenizer)
    metric = get_metric("logit_diff")

    def floor():
        with torch.no_grad():
            run_logits(model, pair.corrupted, True)

        def grad_on(t, *, hook):
            return t.detach().requires_grad_(True)

        with torch.enable_grad(), model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", grad_on)]):
            metric(run_logits(model, pair.clean, True), pair.labels, answers).sum().backward()

    floor()   # warm-up (allocator, lazy initialisation), not timed
    figures: dict[str, float] = {}
    figures["floor_s"], _ = _time(floor, args.repeats)
    cfg = AttributionConfig(method="eap", batch_size=args.n, align="left", progress=False)
    figures["eap_s"], res = _time(lambda: attribute(model, clean, corrupted, cfg), args.repeats)
    ig = AttributionConfig(method="eap-ig-inputs", steps=args.ig_steps, batch_size=args.n, align="left", progress=False)
    figures["eap_ig_s"], _ = _time(lambda: attribute(model, clean, corrupted, ig), args.repeats)

    g = res.graph
    acts, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    half = select_edges(res.scores, g, top_n=g.n_edges // 2)
    five = select_edges(res.scores, g, top_n=max(1, g.n_edges // 20))
    with torch.no_grad():
        figures["dense_pass_s"], m_dense = _time(
            lambda: _patched_metric_dense(model, g, pair, acts, half[None], metric, answers, True)[0], args.repeats)
        figures["sparse_pass_50_s"], m_half = _time(
            lambda: patched_metric(model, g, pair, acts, half, metric, answers), args.repeats)
        figures["sparse_pass_5_s"], m_five = _time(
            lambda: patched_metric(model, g, pair, acts, five, metric, answers), args.repeats)
        m_five_dense = _patched_metric_dense(model, g, pair, acts, five[None], metric, answers, True)[0]
    diff = max(float((m_dense - m_half).abs().max()), float((m_five_dense - m_five).abs().max()))
    figures["max_abs_diff_dense_vs_sparse"] = diff
    figures["sweep_s"], curve = _time(lambda: faithfulness_curve(
        model, res, clean, corrupted, sizes=MIB_SIZES, batch_size=args.n, align="left", progress=False,
        allow_unreliable=True), args.repeats)
    figures.update({
        "eap/floor": figures["eap_s"] / figures["floor_s"],
        "eap_ig/floor": figures["eap_ig_s"] / figures["floor_s"],
        "eap_ig/(floor x (steps+1)/2)": figures["eap_ig_s"] / (figures["floor_s"] * (args.ig_steps + 1) / 2),
        "sweep/dense_pass": figures["sweep_s"] / figures["dense_pass_s"],
        "sweep/sparse_pass_50": figures["sweep_s"] / figures["sparse_pass_50_s"],
        "dense_pass/sparse_pass_50": figures["dense_pass_s"] / figures["sparse_pass_50_s"],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    })
    meta = {"model": args.model, "n": args.n, "prompt_tokens": int(pair.clean.input_ids.shape[1]),
            "edges": g.n_edges, "ig_steps": args.ig_steps, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "cpr": curve.cpr}
    for k, v in {**meta, **figures}.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    if diff > 1e-4:
        print(f"ERROR: the sparse rule moved the metric by {diff:.3g} (> 1e-4)")
        return 1
    if args.json:
        from pathlib import Path

        from recircuit._io import atomic_write_json

        atomic_write_json(Path(args.json), {**meta, **figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
