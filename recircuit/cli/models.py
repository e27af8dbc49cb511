"""``recircuit models``: work with model checkpoints (convert a GGUF file to a Hugging Face directory).

Usage::

    recircuit models convert /models/model.gguf /models/model-hf            # then --model /models/model-hf
    recircuit models convert model.gguf out/ --overwrite --json

``convert`` dequantizes the GGUF (whatever architecture transformers reads from it) and writes
``config.json``, ``model.safetensors`` and the tokenizer files, atomically; ``--model OUT_DIR``
then loads it without dequantizing again, with the logits ``--model FILE.gguf`` gives.
"""

from __future__ import annotations

import argparse
import time


def cmd_models(args: argparse.Namespace) -> int:
    """``recircuit models convert``: write a GGUF file's model as a Hugging Face directory."""
    from recircuit.cli.common import emit
    from recircuit.models import convert_gguf

    t = time.perf_counter()
    out = convert_gguf(args.src, args.out_dir, overwrite=args.overwrite)
    files = sorted(p.name for p in out.iterdir())
    emit(args, {"source": args.src, "out_dir": str(out), "files": ", ".join(files),
                "seconds": round(time.perf_counter() - t, 1)},
         title=f"converted; load it with --model {out}")
    return 0


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand."""
    p = subparsers.add_parser("models", help="model checkpoints: convert a GGUF file to a Hugging Face directory")
    p.add_argument("action", choices=["convert"])
    p.add_argument("src", help="the .gguf file")
    p.add_argument("out_dir", help="the directory to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR when it exists and is not empty")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return p
