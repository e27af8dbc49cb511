"""Batched Yes/No scoring: recircuit's hooked bridge against the plain HF forward.

Both score the same left-padded TALLRec prompts with the same weights; batches alternate
between the scorers so that machine noise hits all alike. Prints a table and the ratios. The
references: HF's forward as most users call it (every position unembedded) and with
``logits_to_keep=1`` (the last position only, which is what recircuit's ``score()`` asks for).

    python benchmarks/score_throughput.py --model smollm2-135m-instruct --n 64 --batch-size 8
    python benchmarks/score_throughput.py --model tiny --n 64          # seconds, for a smoke run
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from recircuit.data import build_split
from recircuit.models import (
    answer_tokens,
    iter_batches,
    load_hf,
    plain_forward,
    tiny_hf_model,
    tokenize_prompts,
    yes_no_logits,
)
from recircuit.models.loading import _boot
from recircuit.report_table import format_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    if args.model == "tiny":
        hf, tok = tiny_hf_model(0)
        name = "meta-llama/Llama-2-7b-hf"
    else:
        hf, tok, name = load_hf(args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ref = copy.deepcopy(hf).to(device).eval()
    bridge = _boot(name, hf, tok, device, torch.float32)
    ans = answer_tokens(tok)
    prompts = [s.prompt for s in build_split("tallrec", data_dir=args.data_dir).test[: args.n]]

    times = {"hf": 0.0, "hf+logits_to_keep": 0.0, "recircuit": 0.0, "recircuit+head-hooks": 0.0}
    p = {k: [] for k in times}
    with torch.no_grad():
        for chunk in iter_batches(prompts, args.batch_size):
            b = tokenize_prompts(tok, chunk, device)
            for who in times:
                t = time.perf_counter()
                if who == "hf":
                    logits = ref(b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
                    two = logits[:, -1, [ans.yes, ans.no]].float()
                elif who == "hf+logits_to_keep":     # the plain forward a user who knows HF well would write
                    logits = ref(b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                                 logits_to_keep=1).logits
                    two = logits[:, -1, [ans.yes, ans.no]].float()
                elif who == "recircuit":            # exactly score()'s batch step
                    with plain_forward(bridge):
                        two = yes_no_logits(bridge, b, ans)
                else:
                    logits = bridge(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
                    two = logits[:, -1, [ans.yes, ans.no]].float()
                p[who].append(torch.softmax(two, -1)[:, 0])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[who] += time.perf_counter() - t
    diff = (torch.cat(p["hf"]) - torch.cat(p["recircuit"])).abs().max().item()
    diff_keep = (torch.cat(p["hf"]) - torch.cat(p["hf+logits_to_keep"])).abs().max().item()
    diff_hooks = (torch.cat(p["hf"]) - torch.cat(p["recircuit+head-hooks"])).abs().max().item()
    rows = [{"scorer": k, "samples_per_s": round(args.n / v, 3), "seconds": round(v, 2)} for k, v in times.items()]
    print(format_table(rows))
    print(f"\nmodel={args.model} device={device} n={args.n} batch={args.batch_size}")
    print(f"bridge overhead: recircuit score() / hf throughput ratio = {times['hf'] / times['recircuit']:.3f}"
          f"  (max |dP(yes)| = {diff:.2e})")
    print(f"recircuit score() / hf with logits_to_keep=1 = {times['hf+logits_to_keep'] / times['recircuit']:.3f}"
          f"  (hf with logits_to_keep=1 vs hf: max |dP(yes)| = {diff_keep:.2e})")
    print(f"with per-head circuit hooks on: ratio = {times['hf'] / times['recircuit+head-hooks']:.3f}"
          f"  (max |dP(yes)| = {diff_hooks:.2e})")


if __name__ == "__main__":
    main()
