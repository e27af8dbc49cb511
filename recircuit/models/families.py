"""Model families: where each supported family keeps its attention and MLP weights, in one table.

Usage::

    from recircuit.models.families import family_of, projection_params, head_slice, module_update_norms
    fam = family_of(model)                      # FAMILIES["gpt2"]: fused qkv, plain MLP, learned positions
    fam.post_norm                               # True for gemma2/gemma3: per-head results are pre-norm
    params = projection_params(model)           # {"blocks.0.q": Parameter, ..., "blocks.1.down": Parameter}
    rows_cols = head_slice(model, "q", 2)       # head 2's part of W_Q: params["blocks.0.q"][rows_cols]
    norms = module_update_norms(before, after)  # {"a0.h0": 0.0, ..., "m1": 0.31}

Everything in recircuit that needs to know where a head or an MLP lives in a model's weights
(unlearning masks, LoRA targets, weight-change maps) reads this module; nothing else names a
projection.

**Seven projections, TransformerLens's names.** recircuit calls a layer's projection weights
``q``, ``k``, ``v``, ``o`` (attention) and ``gate``, ``up``, ``down`` (MLP; ``gate`` only in gated
MLPs). Each is found through the ``TransformerBridge``'s own component mapping
(``model.blocks[L].attn.q`` ... ``model.blocks[L].mlp.out``), never through a Hugging Face
attribute path, so a family is described by facts, not by paths (:data:`PROJECTIONS`).

**Fused q/k/v.** GPT-2 (``c_attn``), GPT-NeoX (``query_key_value``) and Phi-3 (``qkv_proj``) keep
q, k and v in one matrix. At boot the bridge splits it into three standalone ``nn.Linear``
modules (``attn.q``/``attn.k``/``attn.v``) and every forward pass reads those; the Hugging Face
fused matrix is a stale copy from then on. recircuit therefore masks, adapts and measures the
split weights, in which head ``H``'s rows are always ``H*d_head:(H+1)*d_head``. How those rows
sit in the fused matrix (:func:`fused_qkv_rows`: ``[Q | K | V]`` blocks for GPT-2 and Phi-3,
``[q_0 k_0 v_0 | q_1 k_1 v_1 | ...]`` per head for GPT-NeoX) is recorded in the table and tested
against the bridge's split. Phi-3's fused ``gate_up_proj`` is split the same way.

**Weight layouts.** ``nn.Linear`` stores ``[out, in]``; GPT-2's ``Conv1D`` stores ``[in, out]``.
A head's query/key/value part is a block of *output* features, its share of ``o`` a block of
*input* features; :func:`head_slice` turns that into rows or columns for the layout at hand.

**Post-block norms.** Gemma-2/3 normalise each block's output again before adding it to the
residual stream ("sandwich" norms, ``ln1_post``/``ln2_post`` on the bridge). There the bridge's
per-head ``hook_result`` is taken *before* ``ln1_post``, so a head's result is not what it
writes; :attr:`Family.post_norm` records it, and :func:`post_norm_head_writes` gives what each
head writes under the clean run's norm scale (see :mod:`recircuit.circuits.engine` for what is
exact and what is linearised). The MLP's ``hook_mlp_out`` is taken after ``ln2_post``: it is the
write itself. Only RMS post-norms are described.

**What the table refuses.** A family whose bridge has no per-head attention results, lacks one of
``q``/``k``/``v``/``o`` or the MLP's ``in``/``out``, or re-normalises the attention output with a
norm that is not an RMSNorm gets an :class:`~recircuit.errors.InputError` naming the architecture
and what is missing. A family not in :data:`FAMILIES` whose bridge shows all of the above (Qwen2,
Mistral, ...) is described from the bridge alone.

**Adding a family:** add a :class:`Family` row to :data:`FAMILIES` (with a ``tiny_config`` so
``load_model("tiny-<name>")`` builds a random one offline) and add it to the family tests
(``tests/models/test_families.py``, ``tests/unlearn/test_families.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from recircuit.errors import InputError
from recircuit.nodes import head_name, mlp_name

Layout = Literal["linear", "conv1d"]


@dataclass(frozen=True)
class ProjectionRole:
    """What one projection is, independent of family.

    Attributes:
        short: recircuit's name (``"q"``, ..., ``"down"``), used in parameter names ``blocks.L.<short>``.
        component: the block submodule holding it (``"attn"`` or ``"mlp"``).
        bridge: its name under that submodule in TransformerLens's component mapping.
        heads: ``"query"`` (a block of output features per query head), ``"kv"`` (per KV head),
            ``"query_in"`` (a block of input features per query head, the o-projection) or
            ``None`` (MLP weights: owned whole by the MLP).
    """

    short: str
    component: str
    bridge: str
    heads: Literal["query", "kv", "query_in"] | None


#: recircuit's projection names -> where the bridge keeps them and how heads own them.
PROJECTIONS: dict[str, ProjectionRole] = {
    "q": ProjectionRole("q", "attn", "q", "query"),
    "k": ProjectionRole("k", "attn", "k", "kv"),
    "v": ProjectionRole("v", "attn", "v", "kv"),
    "o": ProjectionRole("o", "attn", "o", "query_in"),
    "gate": ProjectionRole("gate", "mlp", "gate", None),
    "up": ProjectionRole("up", "mlp", "in", None),
    "down": ProjectionRole("down", "mlp", "out", None),
}


def _tiny_llama(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                       num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                       max_position_embeddings=1024, pad_token_id=pad, bos_token_id=None, eos_token_id=eos,
                       tie_word_embeddings=False)


def _tiny_gpt2(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_inner=4 * d_model,
                      n_positions=1024, pad_token_id=pad, bos_token_id=eos, eos_token_id=eos,
                      tie_word_embeddings=False)


def _tiny_neox(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, max_position_embeddings=1024,
                         pad_token_id=pad, bos_token_id=None, eos_token_id=eos, tie_word_embeddings=False)


def _tiny_phi3(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    from transformers import Phi3Config

    return Phi3Config(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                      max_position_embeddings=1024, pad_token_id=pad, bos_token_id=None, eos_token_id=eos,
                      tie_word_embeddings=False)


def _tiny_gemma(version: int, vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    """A tiny Gemma-2 (``version=2``) or Gemma-3 text (``version=3``) config: the same sizes, post-block norms."""
    import transformers

    config_cls = transformers.Gemma2Config if version == 2 else transformers.Gemma3TextConfig
    return config_cls(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                      head_dim=d_model // n_heads, max_position_embeddings=1024, pad_token_id=pad,
                      bos_token_id=None, eos_token_id=eos, tie_word_embeddings=False,
                      architectures=[f"Gemma{version}ForCausalLM"])


def _tiny_gemma2(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    return _tiny_gemma(2, vocab, n_layers, n_heads, n_kv, d_model, pad, eos)


def _tiny_gemma3(vocab: int, n_layers: int, n_heads: int, n_kv: int, d_model: int, pad: int, eos: int):
    return _tiny_gemma(3, vocab, n_layers, n_heads, n_kv, d_model, pad, eos)


@dataclass(frozen=True)
class Family:
    """One model family: how its attention and MLP are built (one row of :data:`FAMILIES`).

    Attributes:
        name: short name (``"llama"``, ``"gpt2"``, ...); ``load_model(f"tiny-{name}")`` builds a
            random one where ``tiny_config`` is set.
        architectures: Hugging Face architecture class names (``model.cfg.architecture``).
        qkv: ``"split"`` (separate q/k/v matrices in HF) or ``"fused"`` (one matrix, split by the bridge).
        fused_qkv_layout: ``"blocked"`` (``[Q | K | V]``), ``"interleaved"`` (``[q_h k_h v_h]`` per
            head) or ``None``; see :func:`fused_qkv_rows`.
        mlp: ``"gated"`` (gate, up, down), ``"fused_gate_up"`` (gated; HF's gate and up in one
            matrix, split by the bridge) or ``"plain"`` (in, out).
        layout: weight layout of the HF modules the bridge keeps (``"conv1d"``: ``[in, out]``);
            the bridge's split q/k/v are ``nn.Linear`` in every family.
        parallel_attn_mlp: attention and MLP both read the block input (GPT-NeoX, GPT-J): the MLP
            of layer L does not read the heads of layer L.
        norm: ``"rms"`` or ``"layer"`` normalisation.
        positions: ``"rotary"`` or ``"learned"`` (an extra embedding writer, ``hook_pos_embed``).
        gqa: whether the family allows fewer KV heads than query heads.
        tl_label: the model name tiny models are booted under (picks TransformerLens's adapter).
        tiny_config: ``(vocab, n_layers, n_heads, n_kv_heads, d_model, pad_id, eos_id) -> HF config``.
        post_norm: the block RMS-normalises its attention and MLP outputs again before the
            residual (Gemma-2/3 ``ln1_post``/``ln2_post``): per-head results are pre-norm.
    """

    name: str
    architectures: tuple[str, ...]
    qkv: Literal["split", "fused"]
    fused_qkv_layout: Literal["blocked", "interleaved"] | None
    mlp: Literal["gated", "fused_gate_up", "plain"]
    layout: Layout
    parallel_attn_mlp: bool
    norm: Literal["rms", "layer"]
    positions: Literal["rotary", "learned"]
    gqa: bool
    tl_label: str = ""
    tiny_config: Callable | None = field(default=None, repr=False, compare=False)
    post_norm: bool = False

    @property
    def gated(self) -> bool:
        """Whether the MLP has a gate projection."""
        return self.mlp != "plain"

    @property
    def projections(self) -> tuple[str, ...]:
        """The projection short names this family has, in :data:`PROJECTIONS` order."""
        return tuple(s for s in PROJECTIONS if s != "gate" or self.gated)

    @property
    def mlp_projections(self) -> tuple[str, ...]:
        """The MLP's projections (``gate``, ``up``, ``down`` or ``up``, ``down``)."""
        return tuple(s for s in self.projections if PROJECTIONS[s].component == "mlp")


#: The families recircuit knows by name; each has a tiny random model (``load_model("tiny-<name>")``).
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", ("LlamaForCausalLM",), "split", None, "gated", "linear", False, "rms", "rotary", True,
               "meta-llama/Llama-2-7b-hf", _tiny_llama),
        Family("gpt2", ("GPT2LMHeadModel",), "fused", "blocked", "plain", "conv1d", False, "layer", "learned", False,
               "gpt2", _tiny_gpt2),
        Family("neox", ("GPTNeoXForCausalLM",), "fused", "interleaved", "plain", "linear", True, "layer", "rotary",
               False, "EleutherAI/pythia-70m", _tiny_neox),
        Family("phi3", ("Phi3ForCausalLM",), "fused", "blocked", "fused_gate_up", "linear", False, "rms", "rotary",
               True, "microsoft/Phi-3-mini-4k-instruct", _tiny_phi3),
        Family("gemma2", ("Gemma2ForCausalLM",), "split", None, "gated", "linear", False, "rms", "rotary", True,
               "google/gemma-2-2b", _tiny_gemma2, post_norm=True),
        Family("gemma3", ("Gemma3ForCausalLM",), "split", None, "gated", "linear", False, "rms", "rotary", True,
               "google/gemma-3-270m", _tiny_gemma3, post_norm=True),
    )
}


def _conv1d_type() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def _layout(module: nn.Module) -> Layout | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _conv1d_type()):
        return "conv1d"
    return None


def _architecture(model) -> str:
    return str(getattr(model.cfg, "architecture", None) or type(getattr(model, "original_model", model)).__name__)


def _module(model, layer: int, role: ProjectionRole) -> nn.Module | None:
    comp = getattr(model.blocks[layer], role.component, None)
    bridge = getattr(comp, role.bridge, None) if comp is not None else None
    if bridge is None:
        return None
    return getattr(bridge, "original_component", None) or bridge


def _describe(model) -> tuple[dict[str, object], list[str]]:
    """What the bridge shows about block 0 (facts) and what it lacks (missing)."""
    arch = _architecture(model)
    blk = model.blocks[0]
    attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
    missing: list[str] = []
    if attn is None or mlp is None:
        missing.append("an 'attn' and an 'mlp' submodule in every block")
        return {}, missing
    if not getattr(type(attn), "supports_attn_result", False):
        missing.append(f"per-head attention results ({type(attn).__name__} has no per-head fork in TransformerLens)")
    for short, role in PROJECTIONS.items():
        if short == "gate":
            continue
        mod = _module(model, 0, role)
        if mod is None:
            missing.append(f"blocks.0.{role.component}.{role.bridge} (the {short} projection)")
        elif _layout(mod) is None:
            missing.append(f"an nn.Linear or Conv1D weight at blocks.0.{role.component}.{role.bridge} "
                           f"(found {type(mod).__name__})")
    post_norms = [n for n in ("ln1_post", "ln2_post") if hasattr(blk, n)]
    if post_norms and (not hasattr(blk, "ln1_post") or not getattr(blk.ln1_post, "uses_rms_norm", False)):
        missing.append(f"an RMSNorm as the post-attention norm (the block re-normalises its outputs with {post_norms}; "
                       "recircuit describes Gemma-2/3-style RMS post-norms only)")
    gate = _module(model, 0, PROJECTIONS["gate"])
    facts = {
        "architecture": arch,
        "qkv": "fused" if hasattr(attn, "qkv") else "split",
        "gated": gate is not None,
        "parallel_attn_mlp": bool(getattr(model.cfg, "parallel_attn_mlp", False)),
        "post_norm": bool(post_norms),
    }
    return facts, missing


def family_of(model) -> Family:
    """The :class:`Family` of a bridge, checked against what the bridge's components show.

    Args:
        model: a ``TransformerBridge``.

    Returns:
        The :data:`FAMILIES` row for the model's architecture, or, for an architecture not in the
        table whose bridge has everything recircuit needs, a row described from the bridge.

    Raises:
        InputError: the bridge lacks something recircuit needs (named), or it no longer matches
            the table's row for its architecture.
    """
    facts, missing = _describe(model)
    arch = _architecture(model)
    known = sorted(FAMILIES)
    if missing:
        raise InputError(
            f"recircuit cannot describe model family {arch}: it lacks {'; '.join(missing)}",
            field="architecture",
            fix=f"use a model of a supported family ({', '.join(known)}; or another whose TransformerLens bridge "
                "has per-head hooks and q/k/v/o + MLP in/out projections), or add a row to "
                "recircuit.models.families.FAMILIES",
        )
    row = next((f for f in FAMILIES.values() if arch in f.architectures), None)
    if row is None:
        o = _module(model, 0, PROJECTIONS["o"])
        mlp_kind = "gated" if facts["gated"] else "plain"
        n_kv = getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
        return Family(
            name=arch, architectures=(arch,), qkv=facts["qkv"],  # type: ignore[arg-type]
            fused_qkv_layout=None, mlp=mlp_kind, layout=_layout(o) or "linear",  # type: ignore[arg-type]
            parallel_attn_mlp=bool(facts["parallel_attn_mlp"]),
            norm="rms" if "RMS" in str(getattr(model.cfg, "normalization_type", "")) else "layer",
            positions="learned" if hasattr(model, "pos_embed") else "rotary",
            gqa=n_kv != model.cfg.n_heads, post_norm=bool(facts["post_norm"]),
        )
    mismatch = [f"{k}: table {want!r}, bridge {facts[k]!r}"
                for k, want in (("qkv", row.qkv), ("gated", row.gated), ("parallel_attn_mlp", row.parallel_attn_mlp),
                                ("post_norm", row.post_norm))
                if facts[k] != want]
    if mismatch:
        raise InputError(
            f"{arch}: TransformerLens's bridge no longer matches recircuit's family table ({'; '.join(mismatch)})",
            field="architecture",
            fix=f"update the {row.name!r} row of recircuit.models.families.FAMILIES",
        )
    return row


@dataclass(frozen=True)
class Projection:
    """One projection weight of one layer, as the bridge runs it.

    Attributes:
        name: ``blocks.L.<short>``.
        layer: the layer.
        role: its :class:`ProjectionRole`.
        module: the ``nn.Linear`` / ``Conv1D`` the bridge calls.
        layout: ``"linear"`` (weight ``[out, in]``) or ``"conv1d"`` (weight ``[in, out]``).
    """

    name: str
    layer: int
    role: ProjectionRole
    module: nn.Module
    layout: Layout

    @property
    def param(self) -> nn.Parameter:
        """The weight parameter (under a LoRA parametrization: the base weight, not the adapted one)."""
        from torch.nn.utils import parametrize

        if parametrize.is_parametrized(self.module, "weight"):
            return self.module.parametrizations.weight.original
        return self.module.weight

    @property
    def module_class_name(self) -> str:
        """The module's class name, ignoring a ``parametrize`` wrapper class (``Conv1D``, ``Linear``)."""
        cls = type(self.module)
        if cls.__name__.startswith("Parametrized") and len(cls.__mro__) > 1:
            return cls.__mro__[1].__name__
        return cls.__name__

    @property
    def in_features(self) -> int:
        """Input width."""
        w = self.param
        return w.shape[1] if self.layout == "linear" else w.shape[0]

    @property
    def out_features(self) -> int:
        """Output width."""
        w = self.param
        return w.shape[0] if self.layout == "linear" else w.shape[1]


def projections(model, targets: tuple[str, ...] | None = None) -> dict[str, Projection]:
    """Every projection of every layer, keyed ``blocks.L.<short>`` (layer-major, :data:`PROJECTIONS` order).

    Args:
        model: a bridge of a family :func:`family_of` accepts.
        targets: only these short names (each must exist in the family); default all the family has.

    Raises:
        InputError: the family cannot be described, or a target is not one of its projections.
    """
    fam = family_of(model)
    shorts = fam.projections if targets is None else tuple(targets)
    bad = [t for t in shorts if t not in fam.projections]
    if bad:
        raise InputError(f"model family {fam.name!r} has no {bad} projection", field="targets",
                         fix=f"choose from {list(fam.projections)}")
    out: dict[str, Projection] = {}
    for layer in range(model.cfg.n_layers):
        for short in shorts:
            role = PROJECTIONS[short]
            mod = _module(model, layer, role)
            layout = _layout(mod) if mod is not None else None
            if mod is None or layout is None:
                raise InputError(f"{_architecture(model)}: blocks.{layer}.{role.component}.{role.bridge} is missing "
                                 f"or not a linear layer ({type(mod).__name__})", field="architecture",
                                 fix="only models whose layers are alike are supported")
            out[f"blocks.{layer}.{short}"] = Projection(f"blocks.{layer}.{short}", layer, role, mod, layout)
    return out


def projection_params(model) -> dict[str, nn.Parameter]:
    """Short names ``blocks.L.{q,k,v,o,[gate,]up,down}`` -> the weight parameters the bridge runs.

    Biases, norms, embeddings and the unembedding are not projections (they are never masked or
    adapted). Under a LoRA parametrization the base weight is returned.
    """
    return {n: p.param for n, p in projections(model).items()}


def post_attn_norm(model, layer: int) -> nn.Module:
    """The module that normalises ``layer``'s attention output before the residual (``ln1_post``).

    It is the Hugging Face module the bridge itself runs (no hooks fire when it is called), so
    ``post_attn_norm(model, L)(x)`` is exactly what the model would add for a pre-norm output ``x``.

    Raises:
        ValueError: the model has no post-attention norm.
    """
    ln = getattr(model.blocks[layer], "ln1_post", None)
    if ln is None:
        raise ValueError(f"block {layer} has no post-attention norm (ln1_post)")
    return getattr(ln, "original_component", None) or ln


def post_norm_head_writes(model, layer: int, results: Float[torch.Tensor, "batch pos n_heads d_model"],
                          norm_in: Float[torch.Tensor, "batch pos d_model"],
                          ) -> Float[torch.Tensor, "batch pos n_heads d_model"]:
    """What each head of ``layer`` adds to the residual under an RMS post-norm, at the run's own scale.

    The block adds ``N(A) = w ⊙ A / s(A)`` with ``A = sum_h r_h`` (``norm_in``, the norm's input)
    and ``s(A) = sqrt(mean(A^2) + eps)``. ``N`` is not linear across heads; holding the scale
    ``s(A)`` of this run fixed (TransformerLens's frozen LayerNorm scale) makes it linear, and
    head ``h`` writes ``w ⊙ r_h / s(A)``. These writes sum to ``N(A)`` exactly on the run they
    come from. ``w`` is the norm's weight, ``1 + weight`` for Gemma's offset RMSNorm.

    Args:
        model: a bridge of a post-norm family.
        layer: the layer.
        results: the layer's per-head results ``r_h`` (``blocks.L.attn.hook_result``, pre-norm).
        norm_in: the post-attention norm's input on the same run (``blocks.L.ln1_post.hook_in``).

    Returns:
        Per-head writes, float32, same shape as ``results``.
    """
    ln = model.blocks[layer].ln1_post
    mod = post_attn_norm(model, layer)
    w = mod.weight.detach().float()
    if getattr(ln, "uses_weight_offset", False):
        w = 1.0 + w
    eps = getattr(mod, "eps", None)
    eps = getattr(mod, "variance_epsilon", None) if eps is None else eps
    eps = float(getattr(model.cfg, "eps", 1e-6) if eps is None else eps)
    s = (norm_in.detach().float().pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return results.float() * (w / s)[:, :, None, :]


def n_kv_heads(model) -> int:
    """KV heads per layer (``n_heads`` without grouped-query attention)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def d_head(model) -> int:
    """Width of one head."""
    return int(getattr(model.cfg, "d_head", None) or model.cfg.d_model // model.cfg.n_heads)


def head_slice(model, short: str, index: int, layer: int = 0) -> tuple[slice, slice]:
    """The part of ``blocks.{layer}.{short}``'s weight that one head owns, as ``(rows, cols)``.

    Args:
        model: a bridge.
        short: ``"q"`` or ``"o"`` (``index`` is a query head) or ``"k"``/``"v"`` (a KV head).
        index: the head.
        layer: the layer (layouts are the same in every layer of the supported families).

    Returns:
        ``weight[rows, cols]`` is the head's block: ``d_head`` output features for q/k/v, ``d_head``
        input features for o, placed as rows or columns according to the weight's layout.

    Raises:
        ValueError: an MLP projection (no heads) or a head index out of range.
    """
    role = PROJECTIONS.get(short)
    if role is None or role.heads is None:
        raise ValueError(f"{short!r} has no per-head slices; heads own q, k, v and o.")
    n = n_kv_heads(model) if role.heads == "kv" else model.cfg.n_heads
    if not 0 <= index < n:
        raise ValueError(f"head {index} out of range for {short!r} ({n} heads).")
    dh = d_head(model)
    block, everything = slice(index * dh, (index + 1) * dh), slice(None)
    mod = _module(model, layer, role)
    layout = _layout(mod) if mod is not None else None
    if layout is None:
        family_of(model)  # names what is missing
        raise ValueError(f"blocks.{layer}.{role.component}.{role.bridge} is not a linear layer.")
    on_out = role.heads != "query_in"
    on_rows = on_out == (layout == "linear")
    return (block, everything) if on_rows else (everything, block)


def neuron_slice(model, short: str, index: int, layer: int = 0) -> tuple[slice, slice]:
    """The part of ``blocks.{layer}.{short}``'s weight that MLP neuron ``index`` owns, as ``(rows, cols)``.

    A neuron is one hidden feature of the MLP: one output feature of ``gate`` and ``up`` (its
    pre-activations) and one input feature of ``down`` (what it writes), placed as a row or a
    column according to the weight's layout (``conv1d`` weights are stored ``[in, out]``).

    Raises:
        ValueError: an attention projection, or a neuron index out of range.
    """
    role = PROJECTIONS.get(short)
    if role is None or role.component != "mlp":
        raise ValueError(f"{short!r} is not an MLP projection; neurons own gate, up and down.")
    d_mlp = model.cfg.d_mlp
    if not 0 <= index < d_mlp:
        raise ValueError(f"neuron {index} out of range ({d_mlp} neurons).")
    mod = _module(model, layer, role)
    layout = _layout(mod) if mod is not None else None
    if layout is None:
        family_of(model)  # names what is missing
        raise ValueError(f"blocks.{layer}.{role.component}.{role.bridge} is not a linear layer.")
    on_rows = (short != "down") == (layout == "linear")
    one, everything = slice(index, index + 1), slice(None)
    return (one, everything) if on_rows else (everything, one)


def fused_qkv_rows(family: Family, part: str, head: int, n_heads: int, n_kv: int, d_head: int
                   ) -> Int[torch.Tensor, " d_head"]:
    """Output-feature indices of one head's ``part`` (``"q"``, ``"k"``, ``"v"``) in the family's fused matrix.

    ``"blocked"``: ``[Q (n_heads*d_head) | K (n_kv*d_head) | V (n_kv*d_head)]``;
    ``"interleaved"``: per head ``[q_h | k_h | v_h]`` (GPT-NeoX; no GQA). For a ``conv1d`` layout
    the indices are columns, otherwise rows.

    Raises:
        ValueError: the family has no fused q/k/v, or the part is unknown.
    """
    if part not in ("q", "k", "v"):
        raise ValueError(f"part must be 'q', 'k' or 'v', got {part!r}")
    p = "qkv".index(part)
    if family.fused_qkv_layout == "blocked":
        start = [0, n_heads * d_head, (n_heads + n_kv) * d_head][p] + head * d_head
    elif family.fused_qkv_layout == "interleaved":
        start = head * 3 * d_head + p * d_head
    else:
        raise ValueError(f"family {family.name!r} has no fused q/k/v matrix")
    return torch.arange(start, start + d_head)


def module_update_norms(before: nn.Module, after: nn.Module) -> dict[str, float]:
    """Frobenius norm of the weight update of every head ``a{L}.h{H}`` and MLP ``m{L}``.

    A head counts the slices only it owns: its rows of W_Q and its block of W_O, plus its K/V
    slices when it has its KV head to itself (no grouped-query sharing; a shared K/V slice is
    left out). An MLP counts all its projections (gate, up, down, or in and out). Biases are not
    counted. Both models must be of the same family and shape; the adapted weights are compared
    when LoRA adapters are attached.

    Returns:
        ``{"a0.h0": float, ..., "m0": float, ...}`` in layer order (heads before the layer's MLP).
    """
    pb, pa = projections(before), projections(after)
    cfg = after.cfg
    own_kv = n_kv_heads(after) == cfg.n_heads
    heads_of = ("q", "o", "k", "v") if own_kv else ("q", "o")
    fam = family_of(after)
    out: dict[str, float] = {}
    for layer in range(cfg.n_layers):
        diff = {s: (pa[f"blocks.{layer}.{s}"].module.weight - pb[f"blocks.{layer}.{s}"].module.weight
                    ).detach().float().cpu() for s in fam.projections}
        for h in range(cfg.n_heads):
            sq = sum(diff[s][head_slice(after, s, h, layer)].pow(2).sum() for s in heads_of)
            out[head_name(layer, h)] = float(torch.sqrt(sq))
        out[mlp_name(layer)] = float(torch.sqrt(sum(diff[s].pow(2).sum() for s in fam.mlp_projections)))
    return out
