"""Training throughput: recircuit's loop on the bridge against a plain HF + torch loop.

Same HF weights, same samples, same batch size, full fine-tuning with AdamW; the two loops
alternate batch by batch so machine noise hits both alike.

    python benchmarks/train_throughput.py --model smollm2-135m-instruct --steps 4
    python benchmarks/train_throughput.py --model tiny --steps 20
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from recircuit.data import build_split
from recircuit.models import load_hf, plain_forward, tiny_hf_model
from recircuit.models.loading import _boot
from recircuit.report_table import format_table
from recircuit.train.losses import answer_loss, tokenize_with_answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    if args.model == "tiny":
        hf, tok = tiny_hf_model(0)
        name = "meta-llama/Llama-2-7b-hf"
    else:
        hf, tok, name = load_hf(args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ref = copy.deepcopy(hf).to(device).train()
    bridge = _boot(name, hf, tok, device, torch.float32)
    bridge.train()
    samples = build_split("tallrec", data_dir=args.data_dir).train[: args.steps * args.batch_size]
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-5)
    opt_rc = torch.optim.AdamW(bridge.parameters(), lr=1e-5)
    times = {"hf+torch": 0.0, "recircuit": 0.0}
    for i in range(args.steps):
        chunk = samples[i * args.batch_size : (i + 1) * args.batch_size]
        b = tokenize_with_answers(tok, chunk, device)
        t = time.perf_counter()
        logits = ref(b.input_ids, attention_mask=b.attention_mask,
                     position_ids=(b.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(2, b.input_ids[:, 1:, None])[:, :, 0]
        m = b.target_mask[:, :-1]
        loss = ((nll * m).sum(1) / m.sum(1)).sum() / len(chunk)
        loss.backward()
        opt_ref.step()
        opt_ref.zero_grad()
        times["hf+torch"] += time.perf_counter() - t
        t = time.perf_counter()
        with plain_forward(bridge):
            loss = answer_loss(bridge, chunk, reduction="sum") / len(chunk)
            loss.backward()
        opt_rc.step()
        opt_rc.zero_grad()
        times["recircuit"] += time.perf_counter() - t
    n = args.steps * args.batch_size
    rows = [{"loop": k, "samples_per_s": round(n / v, 3), "seconds": round(v, 1)} for k, v in times.items()]
    print(format_table(rows))
    print(f"\nmodel={args.model} device={device} steps={args.steps} batch={args.batch_size} (full fine-tuning, AdamW)")
    print(f"recircuit / HF throughput ratio = {times['hf+torch'] / times['recircuit']:.3f}")


if __name__ == "__main__":
    main()
