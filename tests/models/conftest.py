"""Fixtures for model tests: a tiny GGUF file written here, with the ``gguf`` package, from a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (``convert_hf_to_gguf.py``: ``LlamaModel.permute``); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(path: Path, hf, tok, *, arch: str = "llama", add_bos: bool = False) -> Path:
    """Write ``hf`` (a Llama ``*ForCausalLM``) and its byte-level BPE tokenizer to ``path`` as an F32 GGUF.

    Metadata and tensor names follow llama.cpp (``token_embd.weight``, ``blk.N.attn_q.weight``, ...,
    ``output_norm.weight``, ``output.weight``); q/k rows are permuted as llama.cpp does, so that
    transformers' loader (which un-permutes them) gives back ``hf``'s weights. ``arch`` other than
    ``"llama"`` writes the same file under another architecture name (to test refusals).
    """
    import gguf

    cfg = hf.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("recircuit tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    # tokenizer: byte-level BPE ("gpt2"), every token spelled in the byte alphabet
    spec = json.loads(tok.backend_tokenizer.to_str())
    spelling = {b: c for b, c in zip(range(256), _byte_alphabet())}
    tokens = [""] * len(tok)
    types = [gguf.TokenType.NORMAL] * len(tok)
    for text, i in spec["model"]["vocab"].items():
        tokens[i] = text
    for added in spec["added_tokens"]:
        i, text = added["id"], added["content"]
        if added["special"]:
            tokens[i], types[i] = text, gguf.TokenType.CONTROL
        else:  # " Yes" -> "ĠYes": the byte-level spelling the BPE merges reach
            tokens[i] = "".join(spelling[b] for b in text.encode("utf-8"))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    if add_bos:
        w.add_bos_token_id(tok.eos_token_id)
    w.add_add_bos_token(add_bos)

    sd = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for layer in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{layer}.", f"blk.{layer}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(b + "attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], n_kv))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


@pytest.fixture(scope="session")
def tiny_llama_hf():
    """The source of the tiny GGUF: a random 2-layer GQA Llama (d_model 64, 386 tokens) and its tokenizer."""
    from recircuit.models import tiny_hf_model

    hf, tok = tiny_hf_model(seed=5)
    with torch.no_grad():  # non-trivial norm weights, so a mix-up of norm tensors shows
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.rand_like(p) * 0.5)
    return hf, tok


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama_hf, tmp_path_factory) -> Path:
    """A tiny F32 Llama GGUF file written from :func:`tiny_llama_hf`."""
    hf, tok = tiny_llama_hf
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", hf, tok)


@pytest.fixture(scope="session")
def gguf_writer():
    """:func:`write_llama_gguf`, for tests that write GGUF variants (another architecture name, BOS on)."""
    return write_llama_gguf
