"""The computational graph of a decoder-only bridge, at head and MLP granularity.

Usage::

    from recircuit.circuits.graph import Graph
    g = Graph.from_model(model)        # SmolLM2: 301 forward nodes, 481 backward nodes
    g.forward_names[:3]                # ['input', 'a0.h0', 'a0.h1']
    g.backward_names[:3]               # ['a0.h0<q>', 'a0.h1<q>', 'a0.h2<q>']
    g.edge_mask.shape                  # (n_forward, n_backward), True where an edge exists

**Forward nodes** write into the residual stream: ``input`` (the embeddings, read at
``blocks.0.hook_resid_pre``), one node per attention query head ``a{L}.h{H}`` (its per-head
output, ``blocks.L.attn.hook_result``) and ``m{L}`` (``blocks.L.hook_mlp_out``).

**Backward nodes** read the residual stream before its LayerNorm: per query head ``a{L}.h{H}<q>``
(``hook_q_input``), per KV group ``a{L}.g{G}<k>`` and ``a{L}.g{G}<v>`` (``hook_k_input`` /
``hook_v_input``), ``m{L}`` (``hook_mlp_in``) and ``logits`` (``ln_final.hook_in``).

**Grouped-query attention.** Key and value inputs are defined per KV group, because that is what
the model computes: with 9 query heads and 3 KV heads, ``a{L}.g0<k>`` is the one key input shared
by query heads 0-2 (``group = head // (n_heads // n_kv_heads)``). Splitting it per query head would
invent edges the model does not have; TL 4.3 refuses GQA at edge level for this reason. A query
head's full set of readers is its own ``<q>`` plus its group's ``<k>`` and ``<v>``
(:meth:`Graph.head_readers`), which is how node-level aggregation and module importance treat it.
Without GQA (n_kv_heads == n_heads) the groups are the heads.

**Model families.** The graph needs only what every supported bridge shows: per-head results
that, with the embeddings and the MLP outputs, sum to the residual stream, and per-head
q/k/v inputs (split by the bridge even where the weights are fused, as in GPT-2 and GPT-NeoX).
Biases and learned position embeddings are inside those writers (``input`` is the embedding
plus positions, ``blocks.0.hook_resid_pre``). With parallel attention and MLP (GPT-NeoX, GPT-J:
``cfg.parallel_attn_mlp``) a layer's MLP reads the residual before that layer's heads, so those
heads are not upstream of it. A model whose block renormalises the attention or MLP output
before adding it (Gemma-2/3 "sandwich" norms) has ``post_norm=True``: its head writers are hooked
at the pre-norm ``hook_result`` and the engine maps them through the layer's post-attention norm
(:mod:`recircuit.circuits.engine` says exactly how). Its MLP writer, ``hook_mlp_out``, is already
taken after the post-MLP norm. :func:`recircuit.circuits.engine.check_writer_sum` measures the
sum on a probe prompt and refuses any model where it fails, before any circuit work.

Forward nodes are ordered by layer (input, heads of layer 0, m0, heads of layer 1, ...), so the
writers upstream of any reader form a prefix ``[:n_upstream]``, which the attribution engine uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool

from recircuit.errors import InputError
from recircuit.nodes import head_name, kv_name, mlp_name, reader_name


@dataclass(frozen=True)
class ReaderSlot:
    """One reader hook and the backward-node indices its slots map to."""

    hook: str
    indices: tuple[int, ...]  # backward-node index of each slot (n slots: heads, groups or 1)
    n_upstream: int  # forward nodes [:n_upstream] write into this reader
    per_slot: bool  # hook tensor has a slot axis [b, p, n, d]


@dataclass
class Graph:
    """Nodes, edges and hook names of a model's head/MLP graph."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel_attn_mlp: bool = False
    post_norm: bool = False
    forward_names: list[str] = field(default_factory=list)
    backward_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        L, H, K = self.n_layers, self.n_heads, self.n_kv_heads
        fwd = ["input"]
        for layer in range(L):
            fwd += [head_name(layer, h) for h in range(H)] + [mlp_name(layer)]
        bwd = []
        for layer in range(L):
            bwd += [reader_name(head_name(layer, h), "q") for h in range(H)]
            bwd += [reader_name(kv_name(layer, g), "k") for g in range(K)]
            bwd += [reader_name(kv_name(layer, g), "v") for g in range(K)]
            bwd += [mlp_name(layer)]
        bwd.append("logits")
        self.forward_names, self.backward_names = fwd, bwd
        self.forward_index = {n: i for i, n in enumerate(fwd)}
        self.backward_index = {n: i for i, n in enumerate(bwd)}

    @classmethod
    def from_model(cls, model) -> Graph:
        """The graph of a bridge (reads ``n_layers``, ``n_heads``, ``n_key_value_heads``,
        ``parallel_attn_mlp`` and whether its blocks have a post-attention norm ``ln1_post``).

        Raises:
            InputError: the blocks re-normalise their outputs before the residual but the bridge
                shows no ``ln1_post`` on every block to map the per-head results through.
        """
        cfg = model.cfg
        blocks = getattr(model, "blocks", None)
        post = blocks is not None and len(blocks) > 0 and hasattr(blocks[0], "ln1_post")
        if getattr(cfg, "use_normalization_before_and_after", False) or post:
            if blocks is None or not all(hasattr(b, "ln1_post") for b in blocks):
                arch = getattr(cfg, "architecture", None) or getattr(cfg, "model_name", "this model")
                raise InputError(f"{arch} normalises each attention output again before adding it to the residual "
                                 "stream (post-block norms), but its bridge has no ln1_post on every block, so its "
                                 "per-head outputs cannot be mapped to what they write", field="model",
                                 fix="use a family in recircuit.models.families.FAMILIES (Gemma-2/3 are supported)")
            post = True
        kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        return cls(cfg.n_layers, cfg.n_heads, kv, bool(getattr(cfg, "parallel_attn_mlp", False)), post)

    @property
    def n_forward(self) -> int:
        """Number of forward (writer) nodes."""
        return len(self.forward_names)

    @property
    def n_backward(self) -> int:
        """Number of backward (reader) nodes."""
        return len(self.backward_names)

    @property
    def group_size(self) -> int:
        """Query heads per KV group."""
        return self.n_heads // self.n_kv_heads

    def layer_start(self, layer: int) -> int:
        """Forward index of the first head of ``layer`` (= number of writers before it)."""
        return 1 + layer * (self.n_heads + 1)

    def forward_hooks(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(hook name, forward indices)`` of every writer hook, in forward order."""
        out = [("blocks.0.hook_resid_pre", (0,))]
        for layer in range(self.n_layers):
            s = self.layer_start(layer)
            out.append((f"blocks.{layer}.attn.hook_result", tuple(range(s, s + self.n_heads))))
            out.append((f"blocks.{layer}.hook_mlp_out", (s + self.n_heads,)))
        return out

    def post_norm_hooks(self) -> list[tuple[int, str, tuple[int, ...]]]:
        """``(layer, hook on the post-attention norm's input, forward indices of its heads)`` per layer.

        Empty unless ``post_norm``. The hook (``blocks.L.ln1_post.hook_in``) fires after the
        layer's ``hook_result`` and before any reader downstream of it.
        """
        if not self.post_norm:
            return []
        return [(layer, f"blocks.{layer}.ln1_post.hook_in",
                 tuple(range(self.layer_start(layer), self.layer_start(layer) + self.n_heads)))
                for layer in range(self.n_layers)]

    def reader_slots(self) -> list[ReaderSlot]:
        """Every reader hook with its backward indices and upstream prefix."""
        H, K = self.n_heads, self.n_kv_heads
        bi = self.backward_index
        out = []
        for layer in range(self.n_layers):
            up = self.layer_start(layer)
            out.append(ReaderSlot(f"blocks.{layer}.hook_q_input", tuple(bi[reader_name(head_name(layer, h), "q")] for h in range(H)), up, True))
            out.append(ReaderSlot(f"blocks.{layer}.hook_k_input", tuple(bi[reader_name(kv_name(layer, g), "k")] for g in range(K)), up, True))
            out.append(ReaderSlot(f"blocks.{layer}.hook_v_input", tuple(bi[reader_name(kv_name(layer, g), "v")] for g in range(K)), up, True))
            mlp_up = up if self.parallel_attn_mlp else up + H  # parallel: the MLP reads resid_pre
            out.append(ReaderSlot(f"blocks.{layer}.hook_mlp_in", (bi[mlp_name(layer)],), mlp_up, False))
        out.append(ReaderSlot("ln_final.hook_in", (bi["logits"],), self.n_forward, False))
        return out

    @property
    def edge_mask(self) -> Bool[torch.Tensor, "n_forward n_backward"]:
        """True where writer ``i`` feeds reader ``j`` (upstream in the residual stream)."""
        mask = torch.zeros(self.n_forward, self.n_backward, dtype=torch.bool)
        for slot in self.reader_slots():
            mask[: slot.n_upstream, list(slot.indices)] = True
        return mask

    @property
    def n_edges(self) -> int:
        """Number of real edges."""
        return int(self.edge_mask.sum())

    def head_readers(self, layer: int, head: int) -> list[int]:
        """Backward indices a query head reads through: its ``<q>`` and its group's ``<k>``, ``<v>``."""
        g = head // self.group_size
        bi = self.backward_index
        return [bi[reader_name(head_name(layer, head), "q")], bi[reader_name(kv_name(layer, g), "k")],
                bi[reader_name(kv_name(layer, g), "v")]]

    def modules(self) -> list[str]:
        """Module names: every ``a{L}.h{H}`` and ``m{L}`` (forward names without ``input``)."""
        return self.forward_names[1:]

    def to_dict(self) -> dict:
        """JSON-able shape description."""
        d = {"n_layers": self.n_layers, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads}
        d |= {"parallel_attn_mlp": True} if self.parallel_attn_mlp else {}
        return d | ({"post_norm": True} if self.post_norm else {})
