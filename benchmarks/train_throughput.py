"""Training throughput: recircuit's ``train()`` on the bridge against a plain HF + torch loop.

Both sides start from the same HF weights and see the same batches: the same tokens, loss
(answer-token cross-entropy), AdamW, gradient clipping and warmup+cosine schedule. The plain
side is what a user would write without recircuit: ``LlamaForCausalLM`` plus, in LoRA mode,
peft-style adapters that wrap each target ``nn.Linear``'s forward (``y = W x + s B A x``; peft is
not installed here, and this is the computation peft performs). The recircuit side is the real
:func:`recircuit.train.train` loop (weight-space LoRA, last-good snapshots for the NaN guard,
progress bookkeeping). Rounds alternate between the two so machine noise hits both alike.

    python benchmarks/train_throughput.py --data-dir /work/shared/data/ml-100k            # SmolLM2, full
    python benchmarks/train_throughput.py --mode lora --rounds 2 --steps-per-round 1
    python benchmarks/train_throughput.py --model tiny --rounds 3 --steps-per-round 4     # seconds
    python benchmarks/train_throughput.py --bf16                                          # autocast both
    python benchmarks/train_throughput.py --bf16-vs-fp32          # recircuit fp32 vs recircuit bf16 autocast
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from recircuit.data import build_split
from recircuit.models import load_hf, tiny_hf_model
from recircuit.models.loading import _boot
from recircuit.report_table import format_table
from recircuit.train import LoraConfig, TrainConfig, train
from recircuit.train.loop import lr_lambda
from recircuit.train.losses import tokenize_with_answers

#: recircuit target name -> attribute path of the projection inside an HF Llama decoder layer.
HF_TARGETS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


class ForwardLora(nn.Module):
    """peft-style LoRA: wraps a linear's forward, ``y = base(x) + scale * B(A(dropout(x)))``."""

    def __init__(self, base: nn.Linear, cfg: LoraConfig) -> None:
        super().__init__()
        self.base, self.scale = base, cfg.scale
        self.drop = nn.Dropout(cfg.dropout)
        self.A = nn.Linear(base.in_features, cfg.rank, bias=False)
        self.B = nn.Linear(cfg.rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the low-rank update."""
        return self.base(x) + self.scale * self.B(self.A(self.drop(x)))


def wrap_hf_lora(hf: nn.Module, cfg: LoraConfig) -> list[nn.Parameter]:
    """Wrap the target projections of every HF decoder layer; return the adapter parameters."""
    for p in hf.parameters():
        p.requires_grad_(False)
    params = []
    for layer in hf.model.layers:
        for t in cfg.targets:
            parent_path, attr = HF_TARGETS[t].rsplit(".", 1)
            parent = layer.get_submodule(parent_path)
            w = ForwardLora(getattr(parent, attr), cfg)
            setattr(parent, attr, w)
            params += [w.A.weight, w.B.weight]
    return params


def hf_loss(hf: nn.Module, tok, samples) -> torch.Tensor:
    """Mean answer-token cross-entropy, computed the plain way on the HF model."""
    b = tokenize_with_answers(tok, samples, next(hf.parameters()).device, padding_side="right")
    logits = hf(b.input_ids, attention_mask=b.attention_mask).logits
    m = b.target_mask[:, :-1].bool()
    nll = nn.functional.cross_entropy(logits[:, :-1][m].float(), b.input_ids[:, 1:][m], reduction="none")
    per = torch.zeros(len(samples), device=nll.device).index_add(0, m.nonzero()[:, 0], nll) / m.sum(1)
    return per.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="an offline model name or 'tiny'")
    ap.add_argument("--mode", default="full", choices=["full", "lora"])
    ap.add_argument("--rounds", type=int, default=2, help="alternations between the two loops")
    ap.add_argument("--steps-per-round", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for both loops (CPU: AMX)")
    ap.add_argument("--bf16-vs-fp32", action="store_true",
                    help="instead: recircuit's loop in fp32 against the same loop under bf16 autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        hf, tok = tiny_hf_model(0)
        name = "meta-llama/Llama-2-7b-hf"
    else:
        hf, tok, name = load_hf(args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    ref = copy.deepcopy(hf).to(device).train()
    tok2 = copy.deepcopy(tok)  # booting alters the tokenizer it is given
    bridge = _boot(name, hf, tok, device, torch.float32)
    n_steps = args.rounds * args.steps_per_round
    samples = build_split("tallrec", data_dir=args.data_dir).train[: n_steps * args.batch_size]

    lcfg = LoraConfig()
    cfg = TrainConfig(mode=args.mode, lr=1e-5 if args.mode == "full" else 1e-4, batch_size=args.batch_size,
                      warmup_ratio=0.0, lora=lcfg, bf16=args.bf16, cpu_bf16=args.bf16)
    if args.bf16_vs_fp32:  # the second side is a second bridge on the same weights
        other = _boot(name, ref, tok2, device, torch.float32)
    else:
        params = wrap_hf_lora(ref, lcfg) if args.mode == "lora" else list(ref.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(n_steps, 0))
    names = ("fp32", "bf16") if args.bf16_vs_fp32 else ("hf+torch", "recircuit")
    times = dict.fromkeys(names, 0.0)
    losses: dict[str, list[float]] = {k: [] for k in names}
    per_round = args.steps_per_round * args.batch_size
    for r in range(args.rounds):
        chunk = samples[r * per_round : (r + 1) * per_round]
        if args.bf16_vs_fp32:
            for key, model in (("fp32", bridge), ("bf16", other)):
                t = time.perf_counter()
                res = train(model, chunk, None, replace(cfg, bf16=key == "bf16", cpu_bf16=key == "bf16"), progress=False)
                times[key] += time.perf_counter() - t
                losses[key] += [h["loss"] for h in res.history]
            continue
        # the batch order train() uses (it shuffles with its seed), so both sides see the same batches
        hf_chunk = [chunk[j] for j in np.random.default_rng(cfg.seed).permutation(len(chunk))]
        t = time.perf_counter()
        for k in range(0, len(hf_chunk), args.batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss = hf_loss(ref, tok, hf_chunk[k : k + args.batch_size])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses["hf+torch"].append(loss.item())
        times["hf+torch"] += time.perf_counter() - t
        t = time.perf_counter()
        res = train(bridge, chunk, None, copy.deepcopy(cfg), progress=False)
        times["recircuit"] += time.perf_counter() - t
        losses["recircuit"] += [h["loss"] for h in res.history]
    n = n_steps * args.batch_size
    rows = [{"loop": k, "samples_per_s": round(n / v, 3), "seconds": round(v, 1),
             "first_loss": round(losses[k][0], 4)} for k, v in times.items()]
    ratio = times[names[0]] / times[names[1]]
    if args.json:
        print(json.dumps({"model": args.model, "mode": args.mode, "device": str(device), "bf16": args.bf16,
                          "steps": n_steps, "batch": args.batch_size, "rows": rows, "ratio": ratio}, indent=2))
        return
    print(format_table(rows))
    print(f"\nmodel={args.model} mode={args.mode} device={device} bf16={args.bf16} steps={n_steps} "
          f"batch={args.batch_size} threads={torch.get_num_threads()} targets={list(lcfg.targets)}")
    print(f"{names[1]} / {names[0]} throughput ratio = {ratio:.3f}")


if __name__ == "__main__":
    main()
