"""Load language models as hooked ``TransformerBridge`` objects.

Usage::

    from recircuit.models import load_model, tiny_model
    model = load_model("smollm2-135m-instruct")     # offline, from the pinned GGUF asset
    model = load_model("Qwen/Qwen2.5-0.5B")          # any TL-supported HF name (hub or cache)
    model = load_model("/path/to/hf_dir")            # a local HF directory
    test_model = tiny_model(seed=0)                  # 2-layer GQA Llama for tests, instant

Every model comes back with the per-head hooks that circuits need switched on:
``blocks.L.attn.hook_result`` ``[b, p, n_heads, d_model]``, ``blocks.L.hook_{q,k,v}_input``
(k/v per KV head under grouped-query attention) and ``blocks.L.hook_mlp_in``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

logger = logging.getLogger(__name__)

#: Short names for models recircuit can load without the HF hub.
OFFLINE_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "asset": "smollm2-135m-instruct",
        "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}

#: The name tiny test models carry in their config.
TINY_MODEL_NAME = "recircuit/tiny-llama-gqa"


class ModelLoadError(RuntimeError):
    """A model name or path could not be turned into a bridge."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def enable_circuit_hooks(model: TransformerBridge) -> TransformerBridge:
    """Switch on per-head attention results, split q/k/v inputs and ``hook_mlp_in``."""
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model


@contextmanager
def plain_forward(model: TransformerBridge) -> Iterator[TransformerBridge]:
    """Temporarily switch the per-head hooks off, for forward passes that need no circuits.

    With them off the bridge computes exactly what HF computes (bit-identical logits) and skips
    materialising per-head results ``[batch, pos, n_heads, d_model]``, which makes scoring faster.
    The previous settings are restored on exit.
    """
    cfg = model.cfg
    before = (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_hook_mlp_in)
    model.set_use_attn_result(False)
    model.set_use_split_qkv_input(False)
    model.set_use_hook_mlp_in(False)
    try:
        yield model
    finally:
        model.set_use_attn_result(before[0])
        model.set_use_split_qkv_input(before[1])
        model.set_use_hook_mlp_in(before[2])


def _boot(hf_name: str, hf_model, tokenizer, device: torch.device, dtype: torch.dtype) -> TransformerBridge:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    hf_model.eval()
    bridge = TransformerBridge.boot_transformers(
        hf_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    return enable_circuit_hooks(bridge)


def load_hf(name_or_path: str, dtype: torch.dtype = torch.float32):
    """Load the plain HF ``(model, tokenizer)`` pair behind ``name_or_path`` (no bridge).

    Args:
        name_or_path: an entry of :data:`OFFLINE_MODELS`, an HF hub name or a local HF directory.
        dtype: weight dtype.

    Returns:
        ``(hf_model, tokenizer, hf_name)``; ``hf_name`` is the architecture label for TL.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = name_or_path.lower()
    if key in OFFLINE_MODELS:
        from recircuit.assets import fetch_asset

        spec = OFFLINE_MODELS[key]
        gguf = fetch_asset(spec["asset"])
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=dtype, attn_implementation="eager"
        )
        return hf, tok, spec["hf_name"]
    path = Path(name_or_path).expanduser()
    if path.exists() and not (path / "config.json").exists():
        raise ModelLoadError(
            f"{path} exists but holds no config.json, so it is not a Hugging Face model directory. "
            "Point --model at a directory made by `save_pretrained`, or use one of "
            f"{sorted(OFFLINE_MODELS)}."
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else name_or_path)
        hf = AutoModelForCausalLM.from_pretrained(
            str(path) if path.exists() else name_or_path, dtype=dtype, attn_implementation="eager"
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Unknown or unreachable model {name_or_path!r}: {err}. Use one of the offline models "
            f"{sorted(OFFLINE_MODELS)}, a local Hugging Face directory, or a hub name that "
            "TransformerLens supports while the hub (or its cache, HF_HOME) is reachable."
        ) from err
    hf_name = getattr(hf.config, "_name_or_path", None) or name_or_path
    return hf, tok, hf_name


def load_model(
    name_or_path: str = "smollm2-135m-instruct",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> TransformerBridge:
    """Load a causal LM as a ``TransformerBridge`` with per-head circuit hooks on.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (offline GGUF asset), an HF hub name that
            TransformerLens supports, a local HF model directory, or ``"tiny"`` (the random
            test model of :func:`tiny_model`, for fast dry runs).
        device: torch device; defaults to CUDA when available.
        dtype: weight dtype (float32 by default; use bfloat16 on GPU for speed).

    Returns:
        A bridge in eval mode whose logits equal the HF model's.

    Raises:
        ModelLoadError: the name is unknown, the hub is unreachable or the path is not a model.
    """
    device = torch.device(device) if device is not None else default_device()
    if name_or_path.lower() in ("tiny", TINY_MODEL_NAME):
        return tiny_model(device=device)
    hf, tok, hf_name = load_hf(name_or_path, dtype=dtype)
    try:
        bridge = _boot(hf_name, hf, tok, device, dtype)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise ModelLoadError(
            f"TransformerLens has no bridge for {name_or_path!r} ({err}). Pick an architecture "
            "TransformerLens 4.x supports (Llama, Qwen2, Gemma, GPT-2, ...)."
        ) from err
    bridge.recircuit_name = name_or_path  # type: ignore[attr-defined]
    logger.info("loaded %s on %s", name_or_path, device)
    return bridge


def tiny_tokenizer():
    """A small deterministic byte-level BPE tokenizer for tests, trained in milliseconds.

    ``" Yes"`` and ``" No"`` are single tokens, as they are for SmolLM2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from recircuit.data.prompts import INSTRUCTION, PROMPT_TEMPLATE

    corpus = [
        PROMPT_TEMPLATE.format(instruction=INSTRUCTION, input="User Preference: \"Movie (1995)\"")
        + " Yes. No."
    ] * 4
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<pad>", "<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([" Yes", " No"])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    hf_tok.padding_side = "left"
    return hf_tok


def tiny_hf_model(seed: int = 0, n_layers: int = 2, n_heads: int = 4, n_kv_heads: int = 2, d_model: int = 64):
    """A tiny random Llama-architecture HF model (with GQA) and its tokenizer, for tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        hf = LlamaForCausalLM(cfg).eval()
    return hf, tok


def tiny_model(
    seed: int = 0,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_model: int = 64,
    device: str | torch.device | None = "cpu",
) -> TransformerBridge:
    """A tiny random GQA Llama bridge (default 2 layers, 4 query heads, 2 KV heads) for tests.

    Args:
        seed: weight-initialisation seed; the same seed gives identical weights.
        n_layers, n_heads, n_kv_heads, d_model: architecture.
        device: torch device (CPU by default, for tests).
    """
    hf, tok = tiny_hf_model(seed, n_layers, n_heads, n_kv_heads, d_model)
    bridge = _boot("meta-llama/Llama-2-7b-hf", hf, tok, torch.device(device or "cpu"), torch.float32)
    bridge.recircuit_name = TINY_MODEL_NAME  # type: ignore[attr-defined]
    bridge.recircuit_seed = seed  # type: ignore[attr-defined]
    return bridge


def model_name(model: TransformerBridge) -> str:
    """The name a bridge was loaded under (used to check checkpoints against base models)."""
    return getattr(model, "recircuit_name", None) or str(model.cfg.model_name)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
